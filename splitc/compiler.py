"""The compile pipeline: import, annotate, partition, split, emit. And its Python API."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedNodesPass, TopologicalSortPass

from splitc.errors import SplitcError
from splitc.frontend import load_proto, sha256_file, to_ir
from splitc.passes.fix_input_shapes import FixInputShapesPass
from splitc.passes.flops import FlopsPass
from splitc.passes.infer_shapes import InferShapesPass
from splitc.passes.latency import LatencyPass
from splitc.passes.materialize_shapes import MaterializeShapesPass
from splitc.passes.partition import PARTITION, PartitionPass, PartitionResult
from splitc.passes.replicable import ReplicablePass
from splitc.passes.split import PARTS, SplitPass, SplitResult
from splitc.passes.tensor_bytes import TensorBytesPass
from splitc.targets import DeviceProfile, Link, load_target, parse_link

BOUNDARIES = ("int8", "fp32")


@dataclass(frozen=True)
class CompileOptions:
    target: str = "rpi4,cloud"
    link: str = "4g"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    boundary: str = "int8"
    objective: str = "latency"


def resolve_targets(spec: str) -> tuple[DeviceProfile, ...]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) != 2:
        raise SplitcError(f"--target '{spec}': give two tiers, device first, e.g. --target rpi4,cloud")
    if names[0] == names[1]:
        raise SplitcError(f"--target '{spec}': the two tiers must differ")
    return tuple(load_target(n) for n in names)


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.Model:
    """Run a pipeline; a user-facing error raised inside a pass surfaces as itself, not wrapped."""
    try:
        return ir.passes.PassManager(passes)(model).model
    except ir.passes.PassError as e:
        cause = e
        while cause.__cause__ is not None and isinstance(cause, ir.passes.PassError):
            cause = cause.__cause__
        if isinstance(cause, SplitcError):
            raise cause from None
        raise


def import_model(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ir.Model:
    """Load, fix input shapes, sort, name, infer shapes, materialize shape arithmetic."""
    path = Path(path)
    model = to_ir(load_proto(path), path.name)
    passes = [
        FixInputShapesPass(dict(input_shapes or {}), path.name),
        TopologicalSortPass(),
        NameFixPass(),
        InferShapesPass(path.name),
        MaterializeShapesPass(),
        RemoveUnusedNodesPass(),
        ReplicablePass(),
        TensorBytesPass(path.name),
    ]
    return run_passes(passes, model)


def annotate(model: ir.Model, targets: tuple[DeviceProfile, ...]) -> ir.Model:
    return run_passes([FlopsPass(), LatencyPass(targets)], model)


@dataclass
class CompileResult:
    model: ir.Model
    plan: dict
    output_dir: Path | None
    partition: PartitionResult
    split: SplitResult


def compile_model(
    model_path: str | Path,
    output_dir: str | Path | None,
    options: CompileOptions = CompileOptions(),
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CompileResult:
    """Compile ``model_path`` for ``options.target`` and write the artifacts to ``output_dir``.

    ``output_dir`` is written whole or not at all. ``None`` plans without writing.
    """
    from splitc.plan import build_plan

    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    if options.boundary not in BOUNDARIES:
        raise SplitcError(f"--boundary '{options.boundary}': choose one of {', '.join(BOUNDARIES)}")
    if options.objective != "latency":
        raise SplitcError(f"--objective '{options.objective}': only 'latency' is available")
    targets = resolve_targets(options.target)
    link = parse_link(options.link)
    model_path = Path(model_path)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and out.exists() and not force:
        raise SplitcError(f"{out}: already exists; choose another -o directory or pass --force to replace it")
    step("import")
    model = import_model(model_path, options.input_shapes)
    step("annotate")
    annotate(model, targets)
    step("partition")
    run_passes([PartitionPass(targets, link, options.boundary)], model)
    step("split")
    run_passes([SplitPass(options.boundary)], model)
    partition: PartitionResult = model.graph.meta[PARTITION]
    split: SplitResult = model.graph.meta[PARTS]
    artifacts = {targets[t].name: f"{'head' if t == 0 else 'tail'}.onnx" for t in split.parts}
    plan = build_plan(model, model_path, sha256_file(model_path), targets, link, options, partition, split, artifacts)
    plan["compile_s"] = round(time.perf_counter() - t0, 4)
    if out is not None:
        step("write")
        _write_atomically(out, split, artifacts, targets, plan, force)
    return CompileResult(model, plan, out, partition, split)


def _write_atomically(out: Path, split: SplitResult, artifacts, targets, plan: dict, force: bool) -> None:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for tier, part in split.parts.items():
            path = tmp / artifacts[targets[tier].name]
            proto = ir.to_proto(part)
            onnx.save_model(proto, str(path))
            try:
                onnx.checker.check_model(str(path))
            except onnx.checker.ValidationError as e:
                raise SplitcError(f"internal error: emitted {path.name} fails onnx.checker: {str(e).splitlines()[0]}") from None
        (tmp / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        if out.exists():
            if not force:
                raise SplitcError(f"{out}: already exists; pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
