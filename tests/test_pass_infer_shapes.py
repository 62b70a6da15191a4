"""InferShapesPass: every tensor's dtype and static shape, from ONNX inference or, where that stops, onnxruntime."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from splitc.frontend.passes.infer_shapes import InferShapesPass
from splitc.frontend.passes.replicable import is_replicable
from splitc.ir import metadata as ann

try:
    from fixtures_text import chain_model, model_proto
    from golden import assert_model, imported, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import chain_model, model_proto
    from tests.golden import assert_model, imported, parse

BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[a,b] y) <float[7] h> {
  [relu] h = Relu (x)
  [t] y = Transpose <perm=[1,0]> (h)
}
"""
# the stale value_info of h is replaced, the output's symbols become sizes
AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[3,2] y) <float[2,3] h> {
  [relu] h = Relu (x)
  [t] y = Transpose <perm=[1,0]> (h)
}
"""


def test_golden_static_inference():
    model = parse(BEFORE)
    InferShapesPass("g.onnx")(model)
    assert_model(model, AFTER)


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
