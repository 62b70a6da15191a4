"""``splitc compile --cluster`` then ``splitc run`` on the cluster plan, as a user meets them (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import onnx
import pytest

from splitc.tools.zoo import CLUSTER_MODELS

try:
    from fixtures_text import assert_one_line_error
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import assert_one_line_error

ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}

CLUSTER = """
objective = "latency"
[network]
kind = "star"
rate = "{rate}"
rtt_ms = 1.0
[[device]]
name = "pi"
profile = "rpi4"
count = 3
memory_mb = {memory}
"""


def splitc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cluster_cli")
    onnx.save(CLUSTER_MODELS["yolo16"](size=160, width=0.5), d / "yolo16.onnx")
    (d / "fast.toml").write_text(CLUSTER.format(rate="1gbit", memory=1024))
    (d / "slow.toml").write_text(CLUSTER.format(rate="500kbit", memory=1024))
    return d


def test_compile_then_run_on_local_workers_matches_the_original(folder):
    p = splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "out", "--json", cwd=folder)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    best = summary["best"]
    used = {slot for s in best["stages"] for slot in s["slots"]}
    assert len(used) > 1, best  # a gigabit LAN: the planner spreads the conv chain over several Pis
    assert summary["plans"] == 3  # one plan per device count 1..3 (one group)
    schema = json.loads((Path(__file__).parents[1] / "splitc" / "schema" / "plan.schema.json").read_text())
    jsonschema.validate(json.loads((folder / "out" / "plan.json").read_text()), schema)
    r = splitc("run", "out", "--samples", "3", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["pass"] is True and report["frames"] == 3
    assert len(report["devices"]) == len(used)


def test_a_slow_lan_keeps_one_device(folder):
    p = splitc("compile", "yolo16.onnx", "--cluster", "slow.toml", "-o", "slow", "--json", cwd=folder)
    assert p.returncode == 0, p.stderr
    stages = json.loads(p.stdout)["best"]["stages"]
    assert {slot for s in stages for slot in s["slots"]} == {"pi/0"}  # 500 kbit/s: sending a tile costs more than it saves


def test_human_summary_names_plans_and_speedup(folder):
    p = splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "human", cwd=folder)
    assert p.returncode == 0, p.stderr
    assert "better than the best single device" in p.stdout and "splitc run human" in p.stdout


def test_recompile_with_force_replaces_a_cluster_output(folder):
    assert splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "again", cwd=folder).returncode == 0
    assert_one_line_error(splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "again", cwd=folder), "--force", code=2)
    assert splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "again", "--force", cwd=folder).returncode == 0


def test_bad_cluster_files_are_one_line_errors(folder):
    (folder / "zero.toml").write_text(CLUSTER.format(rate="1gbit", memory=0))
    assert_one_line_error(splitc("compile", "yolo16.onnx", "--cluster", "zero.toml", "-o", "z", cwd=folder), "memory", code=2)
    assert_one_line_error(splitc("compile", "yolo16.onnx", "--cluster", "missing.toml", "-o", "m", cwd=folder), "missing.toml", code=2)
    (folder / "tiny.toml").write_text(CLUSTER.format(rate="1gbit", memory=0.01))
    line = assert_one_line_error(splitc("compile", "yolo16.onnx", "--cluster", "tiny.toml", "-o", "t", cwd=folder), "memory", code=2)
    assert "MB" in line or "memory_mb" in line  # names the smallest memory that would fit
    assert not (folder / "z").exists() and not (folder / "t").exists()  # nothing half-written


def test_run_with_a_missing_worker_address_is_one_line(folder):
    assert (folder / "out").exists() or splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "out", cwd=folder).returncode == 0
    assert_one_line_error(splitc("run", "out", "--workers", "pi/0", cwd=folder), "--workers", code=2)


@pytest.mark.parametrize("option", [["--deadline", "5ms"], ["--link", "wifi"], ["--boundary", "int4"], ["--input-norm", "raw-bgr"]])
def test_two_tier_options_are_refused_not_ignored(folder, option):
    # the cluster planner reads its objective, deadline, network and boundary from the cluster file: a --deadline it
    # would not enforce (or a --link it would not use) must be an error, not a plan that silently ignores it
    out = "ignored" + option[0].replace("-", "_")
    line = assert_one_line_error(splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", *option, "-o", out, cwd=folder),
                                 option[0], code=2)
    assert "cluster" in line
    assert not (folder / out).exists()


def test_run_takes_an_npz_batch_and_refuses_images_in_one_line(folder):
    import numpy as np

    assert (folder / "out").exists() or splitc("compile", "yolo16.onnx", "--cluster", "fast.toml", "-o", "out", cwd=folder).returncode == 0
    spec = json.loads((folder / "out" / "plan.json").read_text())["model"]["inputs"][0]
    rng = np.random.default_rng(0)
    np.savez(folder / "batch.npz", **{spec["name"]: rng.standard_normal((2, *spec["shape"])).astype(np.float32)})
    r = splitc("run", "out", "--input", "batch.npz", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 2 and json.loads(r.stdout)["pass"] is True  # both samples, not one
    (folder / "photos").mkdir(exist_ok=True)
    (folder / "photos" / "a.png").write_bytes(b"")
    assert "images" in assert_one_line_error(splitc("run", "out", "--input", "photos", cwd=folder), "--input photos", code=2)
