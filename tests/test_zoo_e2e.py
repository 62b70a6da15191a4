"""End to end on the generated zoo: compile for rpi4,cloud on every link, run the parts, compare.

fp32 boundaries must reproduce the original (max |diff| <= 1e-5); int8 boundaries keep the
outputs' cosine similarity >= 0.99. The emitted parts are checked as ONNX files, and the chosen
plan is never worse than a baseline. Profiles that make one op class prohibitively slow on the
device force mid-graph splits in every model, so the boundary code is exercised on all of them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import check_parts, reference_outputs, run_split, save_model, verify_fp32

from splitc.tools import zoo
from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcError
from splitc.runtimes.ort import session, synthetic_inputs

LINKS = {"3g": "3g", "4g": "4g", "wifi": "wifi", "fast": "up=500Mbps,down=1Gbps,rtt=1ms"}
SHAPES = {"transformer_block": {"x": (1, 64, 64)}}
# On the fast link these models leave the device: the input (or, for bottlenet, the bottleneck)
# costs less to send than the device takes to compute; the small ones stay (2 RTTs > their compute).
OFFLOADED_ON_FAST_LINK = {"bottlenet", "resnet18", "mobilenet_v2", "residual_block"}
# To force a mid-graph split: the op class the device profile makes prohibitively slow (those
# nodes must run in the cloud), and for the transformer also one the cloud profile makes slow.
# (A transformer block cut anywhere sends x for the residual plus more, so with a normal cloud
# sending x alone always wins; a cloud slow at LayerNorm makes running the first LN on the device pay.)
FORCING = {"transformer_block": ("matmul", "norm"), "detector_heads": ("reduce", None)}
COSINE_MIN = 0.99


class Zoo:
    def __init__(self, root: Path):
        self.root = root
        self.protos: dict[str, onnx.ModelProto] = {}
        self.refs: dict[str, dict] = {}

    def path(self, name: str) -> Path:
        if name not in self.protos:
            self.protos[name] = zoo.MODELS[name]()
            save_model(self.protos[name], self.root / f"{name}.onnx")
        return self.root / f"{name}.onnx"

    def reference(self, name: str, feeds) -> dict:
        if name not in self.refs:
            self.refs[name] = reference_outputs(self.path(name), feeds)
        return self.refs[name]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def forcing_profiles(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Built-in profiles with one op class at 1 kFLOP/s (device) or 100 kFLOP/s (cloud)."""
    root = tmp_path_factory.mktemp("profiles")
    out = {}
    for base, cls, rate in (("rpi4", "matmul", "1.0e3"), ("rpi4", "reduce", "1.0e3"), ("cloud", "norm", "1.0e5")):
        text = (Path(zoo.__file__).parents[1] / "profiles" / f"{base}.toml").read_text()
        slow = re.sub(rf"(?m)^{cls} = .*$", f"{cls} = {rate}", text)
        slow = slow.replace(f'name = "{base}"', f'name = "{base}-slow-{cls}"')
        assert slow.count("-slow-") == 1 and f"{cls} = {rate}" in slow
        out[base, cls] = root / f"{base}-slow-{cls}.toml"
        out[base, cls].write_text(slow)
    return out


def _forcing_target(profiles, name: str) -> tuple[str, str]:
    device_cls, cloud_cls = FORCING.get(name, ("matmul", None))
    cloud = str(profiles["cloud", cloud_cls]) if cloud_cls else "cloud"
    return f"{profiles['rpi4', device_cls]},{cloud}", device_cls


def _feeds_for(model: Path | bytes, shapes: dict) -> dict:
    """The inputs SplitModel will be fed (``synthetic_inputs`` of the fixed shapes): zoo inputs are float."""
    sess = session(model, "disable")
    return synthetic_inputs([{"name": i.name, "dtype": "float32", "shape": list(shapes.get(i.name, i.shape))}
                             for i in sess.get_inputs()])


def _assert_not_worse_than_baselines(plan: dict) -> None:
    total = plan["predicted"]["total_s"]
    for name, base in plan["baselines"].items():
        assert total <= base["total_s"] * (1 + 1e-9) + 1e-12, f"plan {total:.6f}s is worse than {name} {base['total_s']:.6f}s"


def _assert_int8_close(verified, label: str) -> None:
    for c in verified.checks:
        assert np.isfinite(c.cosine) and c.cosine >= COSINE_MIN, f"{label}: '{c.name}' cosine {c.cosine:.5f} (int8)"


# -- the builders ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_builder_is_valid_fast_and_seeded(name):
    t0 = time.perf_counter()
    model = zoo.MODELS[name]()
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"{name} took {elapsed:.2f}s to build"
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ByteSize() < 80e6
    assert zoo.MODELS[name]().SerializeToString() == model.SerializeToString(), "same seed, same model"
    other = zoo.MODELS[name](seed=1)
    assert [t.raw_data for t in other.graph.initializer] != [t.raw_data for t in model.graph.initializer]
    # activations stay sane: finite outputs of order one on standard-normal inputs
    blob = model.SerializeToString()
    for out in session(blob, "disable").run(None, _feeds_for(blob, SHAPES.get(name, {}))):
        assert np.all(np.isfinite(out))
        assert 1e-3 < float(np.std(out)) < 100.0, f"{name}: output std {np.std(out):.3g}"


def test_reference_architectures_have_their_published_size():
    def params(m):
        return sum(int(np.prod(t.dims)) for t in m.graph.initializer if len(t.dims) > 1 or t.dims[0] > 8)

    def convs(m):
        return sum(n.op_type == "Conv" for n in m.graph.node)

    r18, mb2 = zoo.resnet18(), zoo.mobilenet_v2()
    # torchvision: resnet18 11.69 M parameters (with BN), 20 convs + fc; mobilenet_v2 3.50 M, 52 convs + fc
    assert 11.6e6 < params(r18) < 11.8e6 and convs(r18) == 20
    assert 3.4e6 < params(mb2) < 3.6e6 and convs(mb2) == 52
    assert sum(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in mb2.graph.node) == 17


def test_transformer_block_needs_input_shape_for_its_shape_arithmetic(tmp_path, models):
    model = zoo.transformer_block()
    ops = [n.op_type for n in model.graph.node]
    for op in ("Shape", "Gather", "Concat", "Reshape", "MatMul", "Softmax", "LayerNormalization"):
        assert op in ops
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", 64]
    with pytest.raises(SplitcError, match="--input-shape"):
        compile_model(models.path("transformer_block"), None, CompileOptions())


# -- every model, every link ---------------------------------------------------------------------


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_zoo_model_compiles_and_reproduces(tmp_path, models, name, link):
    path = models.path(name)
    shapes = SHAPES.get(name, {})
    ref = models.reference(name, _feeds_for(path, shapes))
    opts = {"target": "rpi4,cloud", "link": LINKS[link], "input_shapes": shapes}

    fp32 = verify_fp32(path, tmp_path / "fp32", reference=ref, **opts)
    _assert_not_worse_than_baselines(fp32.plan)
    check_parts(tmp_path / "fp32", models.protos[name])

    int8 = run_split(path, tmp_path / "int8", reference=ref, boundary="int8", **opts)
    _assert_int8_close(int8, f"{name} {link}")
    _assert_not_worse_than_baselines(int8.plan)
    parts = check_parts(tmp_path / "int8", models.protos[name])

    if link == "fast" and name in OFFLOADED_ON_FAST_LINK:
        for v, out in ((fp32, "fp32"), (int8, "int8")):
            assert v.plan["boundary"], f"{name}: fast link should move work off the device"
            assert (tmp_path / out / "head.onnx").is_file() and (tmp_path / out / "tail.onnx").is_file()
            assert v.plan["predicted"]["server_nodes"] > 0 and v.run.bytes_up > 0
    if int8.plan["boundary"]:
        assert set(parts) == {"head.onnx", "tail.onnx"}


def test_bottlenet_splits_at_the_bottleneck_over_4g(tmp_path, models):
    path = models.path("bottlenet")
    plans = {}
    for link in ("3g", "4g", "wifi", "fast"):
        plans[link] = compile_model(path, tmp_path / link, CompileOptions(link=LINKS[link])).plan
    p = plans["4g"]
    assert p["cut"] == ["bottleneck"], p["cut"]
    assert p["predicted"]["device_nodes"] > 0 and p["predicted"]["server_nodes"] > 0
    device, cloud = p["baselines"]["device_only"]["total_s"], p["baselines"]["cloud_only"]["total_s"]
    # cloud-only sends the camera frame as JPEG (q90), not the int8 tensor: the bottleneck still wins, by less
    assert p["predicted"]["total_s"] < 0.9 * device and p["predicted"]["total_s"] < 0.95 * cloud
    up = [b for b in p["boundary"] if b["from"] == "rpi4"]
    assert [b["tensor"] for b in up] == ["bottleneck"] and up[0]["raw_bytes"] == 12 * 28 * 28 * 4
    for link in ("wifi", "fast"):
        assert plans[link]["cut"] == ["bottleneck"], (link, plans[link]["cut"])
    assert plans["3g"]["boundary"] == [], "over 3G even the bottleneck is not worth sending"


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_forced_mid_graph_split(tmp_path, models, forcing_profiles, name):
    target, cls = _forcing_target(forcing_profiles, name)
    path = models.path(name)
    shapes = SHAPES.get(name, {})
    ref = models.reference(name, _feeds_for(path, shapes))
    opts = {"target": target, "link": "3g", "input_shapes": shapes}
    fp32 = verify_fp32(path, tmp_path / "fp32", reference=ref, **opts)
    int8 = run_split(path, tmp_path / "int8", reference=ref, boundary="int8", **opts)
    _assert_int8_close(int8, f"{name} forced split")
    for v, out in ((fp32, "fp32"), (int8, "int8")):
        pred = v.plan["predicted"]
        assert pred["device_nodes"] > 0 and pred["server_nodes"] > 0, f"{name}: expected a mid-graph split, got {pred}"
        assert v.plan["cut"] and v.run.bytes_up > 0
        _assert_not_worse_than_baselines(v.plan)
        assert set(check_parts(tmp_path / out, models.protos[name])) == {"head.onnx", "tail.onnx"}
        slow = {n["name"] for n in v.plan["nodes"] if n["op_class"] == cls and n["target"] is not None}
        server = v.plan["targets"][1]["name"]
        assert slow and all(n["target"] == server for n in v.plan["nodes"] if n["name"] in slow)


def test_transformer_shape_arithmetic_at_another_shape(tmp_path, models, forcing_profiles):
    path = models.path("transformer_block")
    shapes = {"x": (2, 24, 64)}
    target, _ = _forcing_target(forcing_profiles, "transformer_block")
    v = verify_fp32(path, tmp_path / "out", target=target, link="3g", input_shapes=shapes)
    assert v.plan["predicted"]["device_nodes"] > 0 and v.plan["predicted"]["server_nodes"] > 0
    assert v.plan["model"]["inputs"] == [{"name": "x", "dtype": "float", "shape": [2, 24, 64]}]
    assert next(iter(v.run.outputs.values())).shape == (2, 24, 64)
    for part in check_parts(tmp_path / "out", models.protos["transformer_block"]).values():
        # the head split's shape arithmetic was resolved at compile time: no part computes shapes
        assert "Shape" not in {n.op_type for n in part.graph.node}


@pytest.mark.parametrize(
    ("name", "opset", "ir_version"), [("chain", 9, 3), ("bottlenet", 9, 3), ("bottlenet", 10, 5), ("residual_block", 11, 6)]
)
def test_older_opsets_and_ir_versions_are_kept(tmp_path, forcing_profiles, name, opset, ir_version):
    """The int8 boundary is built from basic ops below opset 11 (10 for dequantize); parts keep the source versions."""
    source = zoo.MODELS[name](opset=opset, ir_version=ir_version)
    if ir_version < 4:
        assert {t.name for t in source.graph.initializer} <= {i.name for i in source.graph.input}
    path = save_model(source, tmp_path / f"{name}.onnx")
    target = "rpi4,cloud" if name == "bottlenet" else _forcing_target(forcing_profiles, name)[0]
    opts = {"target": target, "link": "wifi" if name == "bottlenet" else "3g"}
    fp32 = verify_fp32(path, tmp_path / "fp32", **opts)
    int8 = run_split(path, tmp_path / "int8", reference=fp32.reference, boundary="int8", **opts)
    _assert_int8_close(int8, f"{name} opset {opset}")
    for v, out in ((fp32, "fp32"), (int8, "int8")):
        assert v.plan["predicted"]["device_nodes"] > 0 and v.plan["predicted"]["server_nodes"] > 0
        assert v.plan["model"]["opset"] == opset and v.plan["model"]["ir_version"] == ir_version
        parts = check_parts(tmp_path / out, source)
        assert set(parts) == {"head.onnx", "tail.onnx"}
    ops = {n.op_type for n in parts["head.onnx"].graph.node}
    assert ("DynamicQuantizeLinear" in ops) == (opset >= 11)
    tail_ops = {n.op_type for n in parts["tail.onnx"].graph.node}
    assert ("DequantizeLinear" in tail_ops) == (opset >= 10)
