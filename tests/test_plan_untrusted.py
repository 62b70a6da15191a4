"""plan.json is input, not code: paths stay inside the output folder, every field the runtime reads is checked, and
``splitc run`` answers a tampered plan, a foreign --model, a missing original and odd --input files with one line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from splitc.cli.main import main
from splitc.errors import SplitcError
from splitc.runtimes import SplitModel
from splitc.runtimes.planfile import MAX_ELEMENTS, MAX_TOTAL_BYTES, validate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """bottlenet (examples/) compiled for rpi4,cloud over 4g: head.onnx, tail.onnx, an int8 hop up, logits down."""
    root = tmp_path_factory.mktemp("compiled")
    model = root / "model.onnx"
    subprocess.run([sys.executable, str(REPO / "examples" / "make_example.py"), str(model)], check=True, capture_output=True)
    assert main(["compile", str(model), "--target", "rpi4,cloud", "--link", "4g", "-o", str(root / "out"), "-q", "--no-report"]) == 0
    return root


@pytest.fixture
def out(compiled, tmp_path) -> Path:
    shutil.copy(compiled / "model.onnx", tmp_path / "model.onnx")
    shutil.copytree(compiled / "out", tmp_path / "out")
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    plan["model"]["path"] = str(tmp_path / "model.onnx")
    (tmp_path / "out" / "plan.json").write_text(json.dumps(plan))
    return tmp_path / "out"


def tamper(out: Path, edit) -> None:
    plan = json.loads((out / "plan.json").read_text())
    plan = edit(plan) or plan
    (out / "plan.json").write_text(plan if isinstance(plan, str) else json.dumps(plan))  # str: the file's text


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splitc: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "dotdot-inside"])
def test_artifact_outside_the_folder_is_refused(out, how):
    outside = out.parent / "x.onnx"
    shutil.copy(out / "tail.onnx", outside)  # a loadable part: before the fix it was opened and run
    name = {"dotdot": "../x.onnx", "absolute": str(outside), "symlink": "link.onnx", "dotdot-inside": "sub/../../x.onnx"}[how]
    if how == "symlink":
        (out / "link.onnx").symlink_to(outside)
    tamper(out, lambda p: p["stages"][1].update(artifact=name))
    why = "is an absolute path" if how == "absolute" else "leaves the output folder"
    with pytest.raises(SplitcError, match=rf"^plan.json: stages\[1\].artifact '{name}' {why}"):
        SplitModel(out)


def test_symlink_inside_the_folder_is_fine(out):
    (out / "parts").mkdir()
    (out / "tail.onnx").rename(out / "parts" / "tail.onnx")
    (out / "tail-link.onnx").symlink_to(Path("parts") / "tail.onnx")
    tamper(out, lambda p: p["stages"][1].update(artifact="tail-link.onnx"))
    m = SplitModel(out)
    assert m.run({"image": np.zeros((1, 3, 224, 224), np.float32)}).outputs["logits"].shape == (1, 1000)


def tvm_record(library: str, stage: int, plan: dict) -> dict:
    s = plan["stages"][stage]
    return {"library": library, "target": {"kind": "llvm"}, "stage": stage, "device": "cpu",
            "inputs": [{"name": n, "dtype": "float32", "shape": [1]} for n in s["inputs"]],
            "outputs": [{"name": n, "dtype": "float32", "shape": [1]} for n in s["outputs"]]}


def test_tvm_library_outside_the_folder_is_never_loaded(out):
    evil = out.parent / "evil.so"
    evil.write_bytes(b"\x7fELF" + bytes(60))  # never opened: the plan is refused first
    tamper(out, lambda p: p.update(tvm_artifacts={"rpi4": tvm_record("head.so", 0, p), "cloud": tvm_record("../evil.so", 1, p)}))
    with pytest.raises(SplitcError, match=r"^plan.json: tvm_artifacts.cloud.library '../evil.so' leaves the output folder"):
        SplitModel(out, runtime="tvm")


def test_sweep_plan_outside_the_folder_is_refused(out):
    shutil.copytree(out, out.parent / "other")  # a valid plan folder next door: before the fix it was loaded
    sweep = {"range_bps": [1e6, 1e8], "intervals": [{"min_up_bps": 1e6, "max_up_bps": 1e8, "plan": "../other"}]}
    tamper(out, lambda p: p.update(sweep=sweep))
    with pytest.raises(SplitcError, match=r"^plan.json: sweep.intervals\[0\].plan '../other' leaves the output folder"):
        SplitModel.for_bandwidth(out, 5e6)


# --------------------------------------------------------------------------- fields


def _set(path: str, value):
    """An edit setting plan[path] (dotted, list indices as numbers) to value; value DELETE removes the key."""
    def edit(plan):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = plan
        for k in parents:
            node = node[k]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


DELETE = object()
TAMPERED = [  # (edit, the start of the one-line error after "splitc: error: ")  before: the exception it raised
    (_set("targets", DELETE), r"plan.json: targets None is not a list"),  # KeyError
    (_set("targets.0.name", ["x"]), r"plan.json: targets\[0\].name list is not a name"),  # TypeError
    (_set("stages.0.target", "mars"), r"plan.json: stages\[0\].target 'mars' is not one of rpi4, cloud"),  # KeyError
    (_set("stages.1.index", 0), r"plan.json: stages\[1\].index 0 is used by an earlier stage"),  # KeyError (tail's input)
    (_set("boundary.0.link", 5), r"plan.json: boundary\[0\].link 5 is not an integer in \[0, 0\]"),  # IndexError
    (_set("boundary.0.stage", 7), r"plan.json: boundary\[0\].stage 7 is not one of 0, 1"),  # KeyError
    (_set("boundary.0.from", DELETE), r"plan.json: boundary\[0\].from None is not one of rpi4, cloud"),  # KeyError
    (_set("boundary.0.raw_bytes", 1e308), r"plan.json: boundary\[0\].raw_bytes 1e\+308 is not an integer"),  # ran, exit 0
    (_set("boundary.0.wire.0.shape", "abc"), r"plan.json: boundary\[0\].wire\[0\].shape 'abc' is not a list"),  # CodecError
    (_set("boundary.0.wire.0.dtype", "object"), r"plan.json: boundary\[0\].wire\[0\].dtype 'object' is not a dtype"),
    (_set("boundary.0.wire.0.bits", 3), r"plan.json: boundary\[0\].wire\[0\].bits 3 is not one of 1, 2, 4, 8"),
    (_set("model.inputs.0.shape", [100000, 100000, 3, 8]), r"plan.json: model.inputs\[0\].shape \[100000, 100000, 3, 8\] has"
     r" 240000000000 elements, more than 2147483648"),  # tried to allocate 894 GiB
    (_set("model.inputs.0.shape", [-1, 3]), r"plan.json: model.inputs\[0\].shape\[0\] -1 is not an integer"),  # ValueError
    (_set("model.inputs.0.dtype", "string"), r"plan.json: model.inputs\[0\].dtype 'string' is not a dtype"),  # TypeError
    (_set("model.outputs", []), r"plan.json: model.outputs list has 0 items"),  # ran with no outputs
    (_set("model.sha256", 5), r"plan.json: model.sha256 5 is not a sha256"),
    (lambda p: json.dumps(p)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}", r".*plan.json: nested 5001 deep, more than the 32 allowed"),  # RecursionError
    (lambda p: [p], r"plan.json: the plan list is not an object"),  # TypeError
]


@pytest.mark.parametrize("edit, message", TAMPERED, ids=[m.split(":")[1].strip()[:40] for _, m in TAMPERED])
def test_tampered_plan_is_a_one_line_error_naming_the_field(out, capsys, edit, message):
    tamper(out, edit)
    code, _, err = run_cli(["run", str(out), "--samples", "1"], capsys)
    assert code == 2, err
    assert re.match(f"splitc: error: {message}", one_line_error(err)), err


def test_total_bytes_of_the_inputs_are_bounded(out):
    plan = json.loads((out / "plan.json").read_text())
    n = MAX_ELEMENTS // 2  # each input under the per-tensor bound, together over the total one
    plan["model"]["inputs"] = [{"name": f"x{i}", "dtype": "float32", "shape": [n]} for i in range(3)]
    with pytest.raises(SplitcError, match=rf"^plan.json: model.inputs add up to {3 * n * 4} bytes, more than {MAX_TOTAL_BYTES}"):
        validate(plan, out)
    plan["model"]["inputs"] = plan["model"]["inputs"][:1]
    validate(plan, out)  # one of them is fine


def test_compiled_plans_validate(out):
    """What the compiler writes passes the runtime's check (and the schema: tests/test_plan.py)."""
    plan = json.loads((out / "plan.json").read_text())
    assert validate(plan, out) is plan


# --------------------------------------------------------------------------- splitc run


def other_model(path: Path, name: str = "x", shape=(4, 16)) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", [name], ["logits"])], "g",
                              [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, list(shape))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("name, shape, theirs", [("x", (4, 16), r"x float32\[4, 16\]"), ("image", (1, 3, 32, 32), r"image float32\[1, 3, 32, 32\]")],
                         ids=["other-name", "other-shape"])
def test_run_with_a_model_of_other_inputs(out, capsys, name, shape, theirs):
    other = other_model(out.parent / "other.onnx", name, shape)
    code, _, err = run_cli(["run", str(out), "--model", str(other), "--samples", "1"], capsys)
    assert code == 2  # was 70: internal error (ValueError from onnxruntime)
    assert rf"its inputs ({theirs}) are not the plan's (image float32[1, 3, 224, 224])".replace("\\", "") in one_line_error(err)


def test_run_without_the_original_fails_unless_no_compare(out, capsys):
    (out.parent / "model.onnx").unlink()
    code, stdout, err = run_cli(["run", str(out), "--samples", "1"], capsys)
    assert code == 2  # was 0: "outputs not compared"
    assert "model.onnx not found: the split model's outputs cannot be compared" in one_line_error(err)
    assert "--no-compare" in err
    code, stdout, err = run_cli(["run", str(out), "--samples", "1", "--no-compare"], capsys)
    assert code == 0, err
    assert "outputs not compared with the original model (--no-compare)" in stdout


def test_run_with_npz_inputs(out, capsys):
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.savez(out.parent / "named.npz", image=x)
    np.savez(out.parent / "other.npz", frame=x)  # one array, one input: its name does not matter
    for spec in (out.parent / "named.npz", out.parent / "other.npz", f"image={out.parent / 'other.npz'}"):
        code, stdout, err = run_cli(["run", str(out), "--input", str(spec), "--json"], capsys)
        assert code == 0, err  # was 70: AttributeError ('NpzFile' has no shape)
        assert json.loads(stdout)["pass"] is True
    np.savez(out.parent / "two.npz", a=x, b=x)
    code, _, err = run_cli(["run", str(out), "--input", str(out.parent / "two.npz")], capsys)
    assert code == 2
    assert "two.npz holds a, b; the arrays must be named after the model's inputs: image" in one_line_error(err)


@pytest.mark.parametrize("array, message", [
    (np.full((1, 3, 224, 224), "abc"), "'image' holds <U3 values, not numbers; the input takes float32"),  # was ValueError
    (np.zeros((1, 3, 224, 224), np.complex64), "'image' holds complex64 values, not numbers"),
    (np.zeros((1, 3, 2, 2), np.float32), "'image' has shape [1, 3, 2, 2], but the plan was compiled for [1, 3, 224, 224]"),
], ids=["strings", "complex", "shape"])
def test_run_with_unusable_npy_is_one_line(out, capsys, array, message):
    np.save(out.parent / "in.npy", array)
    code, _, err = run_cli(["run", str(out), "--input", str(out.parent / "in.npy")], capsys)
    assert code == 2
    assert message in one_line_error(err)


def test_run_with_a_file_that_is_not_numpy(out, capsys):
    (out.parent / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(range(64)))  # a zip header, then garbage
    code, _, err = run_cli(["run", str(out), "--input", str(out.parent / "junk.npz")], capsys)
    assert code == 2
    assert "cannot read" in one_line_error(err)


@pytest.mark.parametrize("library", ["../evil.so", "/tmp/evil.so", "link.so"])
def test_tvm_library_path_stays_inside_without_planfile(tmp_path, library):
    """tvm.py's own guard (scripts/tvm_device_run.py loads tvm.py alone, without planfile)."""
    from splitc.runtimes.tvm import library_path

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link.so").symlink_to(tmp_path / "evil.so")
    with pytest.raises(SplitcError, match="leaves the output folder"):
        library_path(tmp_path / "out", {"library": library})
    assert library_path(tmp_path / "out", {"library": "head.so"}) == (tmp_path / "out" / "head.so").resolve()
