"""Findings of a user-acceptance sweep of the CLI: `run --remote` judges a raw-only plan as `run` does, the
--calibrate-samples range, `run -q`, one synthetic-input JPEG warning per run, bench's node count labelled, and
`splitc serve` without FastAPI's ORJSONResponse deprecation warning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_cli import small_cnn
from test_input_codec import _classifier, _cloud_only, _photos

from splitc.cli.main import main
from splitc.compiler import CompileOptions, compile_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default warning filters, as a user has


def _device_only(tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "out"
    assert main(["compile", str(small_cnn(tmp_path / "cnn.onnx")), "--link", "up=1kbps,down=1kbps,rtt=1s", "-o", str(out),
                 "-q", "--no-report"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["boundary_codec"] == "int8" and plan["boundary"] == []
    return out, plan


def test_run_remote_checks_a_raw_only_plan_as_lossless_like_run(tmp_path, capsys):
    pytest.importorskip("tritonclient.http", reason="the remote client needs tritonclient")
    out, plan = _device_only(tmp_path)
    remote = ["run", str(out), "--remote", "http://127.0.0.1:9", "--timeout", "0.5s", "--samples", "2", "--json"]
    assert main(remote) == 0
    report = json.loads(capsys.readouterr().out)
    assert [o["pass"] for o in report["outputs"]] == [True]  # judged exactly, not left to a lossy budget
    head = onnx.load(str(out / plan["artifacts"]["rpi4"]))
    w = head.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + np.float32(1e-3), w.name))
    onnx.save(head, str(out / plan["artifacts"]["rpi4"]))
    assert main(remote) == 3  # a drifted head fails, as under `splitc run`
    assert json.loads(capsys.readouterr().out)["outputs"][0]["pass"] is False
    assert main(["run", str(out), "--samples", "2", "--json"]) == 3


def test_calibrate_samples_out_of_range_is_one_line_naming_the_option(tmp_path, capsys):
    model, photos = _classifier(tmp_path / "m.onnx", hw=16), _photos(tmp_path, n=8, size=32)
    for n in ("0", "100000000"):  # 100000000 crops: MemoryError (internal error, exit 70) before
        out = tmp_path / f"o{n}"
        assert main(["compile", str(model), "--boundary", "int8-static", "--calibrate", str(photos), "--calibrate-samples", n,
                     "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"splitc: error: --calibrate-samples {n}: give 2 to ") and "\n" not in err
        assert not out.exists()
    most = int(err.split("give 2 to ")[1].split()[0])
    assert most == (1 << 30) // (16 * 16 * 3 * 4)  # as many 16x16x3 float inputs as fit in 1 GiB


def test_run_quiet_prints_only_the_last_line(tmp_path, capsys):
    out, _ = _device_only(tmp_path)
    assert main(["run", str(out), "--samples", "2"]) == 0
    full = capsys.readouterr().out.strip().splitlines()
    assert len(full) > 3
    assert main(["run", str(out), "--samples", "2", "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [full[-1]]


def test_the_synthetic_input_jpeg_warning_is_said_once(tmp_path):
    out = tmp_path / "out"
    compile_model(_classifier(tmp_path / "m.onnx", hw=32), out, CompileOptions(link="4g"), policy=_cloud_only)
    for extra in ([], ["--json"]):
        proc = subprocess.run([sys.executable, "-m", "splitc", "run", str(out), "--samples", "3", *extra], capture_output=True,
                              text=True, env=ENV, cwd=ROOT, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("is not an 8-bit image") == 1, proc.stderr


def test_bench_says_which_node_count_it_shows():
    from splitc.tools import bench

    plan = {"predicted": {"total_s": 1.0}, "baselines": {}, "boundary": [], "solver": {},
            "nodes": [{"target": "rpi4"}, {"target": "replicated"}, {"target": "cloud"}]}
    case = {"key": "m/rpi4,cloud/4g", "model": "m", "source": "zoo", "targets": "rpi4,cloud", "link": "4g", **bench.metrics(plan)}
    text = bench.markdown({"cases": [case]})
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.split("|")[4].strip() == "placed nodes" and "| 2 |" in text  # the replicated node is not counted
    assert "compile's 'N nodes' counts every node" in text


def test_serve_starts_and_answers_without_a_deprecation_warning(tmp_path):
    pytest.importorskip("kserve", reason="splitc serve needs KServe")
    from test_serving import free_port, wait_ready

    out = tmp_path / "out"
    compile_model(_classifier(tmp_path / "m.onnx", hw=32), out, CompileOptions(link="4g"), policy=_cloud_only)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "splitc", "serve", str(out), "--port", str(port), "--grpc-port", "0"],
                                stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", time.monotonic() + 60)
        for path in ("/v2/health/ready", "/v2/health/live", "/v2"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert r.status == 200 and json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    text = log.read_text()
    assert "loaded" in text and "Deprecat" not in text and "ORJSONResponse" not in text, text
