"""The split pass and the emitted artifacts: golden graphs, onnx.checker, onnxruntime numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from splitc.compiler import CompileOptions, annotate, compile_model, import_model, resolve_targets
from splitc.ir.metadata import PARTITION, PARTS
from splitc.partition.passes.partition import PartitionPass
from splitc.codegen.passes.split import SplitPass
from splitc.runtimes import SplitModel
from splitc.cost.targets import parse_link

try:
    from fixtures_text import (RESIDUAL, RESIDUAL_WEIGHTS, all_on, chain_model, model_proto, run_reference,
                               save, server_from, weights)
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import (RESIDUAL, RESIDUAL_WEIGHTS, all_on, chain_model, model_proto,
                                     run_reference, save, server_from, weights)

TARGETS = resolve_targets("rpi4,cloud")
WIRE = ["r1__q", "r1__scale", "r1__zero_point"]


def x_input(shape=(1, 3, 8, 8), seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def split_in_memory(proto: onnx.ModelProto, tmp_path, policy, boundary="int8"):
    """import -> annotate -> PartitionPass(policy) -> SplitPass, without writing anything."""
    model = import_model(save(proto, tmp_path / "model.onnx"))
    annotate(model, TARGETS)
    PartitionPass(TARGETS, parse_link("4g"), boundary, policy=policy)(model)
    SplitPass(boundary)(model)
    return model, model.graph.meta[PARTS]


def compiled(proto, tmp_path, monkeypatch, policy, boundary="int8", name="out"):
    path = save(proto, tmp_path / "model.onnx")
    # input_codec raw: these tests check the tensor boundary ops (an image input's JPEG hop: tests/test_input_codec.py)
    result = compile_model(path, tmp_path / name, CompileOptions(boundary=boundary, input_codec="raw"), policy=policy)
    parts = {p.stem: onnx.load(str(p)) for p in sorted((tmp_path / name).glob("*.onnx"))}
    for part in parts.values():
        onnx.checker.check_model(part, full_check=True)
    return result, parts


def ops(part: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in part.graph.node]


def names(values) -> list[str]:
    return [v.name for v in values]


def assert_close_int8(got: np.ndarray, ref: np.ndarray, rel: float = 0.02) -> None:
    """Within ``rel`` of the output range: uint8 per-tensor quantization of one activation."""
    assert got.shape == ref.shape and got.dtype == ref.dtype
    err = float(np.max(np.abs(got - ref)))
    assert err <= rel * float(np.max(np.abs(ref))), f"max |diff| {err:.4g} vs |ref| max {np.max(np.abs(ref)):.4g}"
    assert err > 0  # it really went through uint8


# --------------------------------------------------------------------------- golden graphs

def test_chain_int8_golden(tmp_path, monkeypatch):
    result, parts = compiled(chain_model(), tmp_path, monkeypatch, server_from("conv2"))
    head, tail = parts["head"], parts["tail"]

    assert ops(head) == ["Conv", "Relu", "DynamicQuantizeLinear"]
    assert [n.name for n in head.graph.node] == ["conv1", "relu1", "r1__quantize"]
    assert names(head.graph.input) == ["x"]
    assert names(head.graph.output) == WIRE
    out_types = [(o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in head.graph.output]
    assert out_types == [(onnx.TensorProto.UINT8, [1, 4, 8, 8]), (onnx.TensorProto.FLOAT, []), (onnx.TensorProto.UINT8, [])]
    assert sorted(names(head.graph.initializer)) == ["b1", "w1"]

    assert ops(tail) == ["DequantizeLinear", "Conv", "Relu", "Flatten", "Gemm"]
    assert names(tail.graph.input) == WIRE
    assert names(tail.graph.output) == ["y"]
    assert sorted(names(tail.graph.initializer)) == ["b2", "bg", "w2", "wg"]
    assert tail.graph.node[1].input[0] == "r1"  # conv2 reads the dequantized r1 under its own name

    for part in (head, tail):
        assert part.ir_version == 8
        assert [(o.domain, o.version) for o in part.opset_import] == [("", 17)]

    # the weights themselves are carried over unchanged
    src = {t.name: onnx.numpy_helper.to_array(t) for t in chain_model().graph.initializer}
    for part in (head, tail):
        for t in part.graph.initializer:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), src[t.name])

    plan = result.plan
    assert plan["cut"] == ["r1"]
    assert plan["artifacts"] == {"rpi4": "head.onnx", "cloud": "tail.onnx"}
    boundary = {(b["tensor"], b["from"], b["to"]): b for b in plan["boundary"]}
    assert set(boundary) == {("r1", "rpi4", "cloud"), ("y", "cloud", "rpi4")}
    assert boundary[("r1", "rpi4", "cloud")]["codec"] == "int8-dynamic+zstd"
    assert [w["name"] for w in boundary[("r1", "rpi4", "cloud")]["wire"]] == WIRE
    assert boundary[("y", "cloud", "rpi4")]["codec"] == "raw+zstd"  # results come back losslessly
    assert boundary[("y", "cloud", "rpi4")]["is_output"] is True


def test_chain_int8_runs_close_to_the_original(tmp_path, monkeypatch):
    proto = chain_model()
    compiled(proto, tmp_path, monkeypatch, server_from("conv2"))
    x = x_input()
    ref = run_reference(proto, {"x": x})["y"]
    run = SplitModel(tmp_path / "out").run({"x": x})
    assert_close_int8(run.outputs["y"], ref)
    assert 0 < run.bytes_up < run.raw_up == 1024  # uint8 + zstd beats 1 KiB of fp32
    # the parts run by hand give the same answer as the runtime
    head = run_reference(tmp_path / "out" / "head.onnx", {"x": x})
    assert head["r1__q"].dtype == np.uint8 and head["r1__scale"].shape == () and head["r1__zero_point"].shape == ()
    tail = run_reference(tmp_path / "out" / "tail.onnx", head)
    np.testing.assert_array_equal(tail["y"], run.outputs["y"])


def test_chain_fp32_boundary_is_exact(tmp_path, monkeypatch):
    proto = chain_model()
    result, parts = compiled(proto, tmp_path, monkeypatch, server_from("relu2"), boundary="fp32")
    head, tail = parts["head"], parts["tail"]
    assert ops(head) == ["Conv", "Relu", "Conv"]
    assert names(head.graph.output) == ["c2"]
    assert ops(tail) == ["Relu", "Flatten", "Gemm"]
    assert names(tail.graph.input) == ["c2"]
    assert result.plan["boundary"][0]["codec"] == "raw+zstd"
    for seed in range(3):
        x = x_input(seed=seed)
        for level in ("disable", "all"):
            got = SplitModel(tmp_path / "out", optimization=level).run({"x": x}).outputs["y"]
            np.testing.assert_array_equal(got, run_reference(proto, {"x": x}, level)["y"])


def test_split_in_memory_matches_the_partition(tmp_path):
    model, split = split_in_memory(chain_model(), tmp_path, server_from("relu2"))
    placement = model.graph.meta[PARTITION].solution.placement
    assert placement == (0, 0, 0, 1, 1, 1)
    assert split.outputs == ("y",)
    assert [(c.tensor, c.src, c.dst, c.codec, c.is_output) for c in split.crossings] == [
        ("c2", 0, 1, "int8-dynamic+zstd", False),
        ("y", 1, 0, "raw+zstd", True),
    ]
    c2 = split.crossings[0]
    assert [(w.name, w.dtype, w.shape) for w in c2.wire] == [
        ("c2__q", "uint8", (1, 4, 8, 8)), ("c2__scale", "float32", ()), ("c2__zero_point", "uint8", ())
    ]
    assert c2.raw_bytes == 1024 and c2.encoded_bytes == 256 + 5
    # the source model is not modified by the split
    assert [n.name for n in model.graph] == ["conv1", "relu1", "conv2", "relu2", "flat", "fc"]
    assert set(model.graph.initializers) == {"w1", "b1", "w2", "b2", "wg", "bg"}
    for part in split.parts.values():
        assert isinstance(part, ir.Model)


# --------------------------------------------------------------------------- old opsets and IR versions

def test_opset9_uses_composite_quantization(tmp_path, monkeypatch):
    proto = chain_model(ir=8, opset=9)
    _, parts = compiled(proto, tmp_path, monkeypatch, server_from("conv2"))
    head, tail = parts["head"], parts["tail"]
    for part in (head, tail):
        assert not {"DynamicQuantizeLinear", "DequantizeLinear", "QuantizeLinear"} & set(ops(part))
        assert [(o.domain, o.version) for o in part.opset_import] == [("", 9)]
    assert ops(head)[:2] == ["Conv", "Relu"] and ops(head)[-2:] == ["Cast", "Cast"]
    assert names(head.graph.output) == WIRE
    assert ops(tail) == ["Cast", "Cast", "Sub", "Mul", "Conv", "Relu", "Flatten", "Gemm"]
    x = x_input()
    ref = run_reference(proto, {"x": x})["y"]
    got = SplitModel(tmp_path / "out").run({"x": x}).outputs["y"]
    assert_close_int8(got, ref)
    # the composite computes DynamicQuantizeLinear's arithmetic (up to rounding ties)
    _, _ = compiled(chain_model(ir=8, opset=17), tmp_path, monkeypatch, server_from("conv2"), name="out17")
    got17 = SplitModel(tmp_path / "out17").run({"x": x}).outputs["y"]
    head9 = run_reference(tmp_path / "out" / "head.onnx", {"x": x})
    head17 = run_reference(tmp_path / "out17" / "head.onnx", {"x": x})
    assert head9["r1__scale"] == pytest.approx(float(head17["r1__scale"]), rel=1e-6)
    assert head9["r1__zero_point"] == head17["r1__zero_point"]
    assert np.max(np.abs(head9["r1__q"].astype(int) - head17["r1__q"].astype(int))) <= 1
    np.testing.assert_allclose(got, got17, atol=1e-2 * float(np.max(np.abs(ref))))


def test_ir_version3_parts_list_initializers_as_inputs(tmp_path, monkeypatch):
    proto = chain_model(ir=3, opset=8)
    assert {i.name for i in proto.graph.input} >= {t.name for t in proto.graph.initializer}
    result, parts = compiled(proto, tmp_path, monkeypatch, server_from("conv2"))
    head, tail = parts["head"], parts["tail"]
    for part in (head, tail):
        assert part.ir_version == 3
        inits = {t.name for t in part.graph.initializer}
        assert inits and inits <= set(names(part.graph.input))
    assert names(head.graph.input)[0] == "x" and set(names(head.graph.input)) == {"x", "w1", "b1"}
    assert set(names(tail.graph.input)) == set(WIRE) | {"w2", "b2", "wg", "bg"}
    # the plan's model inputs are the real ones only
    assert [i["name"] for i in result.plan["model"]["inputs"]] == ["x"]
    x = x_input()
    assert_close_int8(SplitModel(tmp_path / "out").run({"x": x}).outputs["y"], run_reference(proto, {"x": x})["y"])


# --------------------------------------------------------------------------- boundary shape

def test_tensor_read_by_two_server_nodes_crosses_once(tmp_path, monkeypatch):
    proto = model_proto(RESIDUAL, weights(RESIDUAL_WEIGHTS))
    result, parts = compiled(proto, tmp_path, monkeypatch, server_from("conv2"))
    up = [b for b in result.plan["boundary"] if b["from"] == "rpi4"]
    assert [b["tensor"] for b in up] == ["r1"]
    tail = parts["tail"]
    assert names(tail.graph.input) == WIRE
    assert ops(tail).count("DequantizeLinear") == 1
    readers = sorted(n.name for n in tail.graph.node if "r1" in n.input)
    assert readers == ["add", "conv2"]
    cg = result.partition.cost_graph
    r1 = next(t for t in cg.tensors if t.name == "r1")
    assert [cg.nodes[c].name for c in r1.consumers] == ["conv2", "add"]
    breakdown = result.partition.solution.cost
    y = next(t for t in cg.tensors if t.name == "y")
    framing = cg.links[0].message_s("up") + cg.links[0].message_s("down")  # one message each way, however many tensors
    assert breakdown.transfer_s == pytest.approx(cg.send_s(r1, 0, 1) + cg.send_s(y, 1, 0) + framing, rel=1e-12)
    x = x_input((1, 4, 6, 6))
    assert_close_int8(SplitModel(tmp_path / "out").run({"x": x}).outputs["y"], run_reference(proto, {"x": x})["y"])


def test_replicated_constants_are_copied_into_each_part(tmp_path, monkeypatch):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    rep (float[2,6] x) => (float[2,6] y) {
      [flat_shape] s = Constant <value=int64[2] {3, 4}> ()
      [back_shape] b = Constant <value=int64[2] {2, 6}> ()
      [to34] r = Reshape (x, s)
      [act] a = Relu (r)
      [to34b] r2 = Reshape (a, s)
      [neg] n = Neg (r2)
      [back] y = Reshape (n, b)
    }
    """
    proto = model_proto(text)
    result, parts = compiled(proto, tmp_path, monkeypatch, server_from("to34b"), boundary="fp32")
    head, tail = parts["head"], parts["tail"]
    assert [n.name for n in head.graph.node] == ["flat_shape", "to34", "act"]
    assert [n.name for n in tail.graph.node] == ["flat_shape", "back_shape", "to34b", "neg", "back"]
    assert result.plan["cut"] == ["a"]  # the shape constant is recomputed, not sent
    x = x_input((2, 6))
    np.testing.assert_array_equal(SplitModel(tmp_path / "out").run({"x": x}).outputs["y"], run_reference(proto, {"x": x})["y"])


# --------------------------------------------------------------------------- single-tier plans

@pytest.mark.parametrize("boundary", ["int8", "fp32"])
def test_device_only_plan(tmp_path, monkeypatch, boundary):
    proto = chain_model()
    result, parts = compiled(proto, tmp_path, monkeypatch, all_on(0), boundary=boundary)
    assert list(parts) == ["head"]
    assert result.plan["artifacts"] == {"rpi4": "head.onnx"}
    assert result.plan["boundary"] == [] and result.plan["cut"] == []
    assert ops(parts["head"]) == ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"]
    assert len(parts["head"].graph.initializer) == 6
    x = x_input()
    run = SplitModel(tmp_path / "out").run({"x": x})
    assert run.bytes_up == run.bytes_down == 0
    np.testing.assert_array_equal(run.outputs["y"], run_reference(proto, {"x": x})["y"])


@pytest.mark.parametrize("boundary", ["int8", "fp32"])
def test_cloud_only_plan(tmp_path, monkeypatch, boundary):
    proto = chain_model()
    result, parts = compiled(proto, tmp_path, monkeypatch, all_on(1), boundary=boundary)
    assert result.plan["cut"] == ["x"]
    assert result.plan["predicted"]["device_nodes"] == 0
    tail = parts["tail"]
    assert ops(tail)[-6:] == ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"]
    assert len(tail.graph.initializer) == 6
    if boundary == "int8":
        assert ops(parts["head"]) == ["DynamicQuantizeLinear"]
        assert names(parts["head"].graph.output) == ["x__q", "x__scale", "x__zero_point"]
        assert ops(tail)[0] == "DequantizeLinear"
        assert parts["head"].graph.initializer == []
    x = x_input()
    ref = run_reference(proto, {"x": x})["y"]
    run = SplitModel(tmp_path / "out").run({"x": x})
    assert run.bytes_up > 0 and run.bytes_down > 0
    if boundary == "int8":
        assert_close_int8(run.outputs["y"], ref, rel=0.05)
    else:
        np.testing.assert_array_equal(run.outputs["y"], ref)


def test_default_policy_on_a_fast_link_is_runnable(tmp_path):
    # no forced policy: the ILP decides; whatever it decides must run and match in fp32
    proto = chain_model()
    path = save(proto, tmp_path / "model.onnx")
    result = compile_model(path, tmp_path / "out", CompileOptions(boundary="fp32", link="up=10Gbps,down=10Gbps,rtt=0ms"))
    assert result.partition.solution.status == "optimal"
    base = result.partition.baselines
    assert result.partition.solution.cost.total_s <= min(b.cost.total_s for b in base.values()) * (1 + 1e-9)
    x = x_input()
    np.testing.assert_array_equal(SplitModel(tmp_path / "out").run({"x": x}).outputs["y"], run_reference(proto, {"x": x})["y"])
