"""The command line as a user meets it: teaching help, one-line errors, whole-or-nothing output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from splitc.cli.main import main

try:
    from fixtures_text import assert_one_line_error
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import assert_one_line_error

RUN_ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def small_cnn(path: Path, dims=(1, 3, 32, 32)) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.2, "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc", *args], capture_output=True, text=True, cwd=cwd, env=RUN_ENV, timeout=300)


def test_help_teaches():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "compile" in proc.stdout and "start with: splitc compile" in proc.stdout
    sub = run_cli("compile", "--help")
    assert "examples:" in sub.stdout and "--input-shape" in sub.stdout and "splitc run out/" in sub.stdout
    run = " ".join(run_cli("run", "--help").stdout.split())  # --input takes image folders and .npz batches, not only .npy
    assert "a folder of images" in run and ".npz batch" in run


def test_compile_then_run_round_trip(tmp_path):
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    proc = run_cli("compile", str(model), "--link", "up=1Gbps,down=1Gbps,rtt=0.1ms", "--boundary", "fp32", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "predicted latency per frame" in proc.stdout and "chosen plan" in proc.stdout
    assert (out / "plan.json").is_file()
    run = run_cli("run", str(out), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["pass"] is True
    assert all(o["max_abs_error"] <= 1e-5 for o in report["outputs"])


def test_a_device_only_plan_is_checked_as_lossless_whatever_the_boundary(tmp_path, capsys):
    # nothing crosses a 1 kbit/s link, so the int8 boundary is never used: the head is the model and must match it;
    # judged by the lossy budget, a drifted head (a weight off by 1e-3) passed as "cosine >= 0.99"
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    assert main(["compile", str(model), "--link", "up=1kbps,down=1kbps,rtt=1s", "-o", str(out), "-q", "--no-report"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["boundary_codec"] == "int8" and plan["boundary"] == []
    assert main(["run", str(out), "--samples", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pass"] is True
    head = onnx.load(str(out / plan["artifacts"]["rpi4"]))
    w = head.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + np.float32(1e-3), w.name))
    onnx.save(head, str(out / plan["artifacts"]["rpi4"]))
    assert main(["run", str(out), "--samples", "2", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["pass"] is False


def test_json_summary_is_machine_readable(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    assert main(["compile", str(model), "-o", str(tmp_path / "o"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"predicted", "baselines", "cut", "artifacts"} <= set(summary)
    assert summary["predicted"]["total_s"] <= summary["baselines"]["device_only"]["total_s"] + 1e-12


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 10)
    assert_one_line_error(run_cli("compile", str(bad), "-o", str(tmp_path / "o")), "notes.onnx")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("keep", [0, 0.5])
def test_truncated_model(tmp_path, keep):
    good = small_cnn(tmp_path / "cnn.onnx")
    data = good.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert_one_line_error(run_cli("compile", str(cut), "-o", str(tmp_path / "o")), "cut.onnx")
    assert not (tmp_path / "o").exists()


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o")), "no such file")


def test_unknown_target_and_link(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    assert main(["compile", str(model), "--target", "rpi5,cloud", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'rpi5'" in err and "rpi4" in err
    assert main(["compile", str(model), "--link", "5g", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown link '5g'" in err and "4g" in err
    assert main(["compile", str(model), "--link", "up=fast,down=1Mbps,rtt=1ms", "-o", str(tmp_path / "o")]) == 2
    assert "cannot read up 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_input_shape_names_every_symbolic_input(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "sym.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["compile", str(path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "a [Nx3]" in err and "b [Nx3]" in err and "--input-shape" in err
    assert main(["compile", str(path), "--input-shape", "a=2x3,b=2x3", "-o", str(tmp_path / "o")]) == 0


def test_bad_input_shape_syntax(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    assert main(["compile", str(model), "--input-shape", "x=1by3", "-o", str(tmp_path / "o")]) == 2
    assert "NAME=DxDxD" in capsys.readouterr().err


def test_op_without_cost_rule_warns_once_and_compiles(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"], name="det1"), helper.make_node("Det", ["x"], ["e"], name="det2"),
         helper.make_node("Add", ["d", "e"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["compile", str(path), "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    warnings_ = [l for l in err.splitlines() if "no cost rule for op 'Det'" in l]
    assert len(warnings_) == 1 and warnings_[0].startswith("splitc: warning:") and "2 nodes" in warnings_[0]


def test_existing_output_dir_is_left_alone(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compile", str(model), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and "--force" in capsys.readouterr().err + "--force"
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["compile", str(model), "-o", str(out), "--force", "-q"]) == 2  # not a directory splitc wrote
    assert "not an output of splitc" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    out.rmdir()
    assert main(["compile", str(model), "-o", str(out), "-q"]) == 0
    assert main(["compile", str(model), "-o", str(out), "--force", "-q"]) == 0  # splitc's own output is replaced
    (out / "keep.txt").write_text("mine")  # ... but not a file a user put in it (tests/test_force.py)
    assert main(["compile", str(model), "-o", str(out), "--force", "-q"]) == 2
    assert "keep.txt" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    calls = {"n": 0}
    real_save = onnx.save_model

    def flaky_save(proto, path, *a, **k):
        calls["n"] += 1
        real_save(proto, path, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", flaky_save)
    assert main(["compile", str(model), "-o", str(tmp_path / "out"), "-q"]) == 2  # the OS said no: one line, not a bug
    assert calls["n"] == 1
    assert [l for l in capsys.readouterr().err.splitlines() if l.startswith("splitc:")] == [
        f"splitc: error: {tmp_path / 'out'}: cannot write it: disk full"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]  # no out/, no temp dir


def test_run_errors_are_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 2
    assert "no plan.json" in capsys.readouterr().err
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "-q"]) == 0
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 16, 16), np.float32))
    assert main(["run", str(out), "--input", str(tmp_path / "wrong.npy")]) == 2
    assert "compiled for [1, 3, 32, 32]" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.ones((1, 3, 32, 32), np.float32))
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    (tmp_path / "notes.txt").write_text("a text file\n")  # np.load called it "pickled (object) data"
    assert main(["run", str(out), "--input", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "pickle" not in err and "give an image" in err and len(err.strip().splitlines()) == 1


def test_run_detects_a_changed_original(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "-q"]) == 0
    small_cnn(model, dims=(1, 3, 32, 32))  # same content: still fine
    assert main(["run", str(out), "--samples", "1"]) == 0
    model.write_bytes(model.read_bytes() + b"\x00")
    assert main(["run", str(out)]) == 2
    assert "changed since it was compiled" in capsys.readouterr().err


def test_inspect_and_targets(tmp_path, capsys):
    model = small_cnn(tmp_path / "cnn.onnx")
    assert main(["inspect", str(model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    conv1 = next(n for n in data["nodes"] if n["name"] == "conv1")
    assert conv1["flops"] == 2 * 8 * 32 * 32 * 3 * 3 * 3
    assert conv1["latency_s"]["rpi4"] > conv1["latency_s"]["cloud"] > 0
    assert main(["inspect", str(model), "--sort", "latency", "--top", "2"]) == 0
    assert "whole model: rpi4" in capsys.readouterr().out
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    assert "jetson-nano" in text and "Neurosurgeon" in text


def bottlenet_file(tmp_path):
    from splitc.tools import zoo

    path = tmp_path / "bottlenet.onnx"
    onnx.save(zoo.bottlenet(), path)
    return path


def test_partitioner_flags(tmp_path, capsys):
    model = bottlenet_file(tmp_path)
    assert main(["compile", str(model), "--link", "wifi", "--objective", "energy", "-o", str(tmp_path / "e"), "--json", "--no-report"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["predicted"]["energy_j"] <= min(b["energy_j"] for b in summary["baselines"].values()) * (1 + 1e-9)
    assert main(["compile", str(model), "--link", "wifi", "--deadline", "1ms", "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splitc: error: no plan meets --deadline 1.000ms: the smallest feasible value is") and "\n" not in err
    assert not (tmp_path / "d").exists()
    assert main(["compile", str(model), "--max-device-memory", "12XB", "-o", str(tmp_path / "m")]) == 2
    assert "--max-device-memory '12XB'" in capsys.readouterr().err
    assert main(["compile", str(model), "--target", "rpi4,jetson-nano,cloud", "--link", "wifi,4g,3g", "-o", str(tmp_path / "t")]) == 2
    assert "3 tiers need 2 link(s)" in capsys.readouterr().err


def test_three_tiers_and_sweep_through_the_cli(tmp_path, capsys):
    model = bottlenet_file(tmp_path)
    out = tmp_path / "three"
    assert main(["compile", str(model), "--target", "rpi4,jetson-nano,cloud", "--link", "wifi,4g", "-o", str(out), "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "rpi4 -[wifi]-> jetson-nano -[4g]-> cloud" in text and "jetson-nano" in text.split("predicted")[1]
    plan = json.loads((out / "plan.json").read_text())
    assert [t["role"] for t in plan["targets"]] == ["device", "edge", "server"]
    assert main(["run", str(out), "--samples", "1"]) == 0
    capsys.readouterr()
    sweep = tmp_path / "sweep"
    assert main(["compile", str(model), "--link", "wifi", "--sweep-bandwidth", "0.5:500Mbps", "-o", str(sweep), "--no-report"]) == 0
    assert "bandwidth sweep" in capsys.readouterr().out
    intervals = json.loads((sweep / "plan.json").read_text())["sweep"]["intervals"]
    assert len(intervals) >= 2 and all((sweep / i["plan"] / "plan.json").is_file() for i in intervals)
    assert main(["run", str(sweep / intervals[-1]["plan"]), "--samples", "1"]) == 0


def test_stream_mode_delta_codes_hops_without_changing_results(tmp_path, capsys):
    from splitc.runtimes import SplitModel
    from splitc.runtimes.ort import synthetic_inputs

    model = bottlenet_file(tmp_path)
    out = tmp_path / "o"
    assert main(["compile", str(model), "--link", "wifi", "-o", str(out), "-q", "--no-report"]) == 0
    plain, streamed = SplitModel(out), SplitModel(out).stream(key_interval=4)
    base = synthetic_inputs(plain.inputs)
    frames = [{k: np.roll(v, t, axis=-1) for k, v in base.items()} for t in range(6)]
    for frame in frames:  # delta coding is lossless on the symbols: the results must not change
        a, b = plain.run(frame), streamed.run(frame)
        for name in a.outputs:
            assert np.array_equal(a.outputs[name], b.outputs[name])
    assert main(["run", str(out), "--stream", "--samples", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pass"] is None  # an int8 cut on synthetic inputs: it runs, no verdict


def test_run_samples_is_bounded_one_line(tmp_path, capsys):
    # --samples 100000000 made every synthetic sample up front and the OOM killer ended the run (24 GB on MobileNetV2);
    # --samples 0 silently ran one
    model = small_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "-q", "--no-report"]) == 0
    for n in ("0", "100000000"):
        assert main(["run", str(out), "--samples", n]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"splitc: error: --samples {n}: give 1 to ") and len(err.splitlines()) == 1
    assert main(["run", str(out), "--samples", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3
    assert main(["run", str(out), "--samples", "3"]) == 0
    table = capsys.readouterr().out  # the column is the worst sample's cosine, beside a mean cosine in the budget line
    assert "worst cosine" in table and "over 3 sample(s)" in " ".join(table.split())
