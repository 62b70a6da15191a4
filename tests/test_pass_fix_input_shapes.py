"""FixInputShapesPass: symbolic input dimensions fixed from --input-shape, or one error naming every one left."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from splitc.errors import SplitcError
from splitc.frontend.passes.fix_input_shapes import FixInputShapesPass
from splitc.ir import metadata as ann

try:
    from fixtures_text import model_proto
    from golden import assert_model, imported, one_line, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto
    from tests.golden import assert_model, imported, one_line, parse

SYMBOLIC = """
<ir_version: 8, opset_import: ["" : 17]>
sym (float[N,3] x, float[B,L] m, float[4] k) => (float[N,3] y, float[B,L] z, float[4] w) {
  y = Relu (x)
  z = Relu (m)
  w = Relu (k)
}
"""


def test_golden_inputs_fixed_and_nothing_else():
    model = parse(SYMBOLIC)
    result = FixInputShapesPass({"x": (2, 3), "m": (5, 7)}, "sym.onnx")(model)
    assert result.modified
    # only the inputs change: the outputs keep their declared symbols until shape inference runs
    assert_model(result.model, SYMBOLIC.replace("(float[N,3] x, float[B,L] m,", "(float[2,3] x, float[5,7] m,"))


def test_golden_static_model_is_left_as_it_is():
    static = SYMBOLIC.replace("N", "2").replace("B", "5").replace("L", "7")
    result = FixInputShapesPass({}, "sym.onnx")(parse(static))
    assert not result.modified
    assert_model(result.model, static)


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
