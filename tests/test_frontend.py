"""Import edge cases: external weight data, input-shape parsing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcError
from splitc.frontend.load import parse_input_shapes
from splitc.runtimes import SplitModel
from splitc.runtimes.ort import session, synthetic_inputs


def test_model_with_external_data_compiles_and_verifies(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((256, 64)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 256])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 64])], [w, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(model, src / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.weights", size_threshold=0)
    assert (src / "m.weights").stat().st_size >= 256 * 256 * 4
    out = tmp_path / "out"
    compile_model(src / "m.onnx", out, CompileOptions(link="up=10Gbps,down=10Gbps,rtt=0.01ms", boundary="fp32"))
    split = SplitModel(out, optimization="disable")
    feeds = synthetic_inputs(split.inputs)
    ref = session(src / "m.onnx", "disable").run(None, feeds)[0]
    assert np.abs(split.run(feeds).outputs["y"] - ref).max() <= 1e-5


def test_missing_external_data_is_a_clear_error(tmp_path):
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    onnx.save_model(helper.make_model(graph), tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(SplitcError, match="external weight data"):
        compile_model(tmp_path / "m.onnx", None)


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1x3x224x224"]) == {"x": (1, 3, 224, 224)}
    assert parse_input_shapes(["input_ids=1x128,attention_mask=1x128"]) == {"input_ids": (1, 128), "attention_mask": (1, 128)}
    assert parse_input_shapes(["input:0=1x224x224x3"]) == {"input:0": (1, 224, 224, 3)}
    with pytest.raises(SplitcError, match="NAME=DxDxD"):
        parse_input_shapes(["x=1x3xHx224"])
