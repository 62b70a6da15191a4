"""Writers that replace or create outputs never lose data: --force replaces only a directory splitc wrote, never
one holding the input model or the current directory, never through a symlink; SIGTERM and OS errors leave no
temporary directories; outputs follow the umask; profile and bench never write through a predictable temp name."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from splitc.cli.main import main
from splitc.tools import zoo

try:
    from fixtures_text import assert_one_line_error
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import assert_one_line_error

RUN_ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "chain.onnx"
    onnx.save(zoo.chain(), str(path))
    return path


def splitc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc", *args], check=False, capture_output=True, text=True, cwd=cwd, env=RUN_ENV,
                          timeout=300)


def one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    return assert_one_line_error(proc, *needles, code=2)


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every path under ``directory`` (links as their target, files as their bytes)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(directory.rglob("*")):
        key = str(p.relative_to(directory))
        out[key] = f"-> {os.readlink(p)}" if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".tmp"))


def compiled(model: Path, out: Path) -> Path:
    assert main(["compile", str(model), "-o", str(out), "-q", "--no-report"]) == 0
    return out


# -- what --force may replace ---------------------------------------------------------------------------------


def test_force_on_the_current_project_folder_is_refused(tmp_path, chain_model):
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.onnx").write_bytes(chain_model.read_bytes())
    (project / "train.py").write_text("print('my sources')\n")
    before = snapshot(project)
    one_error(splitc("compile", "model.onnx", "-o", ".", "--force", "-q", cwd=project), "--force")
    assert snapshot(project) == before
    assert leftovers(tmp_path) == []


def test_force_on_a_splitc_output_holding_the_model_or_the_cwd_is_refused(tmp_path, chain_model):
    out = compiled(chain_model, tmp_path / "out")
    (out / "model.onnx").write_bytes(chain_model.read_bytes())  # a splitc dir, but the input lives in it
    before = snapshot(out)
    one_error(splitc("compile", "out/model.onnx", "-o", "out", "--force", "-q", cwd=tmp_path), "model.onnx")
    assert snapshot(out) == before
    (out / "model.onnx").unlink()
    (out / "cal.npz").write_bytes(b"calibration data")
    one_error(splitc("compile", str(chain_model), "-o", "out", "--force", "--boundary", "int8-static", "--calibrate",
                     "out/cal.npz", "-q", cwd=tmp_path), "cal.npz")
    (out / "cal.npz").unlink()
    (out / "work").mkdir()
    before = snapshot(out)
    one_error(splitc("compile", str(chain_model), "-o", "..", "--force", "-q", cwd=out / "work"), "current directory")
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_force_through_a_symlink_never_touches_its_target(tmp_path, chain_model):
    victim = compiled(chain_model, tmp_path / "victim")  # even a splitc directory is not replaced through a link
    (victim / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    assert main(["compile", str(chain_model), "-o", str(link), "--force", "-q"]) == 2
    assert snapshot(victim) == before and link.is_symlink() and os.readlink(link) == str(victim)
    assert leftovers(tmp_path) == []


def test_a_dangling_symlink_as_output_is_refused_not_followed(tmp_path, chain_model, capsys):
    target = tmp_path / "elsewhere" / "secret"
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "out"
    link.symlink_to(target)
    for force in ([], ["--force"]):
        assert main(["compile", str(chain_model), "-o", str(link), "-q", *force]) == 2
        assert "symbolic link" in capsys.readouterr().err
        assert not target.exists() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]


def test_force_on_a_regular_file_or_a_foreign_directory_is_refused(tmp_path, chain_model, capsys):
    afile = tmp_path / "afile.txt"
    afile.write_text("precious")
    assert main(["compile", str(chain_model), "-o", str(afile), "--force", "-q"]) == 2
    assert "not a directory" in capsys.readouterr().err and afile.read_text() == "precious"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "plan.json").write_text(json.dumps({"schema": "someone.else/1"}))
    (foreign / "data.bin").write_bytes(b"\0" * 10)
    before = snapshot(foreign)
    assert main(["compile", str(chain_model), "-o", str(foreign), "--force", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not an output of splitc" in err and len(err.strip().splitlines()) == 1
    assert snapshot(foreign) == before
    assert leftovers(tmp_path) == []


def test_force_replaces_a_directory_splitc_wrote(tmp_path, chain_model):
    out = compiled(chain_model, tmp_path / "out")
    (out / "head.onnx").write_bytes(b"stale")
    assert main(["compile", str(chain_model), "-o", str(out), "--force", "-q", "--no-report"]) == 0
    onnx.checker.check_model(str(out / "head.onnx"))
    assert leftovers(tmp_path) == []


# -- interrupted and failed writes ------------------------------------------------------------------------------


def test_force_keeps_a_splitc_output_holding_a_users_file(tmp_path, chain_model, capsys):
    # a user's notes dropped into a compiled folder: --force would have deleted them with the folder
    out = compiled(chain_model, tmp_path / "out")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("precious")
    before = snapshot(out)
    assert main(["compile", str(chain_model), "-o", str(out), "--force", "-q", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "sub/notes.txt" in err and "did not write" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before and leftovers(tmp_path) == []
    # what splitc writes stays replaceable: the report, and a sweep's plans/<i>/ named by their own plan.json
    sweep = ["compile", str(chain_model), "-o", str(tmp_path / "sweep"), "-q", "--sweep-bandwidth", "0.5:200Mbps"]
    assert main(sweep) == 0 and (tmp_path / "sweep" / "plans").is_dir() and (tmp_path / "sweep" / "report.html").is_file()
    assert main([*sweep, "--force"]) == 0


def test_a_directory_that_cannot_be_renamed_is_one_line_and_leaves_nothing(tmp_path, chain_model, monkeypatch, capsys):
    out = compiled(chain_model, tmp_path / "out")
    before = snapshot(out)
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(src) == out:
            raise PermissionError(13, "Permission denied", str(src))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["compile", str(chain_model), "-o", str(out), "--force", "-q", "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splitc: error:") and "Permission denied" in err[0]
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_an_output_under_a_file_is_a_one_line_error(tmp_path, chain_model, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["compile", str(chain_model), "-o", str(tmp_path / "afile" / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splitc: error:") and "afile" in err[0]


@pytest.mark.parametrize("replace,mid_write", [(False, False), (True, False), (False, True)],
                         ids=["new-at-start", "force-at-start", "new-mid-write"])
def test_sigterm_mid_write_leaves_no_temporary_directory(tmp_path, replace, mid_write):
    model = tmp_path / "r18.onnx"
    onnx.save(zoo.resnet18(), str(model))  # 47 MB of weights: saving and checking the parts takes a while
    out = tmp_path / "out"
    if replace:
        compiled(model, out)
    before = snapshot(out) if replace else None
    proc = subprocess.Popen([sys.executable, "-m", "splitc", "compile", str(model), "-o", str(out), "-q", "--force"],
                            cwd=tmp_path, env=RUN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None, f"compile ended before it wrote anything: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    if mid_write:  # the first part is on disk: the checker, the plan and the report are still to come (a fixed
        # delay raced a quiet machine's whole write and hit the interpreter's exit)
        while not any(True for d in tmp_path.glob(".out.tmp-*") for _ in d.glob("*.onnx")):
            assert proc.poll() is None, f"compile ended before it wrote a part: {proc.communicate()}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert leftovers(tmp_path) == [], err
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "terminated by SIGTERM" in err
    assert (snapshot(out) == before) if replace else not out.exists()


# -- permissions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o027, 0o750)])
def test_output_directory_follows_the_umask(tmp_path, chain_model, umask, mode):
    previous = os.umask(umask)
    try:
        out = compiled(chain_model, tmp_path / "out")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert stat.S_IMODE((out / "plan.json").stat().st_mode) == mode & 0o666


# -- profile and bench: no predictable temp file -----------------------------------------------------------------


def test_profile_never_writes_through_a_planted_temp_link(tmp_path, chain_model):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".box.toml.tmp").symlink_to(victim)
    proc = subprocess.run([sys.executable, "-m", "splitc", "profile", str(chain_model), "--name", "box", "-o", "box.toml",
                           "--runs", "3", "--warmup", "0", "--no-calibration", "-q"],
                          check=False, capture_output=True, text=True, cwd=tmp_path, env=RUN_ENV, timeout=300,
                          preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    assert "[measured]" in (tmp_path / "box.toml").read_text()
    assert stat.S_IMODE((tmp_path / "box.toml").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".box.toml.tmp", "box.toml", "victim.txt"]


def test_profile_force_refuses_a_directory(tmp_path, chain_model):
    (tmp_path / "d.toml").mkdir()
    (tmp_path / "d.toml" / "keep").write_text("x")
    one_error(splitc("profile", str(chain_model), "--name", "d", "-o", "d.toml", "--force", "--runs", "1", "--warmup", "0",
                     "--no-calibration", "-q", cwd=tmp_path), "d.toml")
    assert (tmp_path / "d.toml" / "keep").read_text() == "x"


def test_bench_output_never_writes_through_planted_links(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victims = {name: tmp_path / f"victim_{name}" for name in ("bench.md", "bench.json.tmp", "baseline.json.tmp")}
    for name, victim in victims.items():
        victim.write_text("precious")
        (out if name.startswith("bench") else tmp_path).joinpath(name).symlink_to(victim)
    (out / "bench.json").symlink_to(victims["bench.md"])
    args = ["bench", "--quick", "--models", "chain", "--links", "4g", "-o", str(out), "--update", str(tmp_path / "baseline.json")]
    assert main(args) == 0
    assert all(v.read_text() == "precious" for v in victims.values())
    assert not (out / "bench.md").is_symlink() and "| chain |" in (out / "bench.md").read_text()
    assert not (out / "bench.json").is_symlink() and json.loads((out / "bench.json").read_text())["cases"]
    assert json.loads((tmp_path / "baseline.json").read_text())["cases"]
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert main(["bench", "--quick", "--models", "chain", "--links", "4g", "-o", str(tmp_path / "afile")]) == 2
    assert "afile" in capsys.readouterr().err
