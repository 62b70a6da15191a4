"""The split, one step at a time, with golden graphs (ONNX text in, ONNX text expected):

extract_part (a stage's nodes, its interface as inputs and outputs), insert_boundary (the wire ops at a part's
edges), then SplitPass as a whole (the parts, pruned). The stage interfaces themselves: test_split_interface.py;
the emitted artifacts and their numerics: test_split.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest

from splitc.codegen.crossings import Crossing, insert_boundary
from splitc.codegen.extract import extract_part, finish_part
from splitc.codegen.interface import StageInterface, Transfer
from splitc.codegen.passes.boundary import WireTensor, wire_names
from splitc.codegen.passes.split import SplitPass
from splitc.compiler import CompileOptions, compile_model, resolve_targets
from splitc.cost.passes.flops import FlopsPass
from splitc.cost.passes.latency import LatencyPass
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.cost.quantizers import CodecSpec, TensorCodec
from splitc.cost.targets import parse_link
from splitc.frontend.passes.replicable import ReplicablePass
from splitc.ir import metadata as ann
from splitc.partition.passes.partition import PartitionPass
from splitc.partition.problem import fixed
from splitc.runtimes import SplitModel

try:
    from fixtures_text import model_proto, run_reference, save
    from golden import assert_model, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto, run_reference, save
    from tests.golden import assert_model, parse

TARGETS = resolve_targets("rpi4,cloud")
HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
# a residual: the server reads a twice (mul's input and the Add); the Reshape target is a constant (replicable)
SMALL = HEADER + """
small (float[1,4] x) => (float[1,4] y) <float[1,4] a, float[1,4] m, float[1,4] r, float[1,4] n> {
  [shape] s = Constant <value=int64[2] {1, 4}> ()
  [relu] a = Relu (x)
  [mul] m = Mul (a, w)
  [resh] r = Reshape (m, s)
  [neg] n = Neg (r)
  [add] y = Add (n, a)
}
"""
W = {"w": np.arange(4, dtype=np.float32)}
DEVICE = StageInterface(0, 0, ("relu", "mul"), ("x",), (), (), (), (), (Transfer("a", 0), Transfer("m", 1)))
SERVER = StageInterface(1, 1, ("resh", "neg", "add"), (), (Transfer("a", 0), Transfer("m", 1)), (), (), (),
                        (Transfer("y", 2),))


def partitioned(text: str = SMALL, placement=(0, 0, 1, 1, 1), boundary: str = "int8") -> ir.Model:
    """The ONNX text with what SplitPass reads: marks, sizes, costs, and the PartitionResult of ``placement``."""
    model = parse(text, W)
    for p in (ReplicablePass(), TensorBytesPass("small.onnx"), FlopsPass(), LatencyPass(TARGETS),
              PartitionPass(TARGETS, parse_link("4g"), boundary, policy=fixed(lambda cg: list(placement)))):
        p(model)
    return model


def dynamic(tensor: str, src: int, hop: int) -> Crossing:
    wire = tuple(WireTensor(n, d, s) for n, d, s in zip(wire_names(tensor), ("uint8", "float32", "uint8"), ((1, 4), (), ())))
    return Crossing(tensor, src, 1 - src, 0, src, 16, 9, "int8-dynamic+zstd", wire, False)


def raw(tensor: str, src: int, is_output: bool = False) -> Crossing:
    return Crossing(tensor, src, 1 - src, 0, src, 16, 16, "raw+zstd", (WireTensor(tensor, "float32", (1, 4)),), is_output)


# --------------------------------------------------------------------------- extract_part

EXTRACTED_DEVICE = HEADER + """
small (float[1,4] x) => () <float[1,4] a, float[1,4] m> {
  [relu] a = Relu (x)
  [mul] m = Mul (a, w)
}
"""
# the constant is copied in; a and m become inputs under their own names; nothing is pruned yet (w stays)
EXTRACTED_SERVER = HEADER + """
small (float[1,4] a, float[1,4] m) => () <float[1,4] r, float[1,4] n, float[1,4] y> {
  [shape] s = Constant <value=int64[2] {1, 4}> ()
  [resh] r = Reshape (m, s)
  [neg] n = Neg (r)
  [add] y = Add (n, a)
}
"""


def test_extract_golden_device_stage():
    assert_model(extract_part(partitioned(), DEVICE), EXTRACTED_DEVICE, W)


def test_extract_golden_server_stage():
    assert_model(extract_part(partitioned(), SERVER), EXTRACTED_SERVER, W)


def test_extract_leaves_the_source_model_alone():
    model = partitioned()
    extract_part(model, SERVER)
    assert_model(model, SMALL, W)


def test_extract_outputs_results_then_kept_tensors():
    # a return flow: the device runs relu and add, keeps a for its second stage, which returns y
    iface = StageInterface(2, 0, ("add",), (), (Transfer("n", 2),), ("a",), ("y",), (), ())
    part = extract_part(partitioned(), iface)
    assert [v.name for v in part.graph.inputs] == ["n", "a"] and [v.name for v in part.graph.outputs] == ["y"]
    first = extract_part(partitioned(), StageInterface(0, 0, ("relu", "mul"), ("x",), (), (), (), ("a",), ()))
    assert [v.name for v in first.graph.outputs] == ["a"]


# --------------------------------------------------------------------------- insert_boundary

QUANTIZED_DEVICE = HEADER + """
small (float[1,4] x) => (uint8[1,4] a__q, float a__scale, uint8 a__zero_point, uint8[1,4] m__q, float m__scale, uint8 m__zero_point)
      <float[1,4] a, float[1,4] m> {
  [relu] a = Relu (x)
  [mul] m = Mul (a, w)
  [a__quantize] a__q, a__scale, a__zero_point = DynamicQuantizeLinear (a)
  [m__quantize] m__q, m__scale, m__zero_point = DynamicQuantizeLinear (m)
}
"""
DEQUANTIZED_SERVER = HEADER + """
small (uint8[1,4] a__q, float a__scale, uint8 a__zero_point, uint8[1,4] m__q, float m__scale, uint8 m__zero_point) => (float[1,4] y)
      <float[1,4] a, float[1,4] m, float[1,4] r, float[1,4] n> {
  [a__dequantize] a = DequantizeLinear (a__q, a__scale, a__zero_point)
  [m__dequantize] m = DequantizeLinear (m__q, m__scale, m__zero_point)
  [shape] s = Constant <value=int64[2] {1, 4}> ()
  [resh] r = Reshape (m, s)
  [neg] n = Neg (r)
  [add] y = Add (n, a)
}
"""


def test_boundary_golden_quantize_what_is_sent():
    part = insert_boundary(parse(EXTRACTED_DEVICE, W), [], [dynamic("a", 0, 0), dynamic("m", 0, 1)])
    assert_model(part, QUANTIZED_DEVICE, W)


def test_boundary_golden_dequantize_what_is_received():
    part = insert_boundary(parse(EXTRACTED_SERVER, W), [dynamic("a", 0, 0), dynamic("m", 0, 1)], [raw("y", 1, True)])
    assert_model(part, DEQUANTIZED_SERVER, W)


def test_boundary_golden_lossless_crossings_are_the_tensors_themselves():
    part = insert_boundary(parse(EXTRACTED_SERVER, W), [raw("a", 0), raw("m", 0)], [raw("y", 1, True)])
    assert_model(part, EXTRACTED_SERVER.replace("=> ()", "=> (float[1,4] y)").replace(", float[1,4] y>", ">"), W)


def test_boundary_sends_a_tensor_once_however_many_hops_name_it():
    part = insert_boundary(parse(EXTRACTED_DEVICE, W), [], [dynamic("a", 0, 0), dynamic("a", 0, 1), raw("m", 0), raw("m", 0)])
    assert [v.name for v in part.graph.outputs] == [*wire_names("a"), "m"]
    assert [n.op_type for n in part.graph].count("DynamicQuantizeLinear") == 1


# --------------------------------------------------------------------------- SplitPass

PART_DEVICE = QUANTIZED_DEVICE
PART_SERVER = DEQUANTIZED_SERVER  # w, which only the device reads, is gone


def test_split_golden_parts():
    model = partitioned()
    assert not SplitPass("int8")(model).modified
    split = model.graph.meta[ann.PARTS]
    assert_model(split.parts[0], PART_DEVICE, W)
    assert_model(split.parts[1], PART_SERVER)
    assert [(c.tensor, c.src, c.dst, c.codec) for c in split.crossings] == [
        ("a", 0, 1, "int8-dynamic+zstd"), ("m", 0, 1, "int8-dynamic+zstd"), ("y", 1, 0, "raw+zstd")]
    assert [(s.index, s.tier, s.inputs, s.outputs) for s in split.stages] == [
        (0, 0, ("x",), (*wire_names("a"), *wire_names("m"))), (1, 1, (*wire_names("a"), *wire_names("m")), ("y",))]
    assert_model(model, SMALL, W)  # the source model is unchanged


def test_finish_part_is_none_for_a_stage_that_outputs_nothing():
    assert finish_part(parse(EXTRACTED_SERVER, W)) is None


def _codec() -> TensorCodec:
    return TensorCodec(CodecSpec("u4", "static", 4), np.array(0.05, np.float32), np.array(0, np.uint8), None)


def test_split_pass_is_a_frozen_dataclass_and_keeps_no_state_between_models():
    split = SplitPass("int8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.codecs = {}  # type: ignore[misc]
    calibrated = partitioned()
    calibrated.graph.meta[ann.CODECS] = {"a": _codec()}
    split(calibrated)
    assert [c.codec for c in calibrated.graph.meta[ann.PARTS].crossings][:2] == ["u4+zstd", "int8-dynamic+zstd"]
    # the same pass on a model without codecs: nothing of the first model's calibration carries over
    plain = partitioned()
    split(plain)
    assert [c.codec for c in plain.graph.meta[ann.PARTS].crossings][:2] == ["int8-dynamic+zstd", "int8-dynamic+zstd"]
    assert split == SplitPass("int8")
    # given codecs win over the model's
    explicit = partitioned()
    SplitPass("int8", codecs={"m": _codec()})(explicit)
    assert [c.codec for c in explicit.graph.meta[ann.PARTS].crossings][:2] == ["int8-dynamic+zstd", "u4+zstd"]


RETURN = HEADER + """
ret (float[1,4] x) => (float[1,4] y) {
  [relu] a = Relu (x)
  [neg] b = Neg (a)
  [add] y = Add (b, x)
}
"""


def test_a_later_device_stage_takes_the_model_input_itself(tmp_path):
    """relu on the device, neg on the server, add back on the device reading x: x is an input of both device parts,
    never an output of the first."""
    proto = model_proto(RETURN)
    path = save(proto, tmp_path / "ret.onnx")
    result = compile_model(path, tmp_path / "out", CompileOptions(boundary="fp32", allow_return=True, link="wifi"),
                           policy=fixed(lambda cg: [0, 1, 0]))
    stages = result.split.stages
    assert [(s.tier, s.inputs, s.outputs) for s in stages] == [(0, ("x",), ("a",)), (1, ("a",), ("b",)), (0, ("x", "b"), ("y",))]
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    np.testing.assert_array_equal(SplitModel(tmp_path / "out").run({"x": x}).outputs["y"], run_reference(proto, {"x": x})["y"])
