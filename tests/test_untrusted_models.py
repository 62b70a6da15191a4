"""Models from strangers (issue 11): whatever a model holds, compile ends with one line naming the problem, never
reads a file the user did not name, and stays bounded in time and memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from splitc.compiler import compile_model
from splitc.errors import SplitcError
from splitc.frontend.load import load_proto

SECRET = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)


def _external_model(folder, location="w.bin"):
    """m.onnx in ``folder`` whose weight w (64x64 float) lives in external data ``location``; returns its path."""
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "m.onnx",
                    save_as_external_data=True, location="w.bin", size_threshold=0)
    if location != "w.bin":  # point the tensor elsewhere
        proto = onnx.load(folder / "m.onnx", load_external_data=False)
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(proto, folder / "m.onnx")
    return folder / "m.onnx"


def _outside(tmp_path):
    secret = tmp_path / "elsewhere" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(SECRET.tobytes())
    return secret


def _set(model, **fields):
    proto = onnx.load(model, load_external_data=False)
    entries = proto.graph.initializer[0].external_data
    for key, value in fields.items():
        for e in entries:
            if e.key == key:
                e.value = str(value)
                break
        else:
            entries.add(key=key, value=str(value))
    onnx.save(proto, model)


def test_external_data_symlinked_out_of_the_folder_is_refused(tmp_path):
    model = _external_model(tmp_path / "m")
    (tmp_path / "m" / "w.bin").unlink()
    (tmp_path / "m" / "w.bin").symlink_to(_outside(tmp_path))
    with pytest.raises(SplitcError, match=r"tensor 'w'.*outside the model's folder"):
        load_proto(model)


def test_external_data_under_a_symlinked_folder_is_refused(tmp_path):
    secret = _outside(tmp_path)
    model = _external_model(tmp_path / "m", location="sub/secret.bin")
    (tmp_path / "m" / "sub").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(SplitcError, match=r"tensor 'w'.*outside the model's folder"):
        load_proto(model)


@pytest.mark.parametrize("location", ["../elsewhere/secret.bin", "ABSOLUTE"])
def test_external_data_path_leading_out_is_refused(tmp_path, location):
    secret = _outside(tmp_path)
    model = _external_model(tmp_path / "m", location=str(secret) if location == "ABSOLUTE" else location)
    with pytest.raises(SplitcError, match=r"tensor 'w'.*outside the model's folder"):
        load_proto(model)


def test_external_data_hard_link_is_refused(tmp_path):
    model = _external_model(tmp_path / "m")
    (tmp_path / "m" / "w.bin").unlink()
    os.link(_outside(tmp_path), tmp_path / "m" / "w.bin")
    with pytest.raises(SplitcError, match=r"tensor 'w'.*hard link"):
        load_proto(model)


def test_external_data_symlink_inside_the_folder_loads(tmp_path):
    model = _external_model(tmp_path / "m")
    (tmp_path / "m" / "w.bin").rename(tmp_path / "m" / "real.bin")
    (tmp_path / "m" / "w.bin").symlink_to("real.bin")
    proto = load_proto(model)
    np.testing.assert_array_equal(numpy_helper.to_array(proto.graph.initializer[0]), np.ones((64, 64), np.float32))


@pytest.mark.parametrize("fields", [{"offset": 64 * 64 * 4}, {"length": 64 * 64 * 4 + 4}, {"offset": 8, "length": 64 * 64 * 4},
                                    {"offset": -4}, {"length": "many"}])
def test_external_data_offset_or_length_out_of_range_is_one_line(tmp_path, fields):
    model = _external_model(tmp_path / "m")
    _set(model, **fields)
    with pytest.raises(SplitcError, match=r"tensor 'w'.*(beyond the end|negative|not integers)") as e:
        compile_model(model, None)
    assert "\n" not in str(e.value)


# -- the onnxruntime run that observes shapes is bounded ------------------------------------------------------------

def _loop_model(trips: int, scan: bool):
    """x -> Loop(trips) adding 1 each time -> NonZero (a data-dependent shape, so compile runs the model to see it).
    With ``scan`` the loop also stacks every iteration's value (memory grows with the trips)."""
    f = onnx.TensorProto.FLOAT
    body_nodes = [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Add", ["v", "one"], ["v_out"])]
    body_outputs = [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
                    helper.make_tensor_value_info("v_out", f, [1, 256])]
    if scan:
        body_nodes.append(helper.make_node("Identity", ["v"], ["scan"]))
        body_outputs.append(helper.make_tensor_value_info("scan", f, [1, 256]))
    body = helper.make_graph(body_nodes, "body", [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                                                  helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
                                                  helper.make_tensor_value_info("v", f, [1, 256])],
                             body_outputs, [numpy_helper.from_array(np.ones((1, 256), np.float32), "one")])
    loop_out = ["v_final", "scans"] if scan else ["v_final"]
    nodes = [helper.make_node("Loop", ["M", "c", "x"], loop_out, body=body, name="loop"),
             helper.make_node("NonZero", ["v_final"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["y"], to=f, name="cast")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [1, 256])],
                              [helper.make_tensor_value_info("y", f, None)],
                              [numpy_helper.from_array(np.array(trips, np.int64), "M"), numpy_helper.from_array(np.array(True), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.timeout(120)
def test_a_loop_without_end_is_stopped_at_the_time_limit(tmp_path, monkeypatch):
    import splitc.frontend.observe as observe

    monkeypatch.setattr(observe, "TIMEOUT_S", 3.0)
    onnx.save(_loop_model(10**12, scan=False), tmp_path / "endless.onnx")
    with pytest.raises(SplitcError, match=r"^endless\.onnx: .*took longer than 3 s"):
        compile_model(tmp_path / "endless.onnx", None)


@pytest.mark.timeout(120)
def test_a_loop_that_allocates_without_end_is_stopped_at_the_memory_limit(tmp_path, monkeypatch):
    import splitc.frontend.observe as observe

    monkeypatch.setattr(observe, "MEMORY_BYTES", 768 << 20)
    onnx.save(_loop_model(10**12, scan=True), tmp_path / "greedy.onnx")
    with pytest.raises(SplitcError, match=r"^greedy\.onnx: .*memory limit of 0\.8 GiB"):
        compile_model(tmp_path / "greedy.onnx", None)


def test_a_bounded_loop_is_observed_in_the_child(tmp_path):
    onnx.save(_loop_model(5, scan=True), tmp_path / "five.onnx")
    result = compile_model(tmp_path / "five.onnx", None)
    nz = {v.name: v for node in result.model.graph for v in node.outputs}["nz"]
    assert list(nz.shape) == [2, 256]  # NonZero of a (1, 256) tensor of 6s: every element


# -- malformed graphs and odd names: one line, or it just works -----------------------------------------------------

def _vi(name, shape=(1, 4)):
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None if shape is None else list(shape))


def _save(path, nodes, inputs, outputs, inits=(), opset=17, graph_name="g"):
    model = helper.make_model(helper.make_graph(nodes, graph_name, inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _relu_chain(path, x="x", y="y", z="z", names=("r1", "r2"), **kw):
    nodes = [helper.make_node("Relu", [x], [y], name=names[0]), helper.make_node("Sigmoid", [y], [z], name=names[1])]
    return _save(path, nodes, [_vi(x)], [_vi(z)], **kw)


def _cli_error(capsys, *argv) -> str:
    from splitc.cli.main import main

    assert main([*map(str, argv), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("splitc: error: ") and "internal error" not in err, err
    return err


def test_a_cycle_is_named(tmp_path, capsys):
    model = _save(tmp_path / "cyc.onnx", [helper.make_node("Add", ["x", "b"], ["a"], name="A"),
                                          helper.make_node("Relu", ["a"], ["b"], name="B")], [_vi("x")], [_vi("b")])
    err = _cli_error(capsys, "compile", model, "-o", tmp_path / "o")
    assert "cyc.onnx: the graph has a cycle ('A' -> 'B' -> 'A')" in err


def test_no_inputs_and_no_outputs_are_named(tmp_path, capsys):
    const = numpy_helper.from_array(np.ones((1, 4), np.float32), "c")
    model = _save(tmp_path / "const.onnx", [helper.make_node("Relu", ["c"], ["y"], name="r")], [], [_vi("y")], [const])
    assert "const.onnx: the graph has no inputs" in _cli_error(capsys, "compile", model, "-o", tmp_path / "o")
    model = _save(tmp_path / "void.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x")], [])
    assert "void.onnx: the graph has no outputs" in _cli_error(capsys, "compile", model, "-o", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_opset_onnxruntime_cannot_run_is_refused_naming_the_supported_one(tmp_path, capsys):
    model = _relu_chain(tmp_path / "future.onnx", opset=99)
    err = _cli_error(capsys, "compile", model, "-o", tmp_path / "o")
    assert "future.onnx: onnxruntime" in err and "ai.onnx 99" in err and "support for domain ai.onnx is till opset" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("dims", [(2**40, 2**40), (2**31, 2**31, 8)])
def test_dims_whose_product_overflows_are_named(tmp_path, capsys, dims):
    model = _save(tmp_path / "huge.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", dims)], [_vi("y", None)])
    err = _cli_error(capsys, "compile", model, "-o", tmp_path / "o")
    assert f"huge.onnx: tensor 'x' has shape {'x'.join(map(str, dims))}" in err


def test_names_that_are_not_utf8_compile(tmp_path):
    model = _relu_chain(tmp_path / "bytes.onnx", x="xZZZZ", y="yQQQQ", names=("rWWWW", "r2"))
    data = model.read_bytes().replace(b"ZZZZ", b"\xff\xfe\xfd\xfc").replace(b"QQQQ", b"\xc3\x28ab").replace(b"WWWW", b"\x80\x81ab")
    model.write_bytes(data)
    result = compile_model(model, tmp_path / "o")
    assert (tmp_path / "o" / "plan.json").is_file()
    names = {node.name for node in result.model.graph}
    assert "r\\x80\\x81ab" in names  # the undecodable bytes written as \xNN


def test_dollar_signs_in_model_input_and_profile_names_compile_with_a_report(tmp_path, capsys):
    from splitc.cli.main import main

    profile = (Path(__file__).parents[1] / "splitc" / "profiles" / "rpi4.toml").read_text()
    lines = [('name = "$x^$"' if line.startswith("name =") else line) for line in profile.splitlines()]
    (tmp_path / "dollar.toml").write_text("\n".join(lines) + "\n")
    model = _relu_chain(tmp_path / "$m$.onnx", x="$x$", y="$y_1$", z="$z$", names=("$\\alpha$", "$\\beta^2$"), graph_name="$g$")
    assert main(["compile", str(model), "--target", f"{tmp_path / 'dollar.toml'},cloud", "-o", str(tmp_path / "o")]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "o" / "report_layers.png").stat().st_size > 0 and (tmp_path / "o" / "report_graph.png").is_file()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["nul", "folder", "fifo", "empty"])
def test_external_data_that_is_no_regular_file_is_one_line(tmp_path, kind):
    location = {"nul": "w\x00.bin", "folder": ".", "fifo": "pipe", "empty": ""}[kind]
    model = _external_model(tmp_path / "m", location=location)
    if kind == "fifo":
        os.mkfifo(tmp_path / "m" / "pipe")  # opening it for reading would wait for a writer forever
    with pytest.raises(SplitcError, match=r"tensor 'w': its external data (has no usable file name|'.*' is not a regular file)"):
        load_proto(model)
