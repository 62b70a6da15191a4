"""Shared fixtures and helpers.

``verify_fp32`` is both a plain function (``from conftest import verify_fp32``) and a fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from splitc.compiler import CompileOptions, CompileResult, compile_model
from splitc.runtimes.ort import OutputCheck, RunResult, SplitModel, compare_outputs, session, synthetic_inputs

REPO = Path(__file__).absolute().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
FP32_TOL = 1e-5


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """``../shared/models`` beside the repository; tests that need it skip when it is absent."""
    if not (SHARED_MODELS / "MANIFEST.md").is_file():
        pytest.skip(f"../shared/models not present: {SHARED_MODELS} has no MANIFEST.md")
    return SHARED_MODELS


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture
def write_model(tmp_path):
    """``write_model(proto, name="model.onnx") -> Path`` under this test's tmp_path."""
    return lambda model, name="model.onnx": save_model(model, tmp_path / name)


def reference_outputs(model_path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The original model's outputs in onnxruntime with graph optimizations off."""
    sess = session(model_path, "disable")
    return dict(zip((o.name for o in sess.get_outputs()), sess.run(None, feeds)))


@dataclass
class Verified:
    result: CompileResult
    run: RunResult
    checks: list[OutputCheck]
    reference: dict[str, np.ndarray]  # the original's outputs on the same inputs, for reuse

    @property
    def plan(self) -> dict:
        return self.result.plan


def run_split(model_path, out_dir, reference: dict[str, np.ndarray] | None = None, **options) -> Verified:
    """Compile, run the parts (optimizations off) on ``synthetic_inputs`` and compare with the original. Synthetic
    inputs are not 8-bit images: image inputs cross as tensors here (``input_codec`` raw) unless the test says otherwise
    (the camera-frame path is tested on frames in tests/test_input_codec.py)."""
    result = compile_model(model_path, out_dir, CompileOptions(**{"input_codec": "raw", **options}))
    split = SplitModel(out_dir, optimization="disable")
    feeds = synthetic_inputs(split.inputs)
    got = split.run(feeds)
    ref = reference if reference is not None else reference_outputs(model_path, feeds)
    assert set(got.outputs) == set(ref), f"outputs differ: split {sorted(got.outputs)}, original {sorted(ref)}"
    return Verified(result, got, compare_outputs(ref, got.outputs), ref)


def verify_fp32(model_path, out_dir, reference: dict[str, np.ndarray] | None = None, **options) -> Verified:
    """With an fp32 boundary the split model must reproduce the original: max |diff| <= 1e-5 per output."""
    v = run_split(model_path, out_dir, reference, boundary="fp32", **options)
    for c in v.checks:
        assert c.max_abs <= FP32_TOL, (
            f"{Path(model_path).name} {options}: output '{c.name}' differs by {c.max_abs:.3g} (|ref| max {c.max_ref:.3g})"
            f" with cut {v.plan['cut']}"
        )
    return v


@pytest.fixture(name="verify_fp32")
def _verify_fp32_fixture():
    return verify_fp32


def check_parts(out_dir: str | Path, source: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    """head.onnx / tail.onnx pass onnx.checker, keep the source's opset and IR version, and
    carry only initializers that some node of that part reads."""
    source_opset = {o.domain or "ai.onnx": o.version for o in source.opset_import}
    parts = {}
    for path in sorted(Path(out_dir).glob("*.onnx")):
        onnx.checker.check_model(str(path), full_check=True)
        part = onnx.load(str(path))
        assert part.ir_version == source.ir_version, f"{path.name}: IR version {part.ir_version}, source {source.ir_version}"
        opset = {o.domain or "ai.onnx": o.version for o in part.opset_import}
        assert opset.get("ai.onnx") == source_opset.get("ai.onnx"), f"{path.name}: opset {opset}, source {source_opset}"
        used = _consumed(part.graph)
        unused = [t.name for t in part.graph.initializer if t.name not in used]
        assert not unused, f"{path.name} carries initializers no node reads: {unused[:5]}"
        parts[path.name] = part
    return parts


def _consumed(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:  # If/Loop/Scan bodies read outer-scope values too
            subs = ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(attr.graphs)
            for sub in subs:
                names |= _consumed(sub)
    return names
