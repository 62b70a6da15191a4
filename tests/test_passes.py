"""One pass at a time, on tiny ONNX-text graphs with golden expectations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from splitc.ir import metadata as ann
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.compiler import CompileOptions, annotate, compile_model, import_model, resolve_targets
from splitc.errors import SplitcError, SplitcWarning
from splitc.ir.graph import node_inputs
from splitc.frontend.passes.fix_input_shapes import FixInputShapesPass
from splitc.cost.passes.flops import FlopsPass
from splitc.frontend.passes.infer_shapes import InferShapesPass
from splitc.cost.passes.latency import LatencyPass
from splitc.partition.passes.partition import build_cost_graph
from splitc.frontend.passes.replicable import is_replicable
from splitc.cost.targets import parse_link

try:
    from fixtures_text import IF_MODEL, chain_model, model_proto, run_reference, save, server_from
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import IF_MODEL, chain_model, model_proto, run_reference, save, server_from

TARGETS = resolve_targets("rpi4,cloud")


def imported(tmp_path, proto, shapes=None, name="m.onnx") -> ir.Model:
    """The IMPORT stage, then the bytes of every tensor (the first ANNOTATE pass)."""
    model = import_model(save(proto, tmp_path / name), shapes)
    return TensorBytesPass(name)(model).model


def by_name(model: ir.Model) -> dict[str, ir.Node]:
    return {n.name: n for n in model.graph}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


# --------------------------------------------------------------------------- FixInputShapesPass

SYMBOLIC = """
<ir_version: 8, opset_import: ["" : 17]>
sym (float[N,3] x, float[B,L] m, float[4] k) => (float[N,3] y, float[B,L] z, float[4] w) {
  y = Relu (x)
  z = Relu (m)
  w = Relu (k)
}
"""


def test_fix_input_shapes_sets_symbolic_dims(tmp_path):
    model = imported(tmp_path, model_proto(SYMBOLIC), {"x": (2, 3), "m": (5, 7)})
    shapes = {v.name: tuple(v.shape.dims) for v in model.graph.inputs}
    assert shapes == {"x": (2, 3), "m": (5, 7), "k": (4,)}
    # and the new sizes propagate: every tensor gets a static shape and its byte size
    outs = {v.name: v.meta[ann.TENSOR] for v in model.graph.outputs}
    assert outs["y"] == ann.TensorInfo("float", (2, 3), 24)
    assert outs["z"] == ann.TensorInfo("float", (5, 7), 140)


def test_fix_input_shapes_names_every_symbolic_input(tmp_path):
    with pytest.raises(SplitcError) as err:
        imported(tmp_path, model_proto(SYMBOLIC))
    msg = one_line(err)
    assert "x [Nx3]" in msg and "m [BxL]" in msg
    assert "k [" not in msg  # static inputs are not listed
    assert "--input-shape x=1x3,m=1x1" in msg


def test_fix_input_shapes_names_only_the_inputs_left_symbolic(tmp_path):
    with pytest.raises(SplitcError) as err:
        imported(tmp_path, model_proto(SYMBOLIC), {"x": (2, 3)})
    msg = one_line(err)
    assert "m [BxL]" in msg and "x [" not in msg


@pytest.mark.parametrize(
    "shapes, fragment",
    [
        ({"nope": (1, 3)}, "names nope, which the model does not have; its inputs are x, m, k"),
        ({"x": (1, 3, 3)}, "has rank 3, but input 'x' is Nx3 (rank 2)"),
        ({"x": (2, 4), "m": (1, 1)}, "dimension 1 is fixed to 3 in the model, not 4"),
        ({"x": (0, 3), "m": (1, 1)}, "every dimension must be positive"),
    ],
    ids=["unknown-input", "rank-mismatch", "conflicting-dim", "non-positive"],
)
def test_fix_input_shapes_rejects(tmp_path, shapes, fragment):
    with pytest.raises(SplitcError) as err:
        imported(tmp_path, model_proto(SYMBOLIC), shapes)
    assert fragment in one_line(err)


def test_fix_input_shapes_pass_alone_raises_splitc_error():
    model = ir.from_proto(model_proto(SYMBOLIC))
    with pytest.raises(SplitcError, match="sym.onnx: input\\(s\\) with symbolic dimensions: x \\[Nx3\\], m \\[BxL\\]"):
        FixInputShapesPass({}, "sym.onnx")(model)


def test_fixed_shapes_replace_stale_value_info(tmp_path):
    # value_info recorded for batch N must not survive fixing N to 2
    proto = model_proto(SYMBOLIC.replace("y = Relu (x)", "h = Relu (x)\n  y = Neg (h)"))
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["N", 3]))
    model = imported(tmp_path, proto, {"x": (2, 3), "m": (1, 1)})
    h = next(n for n in model.graph if n.op_type == "Relu" and n.inputs[0].name == "x").outputs[0]
    assert tuple(h.shape.dims) == (2, 3)


# --------------------------------------------------------------------------- InferShapesPass

def test_infer_shapes_static(tmp_path):
    model = imported(tmp_path, chain_model())
    shapes = {o.name: tuple(o.shape.dims) for n in model.graph for o in n.outputs}
    assert shapes == {
        "c1": (1, 4, 8, 8), "r1": (1, 4, 8, 8), "c2": (1, 4, 8, 8), "r2": (1, 4, 8, 8), "f": (1, 256), "y": (1, 10),
    }
    assert all(o.dtype == ir.DataType.FLOAT for n in model.graph for o in n.outputs)


# Shape -> Cast to float -> Div -> ReduceProd -> Cast back: ONNX data propagation loses the
# values at the float arithmetic, so it cannot tell the Reshape target; onnxruntime can.
RUNTIME_RESHAPE = """
<ir_version: 8, opset_import: ["" : 17]>
rt (float[2,3,4] x) => (float[a,b] y) {
  s = Shape (x)
  f = Cast <to=1> (s)
  k = Constant <value=float[3] {1.0, 1.0, 4.0}> ()
  g = Div (f, k)
  h = ReduceProd <keepdims=1> (g)
  i = Cast <to=7> (h)
  c4 = Constant <value=int64[1] {4}> ()
  r = Concat <axis=0> (i, c4)
  q = Abs (r)
  y0 = Reshape (x, q)
  y = Relu (y0)
}
"""


def test_onnx_inference_alone_cannot_infer_the_runtime_reshape():
    inferred = onnx.shape_inference.infer_shapes(model_proto(RUNTIME_RESHAPE), data_prop=True)
    y0 = next(vi for vi in inferred.graph.value_info if vi.name == "y0")
    assert not all(d.HasField("dim_value") for d in y0.type.tensor_type.shape.dim)


def test_infer_shapes_falls_back_to_onnxruntime():
    model = ir.from_proto(model_proto(RUNTIME_RESHAPE))
    InferShapesPass("rt.onnx")(model)
    values = {o.name: o for n in model.graph for o in n.outputs}
    assert tuple(values["y0"].shape.dims) == (6, 4)
    assert tuple(values["y"].shape.dims) == (6, 4)
    assert values["y"].dtype == ir.DataType.FLOAT
    assert tuple(values["q"].shape.dims) == (2,)


def test_infer_shapes_fallback_in_the_import_pipeline(tmp_path):
    model = imported(tmp_path, model_proto(RUNTIME_RESHAPE))
    y = model.graph.outputs[0]
    assert y.meta[ann.TENSOR] == ann.TensorInfo("float", (6, 4), 96)
    # the shape arithmetic depends on no input: it is replicated, the Reshape/Relu are not
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert not is_replicable(reshape) and not is_replicable(y.producer())
    assert all(is_replicable(n) for n in model.graph if n.op_type not in ("Reshape", "Relu"))


def test_unsorted_graph_imports_sorted(tmp_path):
    proto = chain_model()
    nodes = list(proto.graph.node)[::-1]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)  # really unsorted
    model = imported(tmp_path, proto)
    assert [n.name for n in model.graph] == ["conv1", "relu1", "conv2", "relu2", "flat", "fc"]
    seen = {v.name for v in model.graph.inputs} | set(model.graph.initializers)
    for node in model.graph:
        assert all(v.name in seen for v in node.inputs if v is not None), node.name
        seen.update(o.name for o in node.outputs)


# --------------------------------------------------------------------------- MaterializeShapesPass

SHAPES = """
<ir_version: 8, opset_import: ["" : 17]>
shp (float[2,3,4,5] x) => (int64[2] mid, int64 n, float[6,20] y, int64[2] last2) {
  [shape_mid] mid = Shape <start=1, end=-1> (x)
  [size] n = Size (x)
  [shape_head] head = Shape <end=2> (x)
  [shape_tail] last2 = Shape <start=-2> (x)
  [shape_all] full = Shape (x)
  [prod_head] d01 = ReduceProd <keepdims=1> (head)
  [prod_tail] d23 = ReduceProd <keepdims=1> (last2)
  [target] tgt = Concat <axis=0> (d01, d23)
  [reshape] r = Reshape (x, tgt)
  [gather] g = Gather <axis=0> (full, zero)
  [cast] gf = Cast <to=1> (g)
  [scale] y = Mul (r, gf)
}
"""


def test_materialize_shapes(tmp_path):
    proto = model_proto(SHAPES, {"zero": np.array(0, dtype=np.int64)})
    model = imported(tmp_path, proto)
    nodes = by_name(model)
    assert not any(n.op_type in ("Shape", "Size") for n in model.graph)
    expected = {"shape_mid": [3, 4], "size": 120, "shape_head": [2, 3], "shape_tail": [4, 5], "shape_all": [2, 3, 4, 5]}
    for name, value in expected.items():
        node = nodes[name]
        assert node.op_type == "Constant"
        const = node.attributes["value"].as_tensor().numpy()
        assert const.dtype == np.int64
        np.testing.assert_array_equal(const, np.array(value, dtype=np.int64))
        assert is_replicable(node)
    # graph outputs keep their names, order and (now constant) producers
    assert [v.name for v in model.graph.outputs] == ["mid", "n", "y", "last2"]
    assert model.graph.outputs[0].producer() is nodes["shape_mid"]
    assert model.graph.outputs[1].producer() is nodes["size"]
    assert model.graph.outputs[3].producer() is nodes["shape_tail"]
    # and the rewritten model computes what the original does
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    ref = run_reference(proto, {"x": x})
    got = run_reference(ir.to_proto(model), {"x": x})
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


# --------------------------------------------------------------------------- ReplicablePass

REPLICABLE = """
<ir_version: 8, opset_import: ["" : 17]>
rep (float[2,3] x) => (float[2,3] y, float[2,3] noisy) {
  [k] k = Constant <value=float[1] {2.0}> ()
  [shp] shp = Constant <value=int64[2] {2, 3}> ()
  [fill] z = ConstantOfShape <value=float[1] {0.5}> (shp)
  [wt] wt = Transpose <perm=[1,0]> (w)
  [wsum] w2 = Add (z, k)
  [wmix] w3 = Add (w2, wt)
  [mul] a = Mul (x, w3)
  [shape] s = Shape (a)
  [reshape] r = Reshape (a, s)
  [relu] y = Relu (r)
  [rand] rn = RandomNormal <shape=[2,3]> ()
  [noise] noisy = Add (y, rn)
}
"""


def test_replicable(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, {"w": np.ones((3, 2), np.float32)}))
    nodes = by_name(model)
    replicable = {name for name, n in nodes.items() if is_replicable(n)}
    assert replicable == {"k", "shp", "fill", "wt", "wsum", "wmix", "shape"}
    assert nodes["k"].meta[ann.REPLICABLE].reason == "constant"
    assert nodes["fill"].meta[ann.REPLICABLE].reason == "constant"
    assert nodes["wmix"].meta[ann.REPLICABLE].reason == "depends only on weights and static shapes"
    # RandomNormal reads nothing, but computing it twice would differ: never replicated
    assert not is_replicable(nodes["rand"])


def test_replicable_nodes_stay_out_of_the_cost_graph(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, {"w": np.ones((3, 2), np.float32)}))
    with pytest.warns(SplitcWarning, match="'RandomNormal'"):
        annotate(model, TARGETS)
    cg = build_cost_graph(model, TARGETS, parse_link("4g"), "int8")
    assert [n.name for n in cg.nodes] == ["mul", "reshape", "relu", "rand", "noise"]
    # a replicable tensor (w3, the reshape target) is never a cost-graph tensor
    assert {t.name for t in cg.tensors} == {"x", "a", "r", "y", "rn", "noisy"}


# --------------------------------------------------------------------------- TensorBytesPass

DTYPES = """
<ir_version: 8, opset_import: ["" : 17]>
dt (float16[2,3] h, int64[5] i, double[2,2] d, uint8[7] u, bool[3] b, int8[4] s) => (float[2,3] hf, int32[5] i32, double[2,2] d2, uint8[7] u2, bool[3] nb, bfloat16[4] bf) {
  hf = Cast <to=1> (h)
  i32 = Cast <to=6> (i)
  d2 = Neg (d)
  u2 = Identity (u)
  nb = Not (b)
  bf = Cast <to=16> (s)
}
"""


def test_tensor_bytes_per_dtype(tmp_path):
    model = imported(tmp_path, model_proto(DTYPES))
    infos = {v.name: v.meta[ann.TENSOR] for v in list(model.graph.inputs) + list(model.graph.outputs)}
    assert infos == {
        "h": ann.TensorInfo("float16", (2, 3), 12),
        "i": ann.TensorInfo("int64", (5,), 40),
        "d": ann.TensorInfo("double", (2, 2), 32),
        "u": ann.TensorInfo("uint8", (7,), 7),
        "b": ann.TensorInfo("bool", (3,), 3),
        "s": ann.TensorInfo("int8", (4,), 4),
        "hf": ann.TensorInfo("float", (2, 3), 24),
        "i32": ann.TensorInfo("int32", (5,), 20),
        "d2": ann.TensorInfo("double", (2, 2), 32),
        "u2": ann.TensorInfo("uint8", (7,), 7),
        "nb": ann.TensorInfo("bool", (3,), 3),
        "bf": ann.TensorInfo("bfloat16", (4,), 8),
    }


def test_tensor_bytes_of_initializers(tmp_path):
    model = imported(tmp_path, chain_model())
    infos = {name: v.meta[ann.TENSOR] for name, v in model.graph.initializers.items()}
    assert infos["w1"] == ann.TensorInfo("float", (4, 3, 3, 3), 432)
    assert infos["wg"] == ann.TensorInfo("float", (10, 256), 10240)


# --------------------------------------------------------------------------- FlopsPass

def _flops_case(signature: str, body: str, inits: dict[str, tuple] | None = None) -> tuple[str, dict]:
    text = f'<ir_version: 8, opset_import: ["" : 17]>\nop {signature} {{\n  {body}\n}}\n'
    rng = np.random.default_rng(0)
    return text, {k: rng.standard_normal(s).astype(np.float32) for k, s in (inits or {}).items()}


# (id, signature, body, initializers, flops, op class, rule)
FLOPS_CASES = [
    ("conv", "(float[1,3,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1]> (x, w, b)",
     {"w": (4, 3, 3, 3), "b": (4,)}, 2 * 256 * 27 + 256, "conv", "conv"),
    ("conv-strided-nobias", "(float[1,3,8,8] x) => (float[1,4,4,4] y)", "[op] y = Conv <pads=[1,1,1,1], strides=[2,2]> (x, w)",
     {"w": (4, 3, 3, 3)}, 2 * 64 * 27, "conv", "conv"),
    ("depthwise", "(float[1,4,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1], group=4> (x, w)",
     {"w": (4, 1, 3, 3)}, 2 * 256 * 9, "depthwise", "conv"),
    ("grouped-not-depthwise", "(float[1,4,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1], group=2> (x, w)",
     {"w": (4, 2, 3, 3)}, 2 * 256 * 18, "conv", "conv"),
    ("conv-transpose", "(float[1,4,4,4] x) => (float[1,2,6,6] y)", "[op] y = ConvTranspose (x, w)",
     {"w": (4, 2, 3, 3)}, 2 * 64 * 2 * 9, "conv", "conv_transpose"),
    ("gemm", "(float[2,8] a) => (float[2,5] y)", "[op] y = Gemm (a, b, c)",
     {"b": (8, 5), "c": (5,)}, 2 * 10 * 8 + 10, "matmul", "gemm"),
    ("gemm-transA", "(float[8,2] a) => (float[2,5] y)", "[op] y = Gemm <transA=1> (a, b)",
     {"b": (8, 5)}, 2 * 10 * 8, "matmul", "gemm"),
    ("matmul-batched", "(float[2,3,4,5] a, float[2,3,5,6] b) => (float[2,3,4,6] y)", "[op] y = MatMul (a, b)",
     None, 2 * 144 * 5, "matmul", "matmul"),
    ("maxpool", "(float[1,2,8,8] x) => (float[1,2,4,4] y)", "[op] y = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)",
     None, 32 * 4, "pool", "pool"),
    ("global-avgpool", "(float[1,2,8,8] x) => (float[1,2,1,1] y)", "[op] y = GlobalAveragePool (x)",
     None, 128, "pool", "global_pool"),
    ("batchnorm", "(float[1,2,4,4] x) => (float[1,2,4,4] y)", "[op] y = BatchNormalization (x, s, b, m, v)",
     {"s": (2,), "b": (2,), "m": (2,), "v": (2,)}, 2 * 32, "norm", "norm"),
    ("layernorm", "(float[2,3,8] x) => (float[2,3,8] y)", "[op] y = LayerNormalization <axis=-1> (x, s, b)",
     {"s": (8,), "b": (8,)}, 8 * 48, "norm", "norm"),
    ("add-broadcast", "(float[2,3] x) => (float[2,3] y)", "[op] y = Add (x, b)", {"b": (3,)}, 6, "elementwise", "elementwise"),
    ("sum-3", "(float[2,3] x, float[2,3] z, float[2,3] w) => (float[2,3] y)", "[op] y = Sum (x, z, w)",
     None, 12, "elementwise", "elementwise"),
    ("relu", "(float[2,3] x) => (float[2,3] y)", "[op] y = Relu (x)", None, 6, "elementwise", "elementwise"),
    ("sigmoid", "(float[2,3] x) => (float[2,3] y)", "[op] y = Sigmoid (x)", None, 24, "elementwise", "elementwise"),
    ("resize-linear", "(float[1,1,2,2] x) => (float[1,1,4,4] y)",
     'sc = Constant <value=float[4] {1.0, 1.0, 2.0, 2.0}> ()\n  [op] y = Resize <mode="linear"> (x, , sc)',
     None, 16 * 4, "resize", "resize"),
    ("resize-nearest", "(float[1,1,2,2] x) => (float[1,1,4,4] y)",
     'sc = Constant <value=float[4] {1.0, 1.0, 2.0, 2.0}> ()\n  [op] y = Resize (x, , sc)',
     None, 16, "resize", "resize"),
    ("softmax", "(float[2,5] x) => (float[2,5] y)", "[op] y = Softmax (x)", None, 50, "reduce", "softmax"),
    ("reduce-mean", "(float[2,3,4] x) => (float[2,1,1] y)", "[op] y = ReduceMean <axes=[1,2]> (x)", None, 24, "reduce", "reduce"),
    ("transpose", "(float[2,3] x) => (float[3,2] y)", "[op] y = Transpose (x)", None, 0, "data", "data_movement"),
    ("flatten-view", "(float[2,3,4] x) => (float[2,12] y)", "[op] y = Flatten (x)", None, 0, "data", "view"),
]


@pytest.mark.parametrize(
    "signature, body, inits, flops, op_class, rule", [c[1:] for c in FLOPS_CASES], ids=[c[0] for c in FLOPS_CASES]
)
def test_flops_golden(tmp_path, signature, body, inits, flops, op_class, rule):
    text, initializers = _flops_case(signature, body, inits)
    model = imported(tmp_path, model_proto(text, initializers))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitcWarning)  # every op here has a rule
        FlopsPass()(model)
    cost = by_name(model)["op"].meta[ann.COST]
    assert (cost.flops, cost.op_class, cost.rule) == (float(flops), op_class, rule)


def test_flops_bytes_moved(tmp_path):
    text, inits = _flops_case("(float[1,3,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1]> (x, w, b)",
                              {"w": (4, 3, 3, 3), "b": (4,)})
    model = imported(tmp_path, model_proto(text, inits))
    FlopsPass()(model)
    assert by_name(model)["op"].meta[ann.COST].bytes_moved == 768 + 432 + 16 + 1024
    text, _ = _flops_case("(float[2,3,4] x) => (float[2,12] y)", "[op] y = Flatten (x)")
    model = imported(tmp_path, model_proto(text), name="view.onnx")
    FlopsPass()(model)
    assert by_name(model)["op"].meta[ann.COST].bytes_moved == 0  # a view moves nothing


def test_flops_unknown_op_warns_and_falls_back(tmp_path):
    text, _ = _flops_case("(float[2,3,3] x) => (float[2] y)", "[op] y = Det (x)\n  [op2] y2 = Det (x)\n  [op3] z = Add (y, y2)")
    text = text.replace("(float[2] y)", "(float[2] z)")
    model = imported(tmp_path, model_proto(text))
    with pytest.warns(SplitcWarning) as record:
        FlopsPass()(model)
    messages = [str(w.message) for w in record if issubclass(w.category, SplitcWarning)]
    assert messages == ["no cost rule for op 'Det' (2 nodes); costed as 1 FLOP per output element, class 'other'"]
    cost = by_name(model)["op"].meta[ann.COST]
    assert (cost.flops, cost.op_class, cost.rule) == (2.0, "other", "default")
    assert by_name(model)["op3"].meta[ann.COST].rule == "elementwise"


FUSED = """
<ir_version: 8, opset_import: ["" : 17]>
fused (float[1,3,8,8] x) => (float[1,4,8,8] y, float[1,4,8,8] c3, float[1,4,8,8] z2) {
  [conv1] c1 = Conv <pads=[1,1,1,1]> (x, w1)
  [bn1] n1 = BatchNormalization (c1, s, b, m, v)
  [relu1] y = Relu (n1)
  [conv2] c2 = Conv <pads=[1,1,1,1]> (x, w1)
  [relu2] r2 = Relu (c2)
  [sig2] g2 = Sigmoid (c2)
  [conv3] c3 = Conv <pads=[1,1,1,1]> (x, w1)
  [relu3] r3 = Relu (c3)
  [sum] z = Add (r2, g2)
  [sum2] z2 = Add (z, r3)
}
"""


def test_fused_activation_after_conv(tmp_path):
    proto = model_proto(FUSED,
                        {"w1": np.ones((4, 3, 3, 3), np.float32), "s": np.ones(4, np.float32), "b": np.zeros(4, np.float32),
                         "m": np.zeros(4, np.float32), "v": np.ones(4, np.float32)})
    model = imported(tmp_path, proto)
    annotate(model, TARGETS)
    rules = {n.name: n.meta[ann.COST].rule for n in model.graph}
    assert rules["bn1"] == "fused_into:conv1"
    assert rules["relu1"] == "fused_into:conv1"  # through the batch norm
    assert rules["relu2"] == "elementwise"  # c2 has two consumers: not fused
    assert rules["sig2"] == "elementwise"
    assert rules["relu3"] == "elementwise"  # c3 is a graph output: not fused
    for name in ("bn1", "relu1"):
        node = by_name(model)[name]
        assert node.meta[ann.COST].bytes_moved == 0
        assert node.meta[ann.LATENCY].seconds == (("rpi4", 0.0), ("cloud", 0.0))
    # the partitioner must keep a fused activation with its Conv
    cg = build_cost_graph(model, TARGETS, parse_link("4g"), "int8")
    index = {n.name: i for i, n in enumerate(cg.nodes)}
    assert set(cg.tied) == {(index["conv1"], index["bn1"]), (index["bn1"], index["relu1"])}


# --------------------------------------------------------------------------- LatencyPass

def test_latency_equals_profile(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, {"w": np.ones((3, 2), np.float32)}))
    with pytest.warns(SplitcWarning, match="'RandomNormal'"):
        annotate(model, TARGETS)
    for node in model.graph:
        cost, lat = node.meta[ann.COST], node.meta[ann.LATENCY]
        assert [t for t, _ in lat.seconds] == ["rpi4", "cloud"]
        for target in TARGETS:
            if is_replicable(node):
                assert lat.on(target.name) == 0.0
            else:
                expected = target.latency(cost.flops, cost.bytes_moved, cost.op_class)
                assert expected > 0
                assert lat.on(target.name) == expected


def _profile(name: str, conv: float, memory: float, overhead: float):
    from splitc.cost.targets import OP_CLASSES, parse_profile

    compute = {c: 1e9 for c in OP_CLASSES} | {"conv": conv, "memory_bytes_per_s": memory, "op_overhead_s": overhead}
    return parse_profile({"name": name, "compute": compute, "codec": {"encode_bytes_per_s": 1e9, "decode_bytes_per_s": 1e9}}, name)


def test_latency_golden_numbers(tmp_path):
    text, inits = _flops_case("(float[1,3,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1]> (x, w, b)",
                              {"w": (4, 3, 3, 3), "b": (4,)})
    model = imported(tmp_path, model_proto(text, inits))
    slow_compute = _profile("slow-compute", conv=1e9, memory=1e9, overhead=1e-5)
    slow_memory = _profile("slow-memory", conv=1e12, memory=1e8, overhead=0.0)
    FlopsPass()(model)
    LatencyPass((slow_compute, slow_memory))(model)
    lat = by_name(model)["op"].meta[ann.LATENCY]
    # 14080 FLOPs, 2240 bytes: overhead + max(flops / rate, bytes / bandwidth)
    assert lat.seconds == (("slow-compute", pytest.approx(1e-5 + 14080 / 1e9)), ("slow-memory", pytest.approx(2240 / 1e8)))


def test_latency_pass_requires_costs(tmp_path):
    model = imported(tmp_path, chain_model())
    with pytest.raises(ir.passes.PreconditionError) as err:
        LatencyPass(TARGETS)(model)
    assert isinstance(err.value.__cause__, LookupError)
    assert "'conv1' has no splitc.cost annotation" in str(err.value.__cause__)


# --------------------------------------------------------------------------- control flow stays whole

def test_if_node_inputs_include_outer_scope_values():
    model = ir.from_proto(model_proto(IF_MODEL))
    nodes = by_name(model)
    assert [v.name for v in nodes["cond"].inputs] == ["c"]
    assert sorted(v.name for v in node_inputs(nodes["cond"])) == ["a", "b", "c"]
    a = nodes["relu"].outputs[0]  # read inside the If's body: the If is one of its top-level consumers
    assert {n.name for n in model.graph if a in node_inputs(n)} == {"sig", "cond"}


def test_if_model_splits_only_around_the_if(tmp_path, monkeypatch):
    proto = model_proto(IF_MODEL)
    path = save(proto, tmp_path / "if.onnx")
    model = import_model(path)
    assert not is_replicable(by_name(model)["cond"])  # its body reads a dynamic tensor
    # the cost graph sees the If as one node reading c, a and b
    with pytest.warns(SplitcWarning, match="'If'"):
        annotate(model, TARGETS)
    cg = build_cost_graph(model, TARGETS, parse_link("4g"), "fp32")
    assert [n.name for n in cg.nodes] == ["relu", "sig", "cond", "tanh"]
    readers = {t.name: [cg.nodes[c].name for c in t.consumers] for t in cg.tensors}
    assert readers["a"] == ["sig", "cond"] and readers["b"] == ["cond"] and readers["c"] == ["cond"]

    with pytest.warns(SplitcWarning):
        result = compile_model(path, tmp_path / "out", CompileOptions(boundary="fp32"), policy=server_from("cond"))
    assert result.plan["cut"] == ["a", "b", "c"]
    head, tail = result.split.parts[0], result.split.parts[1]
    assert [n.name for n in head.graph] == ["relu", "sig"]
    assert [n.name for n in tail.graph] == ["cond", "tanh"]
    body = {g.name: [n.name for n in g] for g in (a.value for a in by_name(tail)["cond"].attributes.values())}
    assert body == {"then_g": ["then_add"], "else_g": ["else_mul"]}  # the body is intact

    from splitc.runtimes import SplitModel

    runtime = SplitModel(tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(runtime.run(feeds).outputs["y"], run_reference(proto, feeds)["y"])


def test_if_model_optimal_plan_never_cuts_inside(tmp_path):
    path = save(model_proto(IF_MODEL), tmp_path / "if.onnx")
    with pytest.warns(SplitcWarning):
        result = compile_model(path, None, CompileOptions(link="up=1Gbps,down=1Gbps,rtt=0ms"))
    cg = result.partition.cost_graph
    assert [n.op_type for n in cg.nodes] == ["Relu", "Sigmoid", "If", "Tanh"]
    assert math.isfinite(result.partition.solution.cost.total_s) and result.partition.solution.cost.feasible
