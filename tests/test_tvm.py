"""TVM artifacts (``--emit onnx,tvm``): each part compiled for its tier, run, and checked against onnxruntime.

A small bottlenet is split mid-graph (at its bottleneck, over a 10 Gbps link) and its parts are
compiled with TVM. On this machine (x86): head and tail libraries give the ONNX parts' outputs in
onnxruntime within 1e-4 (int8 and fp32 boundaries, and the basic-op quantizer of opset 10), end to
end too. The rpi4 head is an aarch64 ELF; the slow test runs it under qemu-aarch64 (Cortex-A72) in
a Debian arm64 root (scripts/setup_arm64_root.sh), then decodes what it sent and runs the x86 tail.
Without TVM, ``--emit tvm`` and ``--runtime tvm`` are one-line errors and everything else works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from conftest import REPO, save_model

from splitc.tools import zoo
from splitc.cli.main import main
from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcError
from splitc.runtimes.wire import decode
from splitc.runtimes.ort import SplitModel, session, synthetic_inputs
from splitc.runtimes.tvm import compare_parts

CROSS_CXX = "aarch64-linux-gnu-g++"
ARM64_ROOT = Path(os.environ.get("SPLITC_ARM64_ROOT", "/var/cache/splitc-arm64"))


def _missing_tvm() -> str | None:
    try:
        import tvm  # noqa: F401
    except ImportError as e:
        return f"apache-tvm is not importable ({e}): pip install 'splitc[tvm]'"
    return None


def _missing_cross() -> str | None:
    return _missing_tvm() or (None if shutil.which(CROSS_CXX) else f"{CROSS_CXX} not installed: apt-get install g++-aarch64-linux-gnu")


def _missing_arm64() -> str | None:
    if _missing_cross():
        return _missing_cross()
    if _qemu() is None:
        return "qemu-aarch64 not installed: apt-get install qemu-user-static"
    if not (_arm64_python().is_file() and (ARM64_ROOT / "site" / "tvm").is_dir()):
        return f"no arm64 root at {ARM64_ROOT} (SPLITC_ARM64_ROOT): run scripts/setup_arm64_root.sh as root"
    return None


def _require(reason: str | None, variable: str) -> None:
    """Skip for ``reason``; fail instead where CI sets ``variable`` (it installs what these tests need)."""
    if reason is not None:
        (pytest.fail if os.environ.get(variable) else pytest.skip)(f"{reason} ({variable}=1 makes this a failure)")


@pytest.fixture
def tvm_installed():
    _require(_missing_tvm(), "SPLITC_REQUIRE_TVM")


@pytest.fixture
def cross_toolchain():
    _require(_missing_cross(), "SPLITC_REQUIRE_TVM")


needs_tvm = pytest.mark.usefixtures("tvm_installed")
needs_cross = pytest.mark.usefixtures("cross_toolchain")
FAST_LINK = "up=10Gbps,down=10Gbps,rtt=0.01ms"  # splits bottlenet at its bottleneck
ATOL = 1e-4
RPI4 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
EM_X86_64, EM_AARCH64 = 62, 183
CASES = {"int8": ("int8", 17), "fp32": ("fp32", 17), "int8-opset10": ("int8", 10)}


def small_bottlenet(opset: int = 17) -> onnx.ModelProto:
    return zoo.bottlenet(size=64, classes=10, width=32, depth=2, opset=opset)


def elf_header(path: Path) -> tuple[int, int]:
    """(EI_CLASS, e_machine) from an ELF header, as `file` reads them."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path.name} is not an ELF file"
    order = "little" if head[5] == 1 else "big"
    return head[4], int.from_bytes(head[18:20], order)


def assert_part_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], label: str) -> int:
    """TVM part outputs vs onnxruntime's on the same inputs, as splitc.runtimes.tvm.compare_parts judges:
    within 1e-4 x max(1, |ref|); an int8 wire tensor dequantized, where at most a few elements (rounding
    ties tipped by float noise) may be one step off. Returns how many were."""
    from splitc.runtimes.tvm import check_output

    assert set(got) == set(ref), f"{label}: outputs {sorted(got)} vs {sorted(ref)}"
    steps_off = 0
    for name, r in ref.items():
        assert got[name].shape == r.shape and got[name].dtype == r.dtype, f"{label} {name}: {got[name].dtype}{got[name].shape} vs {r.dtype}{r.shape}"
        c = check_output(0, label, name, got, ref)
        assert c.passed, f"{label} {name}: TVM differs from onnxruntime by {c.max_abs:.3g} (|ref| {c.max_ref:.3g}, {c.flips} steps off)"
        steps_off += c.flips if name.endswith("__q") else 0
    return steps_off


def assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], label: str) -> None:
    """Model outputs: within 1e-4 x max(1, |ref|)."""
    assert set(got) == set(ref), f"{label}: outputs {sorted(got)} vs {sorted(ref)}"
    for name, r in ref.items():
        err = float(np.max(np.abs(got[name].astype(np.float64) - r.astype(np.float64))))
        assert err <= ATOL * max(1.0, float(np.max(np.abs(r)))), f"{label} {name}: TVM differs from onnxruntime by {err:.3g}"


def ort_part(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(path, "disable")
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})))


def tvm_part(out: Path, plan: dict, stage: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from splitc.runtimes.tvm import TVMPart, records

    record = next(r for r in records(plan) if r["stage"] == stage)
    part = TVMPart(out / record["library"], record)
    names = [v.name for v in part.get_outputs()]
    return dict(zip(names, part.run(names, feeds)))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """case -> (output dir, plan): the parts compiled with TVM for this machine (head) and x86 llvm (tail)."""
    root = tmp_path_factory.mktemp("tvm")
    cache = {}

    def get(case: str):
        if case not in cache:
            boundary, opset = CASES[case]
            model = save_model(small_bottlenet(opset), root / f"bottlenet{opset}.onnx")
            out = root / case
            result = compile_model(model, out, CompileOptions(link=FAST_LINK, boundary=boundary, emit="onnx,tvm", device_target="host"))
            cache[case] = (out, result.plan)
        return cache[case]

    return get


@needs_tvm
@pytest.mark.parametrize("case", list(CASES))
def test_x86_parts_match_onnxruntime(compiled, case):
    out, plan = compiled(case)
    assert plan["cut"] == ["bottleneck"], "the test needs a mid-graph split"
    on_disk = json.loads((out / "plan.json").read_text())
    assert on_disk["tvm_artifacts"] == plan["tvm_artifacts"]
    jsonschema.validate(on_disk, json.loads((resources.files("splitc") / "schema" / "plan.schema.json").read_text()))
    head, tail = plan["tvm_artifacts"]["rpi4"], plan["tvm_artifacts"]["cloud"]
    assert (head["library"], head["stage"], head["arch"]) == ("head.tvm.so", 0, "x86_64")
    assert (tail["library"], tail["stage"], tail["target"]) == ("tail.tvm.so", 1, {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})
    for record in (head, tail):
        assert elf_header(out / record["library"]) == (2, EM_X86_64)

    x = synthetic_inputs(plan["model"]["inputs"], seed=3)
    ref_head = ort_part(out / "head.onnx", x)
    steps_off = assert_part_close(tvm_part(out, plan, 0, x), ref_head, f"{case} head")
    if plan["boundary_codec"] == "int8":
        assert ref_head["bottleneck__q"].dtype == np.uint8 and ref_head["bottleneck__q"].std() > 10, "a real quantized tensor"
        assert steps_off <= 1, steps_off
    # the tail on exactly what onnxruntime's head sent: the tail alone is compared
    ref_tail = ort_part(out / "tail.onnx", ref_head)
    assert_part_close(tvm_part(out, plan, 1, ref_head), ref_tail, f"{case} tail")


@needs_tvm
@pytest.mark.parametrize("case", ["int8", "fp32"])
def test_split_model_runs_tvm_libraries_end_to_end(compiled, case):
    out, plan = compiled(case)
    tvm_model, ort_model = SplitModel(out, runtime="tvm"), SplitModel(out)
    assert {type(s).__name__ for s in tvm_model.sessions.values()} == {"TVMPart"}
    for seed in range(3):
        x = synthetic_inputs(tvm_model.inputs, seed)
        checks = compare_parts(tvm_model, ort_model, x)
        assert [(c.library, c.name) for c in checks if c.name.endswith(("__q", "logits", "bottleneck"))] == \
            [("head.tvm.so", "bottleneck__q" if case == "int8" else "bottleneck"), ("tail.tvm.so", "logits")]
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        got, ref = tvm_model.run(x), ort_model.run(x)
        if not any(c.flips for c in checks):  # the same wire: the same results end to end
            assert_close(got.outputs, ref.outputs, f"{case} end to end")
        assert got.bytes_up > 0 and abs(got.bytes_up - ref.bytes_up) <= 16, (got.bytes_up, ref.bytes_up)


@needs_tvm
def test_recompiling_into_the_same_directory_loads_the_new_libraries(tmp_path):
    """dlopen hands back a library already loaded from the same path: a --force recompile must not run the old one."""
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    x = synthetic_inputs([{"name": "image", "dtype": "float32", "shape": [1, 3, 64, 64]}])
    for boundary in ("int8", "fp32"):
        compile_model(model, out, CompileOptions(link=FAST_LINK, boundary=boundary, emit="onnx,tvm", device_target="host"), force=True)
        checks = compare_parts(SplitModel(out, runtime="tvm"), SplitModel(out), x)
        assert all(c.passed for c in checks) and {c.library for c in checks} == {"head.tvm.so", "tail.tvm.so"}
        assert ("bottleneck__q" in {c.name for c in checks}) == (boundary == "int8"), "the new head, not the one loaded before"


@needs_tvm
def test_cli_run_runtime_tvm(compiled, capsys):
    out, _ = compiled("int8")
    assert main(["run", str(out), "--runtime", "tvm", "--samples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runtime"] == "tvm" and report["pass"] is True
    rows = {(o["library"], o["output"]): o for o in report["vs_onnxruntime"]}
    assert set(rows) == {("head.tvm.so", "bottleneck__q"), ("head.tvm.so", "bottleneck__scale"),
                         ("head.tvm.so", "bottleneck__zero_point"), ("tail.tvm.so", "logits")}
    assert all(o["pass"] for o in rows.values()) and rows["tail.tvm.so", "logits"]["max_abs_error"] <= ATOL
    assert report["outputs"][0]["cosine"] >= 0.99


@needs_tvm
def test_cli_compile_emit_tvm(tmp_path, capsys):
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    code = main(["compile", str(model), "--link", FAST_LINK, "--emit", "onnx,tvm", "--device-target", "host",
                 "--boundary", "fp32", "-o", str(tmp_path / "out"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(r["library"] for r in summary["tvm_artifacts"].values()) == ["head.tvm.so", "tail.tvm.so"]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"head.onnx", "tail.onnx", "head.tvm.so", "tail.tvm.so", "plan.json"}
    assert main(["run", str(tmp_path / "out"), "--runtime", "tvm", "--samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "head.tvm.so on rpi4 (TVM)" in printed and "TVM libraries vs onnxruntime parts" in printed and "check passed" in printed


@needs_tvm
@needs_cross
def test_rpi4_head_is_an_aarch64_library(tmp_path):
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    plan = compile_model(model, out, CompileOptions(link=FAST_LINK, emit="onnx,tvm")).plan
    head, tail = plan["tvm_artifacts"]["rpi4"], plan["tvm_artifacts"]["cloud"]
    assert head["target"] == RPI4 and head["arch"] == "aarch64"
    assert elf_header(out / head["library"]) == (2, EM_AARCH64), "rpi4 head: 64-bit ELF for aarch64"
    assert elf_header(out / tail["library"]) == (2, EM_X86_64), "cloud tail: 64-bit ELF for x86-64"
    with pytest.raises(SplitcError, match="compiled for aarch64.*this machine is x86_64"):
        SplitModel(out, runtime="tvm")
    SplitModel(out).run(synthetic_inputs(plan["model"]["inputs"]))  # the ONNX parts are there as ever


@needs_tvm
def test_tvm_options_are_checked_before_compiling(tmp_path, monkeypatch):
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    out = tmp_path / "out"

    def compile_(**kw):
        return compile_model(model, out, CompileOptions(link=FAST_LINK, **kw))

    with pytest.raises(SplitcError, match="--emit 'onnx,dlc'"):
        compile_(emit="onnx,dlc")
    with pytest.raises(SplitcError, match="--cloud-target 'tpu'"):
        compile_(emit="onnx,tvm", cloud_target="tpu")
    with pytest.raises(SplitcError, match="needs a 'kind'"):
        compile_(emit="onnx,tvm", device_target='{"mcpu": "cortex-a72"}')
    profile = tmp_path / "mydev.toml"
    profile.write_text((REPO / "splitc" / "profiles" / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "mydev"'))
    with pytest.raises(SplitcError, match="no TVM target is known for device profile 'mydev'"):
        compile_model(model, out, CompileOptions(target=f"{profile},cloud", link=FAST_LINK, emit="onnx,tvm"))
    assert not out.exists()

    import platform

    import splitc.codegen.tvm as codegen

    with monkeypatch.context() as m:  # an x86 machine without the aarch64 toolchain
        m.setattr(platform, "machine", lambda: "x86_64")
        m.setattr(codegen.shutil, "which", lambda _cmd: None)
        with pytest.raises(SplitcError, match="cross toolchain 'aarch64-linux-gnu-g\\+\\+' is not installed: apt-get install g\\+\\+-aarch64-linux-gnu"):
            compile_(emit="onnx,tvm")

    def broken(*_a, **_k):
        raise SplitcError("TVM could not compile head.onnx")

    monkeypatch.setattr(codegen, "compile_parts", broken)
    with pytest.raises(SplitcError, match="could not compile"):
        compile_(emit="onnx,tvm", device_target="host")
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), "a failed TVM build leaves nothing behind"


BLOCK_TVM = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tvm":
                raise ImportError(f"No module named {name!r}")
    sys.meta_path.insert(0, Block())
    from splitc.cli.main import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def test_without_tvm_emit_and_runtime_tvm_are_clean_errors(tmp_path):
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")

    def cli(*args):
        return subprocess.run([sys.executable, "-c", BLOCK_TVM, *args], capture_output=True, text=True, timeout=300)

    proc = cli("compile", str(model), "--link", FAST_LINK, "--emit", "onnx,tvm", "-o", str(tmp_path / "a"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("splitc: error: --emit tvm needs Apache TVM")
    assert "pip install 'splitc[tvm]'" in proc.stderr and not (tmp_path / "a").exists()

    proc = cli("compile", str(model), "--link", FAST_LINK, "-o", str(tmp_path / "b"), "-q")
    assert proc.returncode == 0, proc.stderr
    proc = cli("run", str(tmp_path / "b"), "--samples", "1")
    assert proc.returncode == 0 and ("check passed" in proc.stdout or "no verdict" in proc.stdout), proc.stderr  # runs without TVM
    proc = cli("run", str(tmp_path / "b"), "--runtime", "tvm")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "compiled without TVM libraries; recompile with --emit onnx,tvm" in proc.stderr


def test_without_tvm_runtime_tvm_names_the_extra(tmp_path):
    """A directory with TVM libraries, on a machine without TVM: --runtime tvm says what to install."""
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    compile_model(model, out, CompileOptions(link=FAST_LINK))
    plan = json.loads((out / "plan.json").read_text())
    (out / "head.tvm.so").write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])  # an ELF of this machine's arch
    plan["tvm_artifacts"] = {"rpi4": {"library": "head.tvm.so", "stage": 0, "device": "cpu", "inputs": [], "outputs": [],
                                      "target": {"kind": "llvm"}}}
    (out / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, "-c", BLOCK_TVM, "run", str(out), "--runtime", "tvm"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--runtime tvm needs Apache TVM" in proc.stderr and "pip install 'splitc[tvm]'" in proc.stderr


# -- the Raspberry Pi 4 head under emulation ----------------------------------------------------------------


def _qemu() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def _arm64_python() -> Path:
    return ARM64_ROOT / "rootfs" / "usr" / "bin" / "python3.11"


@pytest.mark.slow
def test_rpi4_head_runs_under_qemu_aarch64_and_matches_onnxruntime(tmp_path):
    _require(_missing_arm64(), "SPLITC_REQUIRE_ARM64")
    model = save_model(small_bottlenet(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    plan = compile_model(model, out, CompileOptions(link=FAST_LINK, boundary="int8", emit="onnx,tvm")).plan
    assert plan["tvm_artifacts"]["rpi4"]["target"] == RPI4 and plan["cut"] == ["bottleneck"]
    x = synthetic_inputs(plan["model"]["inputs"], seed=5)
    np.savez(tmp_path / "in.npz", **x)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ARM64_ROOT / "site"), "TVM_USE_RUNTIME_LIB": "1",
           "TVM_NUM_THREADS": "1", "HOME": str(tmp_path)}
    cmd = [_qemu(), "-cpu", "cortex-a72", "-L", str(ARM64_ROOT / "rootfs"), str(_arm64_python()),
           str(REPO / "scripts" / "tvm_device_run.py"), str(out), "--stage", "0", "--inputs", str(tmp_path / "in.npz"),
           "--outputs", str(tmp_path / "head_out.npz"), "--payload", str(tmp_path / "up.bin")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["machine"] == "aarch64" and report["target"] == RPI4

    with np.load(tmp_path / "head_out.npz") as data:
        emulated = {k: data[k] for k in data.files}
    ref_head = ort_part(out / "head.onnx", x)
    steps_off = assert_part_close(emulated, ref_head, "aarch64 head (qemu) vs onnxruntime head (x86)")

    # what the emulated Pi sent, decoded on the server and run by the x86 tail library
    up = [b for b in plan["boundary"] if b["stage"] == 0]
    received = decode((tmp_path / "up.bin").read_bytes(), {w["name"]: (w["dtype"], tuple(w["shape"])) for b in up for w in b["wire"]})
    assert all(np.array_equal(received[k], emulated[k]) for k in received), "the payload carries what the head computed"
    tail = tvm_part(out, plan, 1, received)
    assert_part_close(tail, ort_part(out / "tail.onnx", received), "x86 tail (TVM) vs onnxruntime tail on the payload")
    if steps_off == 0:  # then the whole emulated split reproduces onnxruntime's split
        assert_close({"logits": tail["logits"]}, SplitModel(out).run(x).outputs, "aarch64 head -> x86 tail vs onnxruntime split")
