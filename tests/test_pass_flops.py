"""FlopsPass: FLOPs, bytes moved and op class per node (golden numbers per rule), fusion into a preceding Conv.

Most cases run the pass alone on ONNX text after the two passes whose annotations it reads (ReplicablePass,
TensorBytesPass); the fused-activation case needs inferred intermediate shapes and runs the import pipeline.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx_ir as ir
import pytest

from splitc.compiler import annotate, resolve_targets
from splitc.cost.passes.flops import FlopsPass
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.cost.targets import parse_link
from splitc.errors import SplitcWarning
from splitc.frontend.passes.replicable import ReplicablePass
from splitc.ir import metadata as ann
from splitc.partition.passes.partition import build_cost_graph

try:
    from fixtures_text import model_proto
    from golden import assert_model, by_name, imported, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto
    from tests.golden import assert_model, by_name, imported, parse

TARGETS = resolve_targets("rpi4,cloud")


def prepared(text: str, initializers: dict | None = None) -> ir.Model:
    """The ONNX text as IR with what FlopsPass reads: replicable marks and tensor sizes."""
    model = parse(text, initializers)
    ReplicablePass()(model)
    return TensorBytesPass("op.onnx")(model).model


def test_the_pass_annotates_and_changes_no_graph():
    text, inits = _flops_case("(float[2,3] x) => (float[2,3] y)", "[op] y = Add (x, b)", {"b": (3,)})
    model = prepared(text, inits)
    assert not FlopsPass()(model).modified
    assert by_name(model)["op"].meta[ann.COST] == ann.NodeCost(6.0, 24 + 12 + 24, "elementwise", "elementwise")
    assert_model(model, text, inits)


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
def test_flops_golden(signature, body, inits, flops, op_class, rule):
    text, initializers = _flops_case(signature, body, inits)
    model = prepared(text, initializers)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitcWarning)  # every op here has a rule
        FlopsPass()(model)
    cost = by_name(model)["op"].meta[ann.COST]
    assert (cost.flops, cost.op_class, cost.rule) == (float(flops), op_class, rule)


def test_flops_bytes_moved():
    text, inits = _flops_case("(float[1,3,8,8] x) => (float[1,4,8,8] y)", "[op] y = Conv <pads=[1,1,1,1]> (x, w, b)",
                              {"w": (4, 3, 3, 3), "b": (4,)})
    model = prepared(text, inits)
    FlopsPass()(model)
    assert by_name(model)["op"].meta[ann.COST].bytes_moved == 768 + 432 + 16 + 1024
    text, _ = _flops_case("(float[2,3,4] x) => (float[2,12] y)", "[op] y = Flatten (x)")
    model = prepared(text)
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
