"""TensorBytesPass: dtype, static shape and byte size of every tensor, or an error naming the one without."""

from __future__ import annotations

import numpy as np
import pytest

from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.errors import SplitcError
from splitc.frontend.passes.replicable import ReplicablePass
from splitc.ir import metadata as ann

try:
    from fixtures_text import chain_model, model_proto
    from golden import assert_model, imported, one_line, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import chain_model, model_proto
    from tests.golden import assert_model, imported, one_line, parse

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
EXPECTED = {
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


def test_golden_annotations_on_the_pass_alone():
    text = DTYPES.replace("=> (", "=> (float[3] wsum, ").replace("{\n", "{\n  wsum = Add (w, w)\n", 1)
    model = parse(text, {"w": np.ones(3, np.float32)})
    TensorBytesPass("dt.onnx")(model)
    infos = {v.name: v.meta[ann.TENSOR] for v in list(model.graph.inputs) + list(model.graph.outputs)}
    assert infos == {**EXPECTED, "wsum": ann.TensorInfo("float", (3,), 12)}
    assert model.graph.initializers["w"].meta[ann.TENSOR] == ann.TensorInfo("float", (3,), 12)
    assert_model(model, text, {"w": np.ones(3, np.float32)})  # annotations only


NO_SHAPE = """
<ir_version: 8, opset_import: ["" : 17]>
ns (float[4] x) => (float[4] y) {
  [relu] h = Relu (x)
  [neg] y = Neg (h)
  [c] k = Constant <value=float[1] {1.0}> ()
  [kk] k2 = Add (k, k)
}
"""


def test_a_tensor_without_a_static_shape_is_named():
    model = parse(NO_SHAPE)
    ReplicablePass()(model)  # k2 has no shape either, but is computed from constants: never crosses, not costed
    with pytest.raises(SplitcError) as err:
        TensorBytesPass("ns.onnx")(model)
    assert one_line(err).startswith("ns.onnx: tensor 'h' (output of node 'relu' (Relu)) has no static shape")


def test_tensor_bytes_per_dtype(tmp_path):
    model = imported(tmp_path, model_proto(DTYPES))
    infos = {v.name: v.meta[ann.TENSOR] for v in list(model.graph.inputs) + list(model.graph.outputs)}
    assert infos == EXPECTED


def test_tensor_bytes_of_initializers(tmp_path):
    model = imported(tmp_path, chain_model())
    infos = {name: v.meta[ann.TENSOR] for name, v in model.graph.initializers.items()}
    assert infos["w1"] == ann.TensorInfo("float", (4, 3, 3, 3), 432)
    assert infos["wg"] == ann.TensorInfo("float", (10, 256), 10240)
