"""MaterializeShapesPass: Shape and Size of static tensors become constants (then replicated, never cut)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from splitc.frontend.passes.materialize_shapes import MaterializeShapesPass
from splitc.frontend.passes.replicable import is_replicable

try:
    from fixtures_text import model_proto, run_reference
    from golden import assert_model, by_name, imported, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto, run_reference
    from tests.golden import assert_model, by_name, imported, parse

BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4] x, float[M] d) => (float[6,4] y, int64 n, int64[1] dn) {
  [s] s = Shape <end=2> (x)
  [size] n = Size (x)
  [dyn] dn = Shape (d)
  [p] p = ReduceProd <keepdims=1> (s)
  [c4] c4 = Constant <value=int64[1] {4}> ()
  [t] t = Concat <axis=0> (p, c4)
  [r] y = Reshape (x, t)
}
"""
# the constants keep the node's and the tensor's names; the Shape of a symbolic tensor stays
AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4] x, float[M] d) => (float[6,4] y, int64 n, int64[1] dn) <int64[2] s> {
  [s] s = Constant <value=int64[2] s {2, 3}> ()
  [size] n = Constant <value=int64 n {24}> ()
  [dyn] dn = Shape (d)
  [p] p = ReduceProd <keepdims=1> (s)
  [c4] c4 = Constant <value=int64[1] {4}> ()
  [t] t = Concat <axis=0> (p, c4)
  [r] y = Reshape (x, t)
}
"""


def test_golden_shape_and_size_become_constants():
    model = parse(BEFORE)
    assert MaterializeShapesPass()(model).modified
    assert_model(model, AFTER)


def test_golden_nothing_static_to_fold():
    text = BEFORE.replace("float[2,3,4] x", "float[A,3,4] x").replace("[size] n = Size (x)", "[size] n = Size (d)")
    model = parse(text)
    assert not MaterializeShapesPass()(model).modified
    assert_model(model, text)


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
