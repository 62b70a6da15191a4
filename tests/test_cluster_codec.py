"""The int8 boundary of a cluster plan (cluster.toml [network] boundary = "int8"): the codec
(splitc/runtimes/cluster_codec.py), its price in the planner (splitc/partition/cluster_cost.py, checked against brute
force), the codec per part in plan.json, the hub and workers coding with it, and ``splitc run``'s verdict on it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper

from splitc.cost.cluster import FRAMING_BYTES, parse_cluster
from splitc.errors import SplitcError
from splitc.partition.cluster import Planner, full_counts
from splitc.partition.cluster_brute import brute_force
from splitc.partition.cluster_cost import evaluate
from splitc.runtimes import cluster_worker
from splitc.runtimes.cluster_codec import SCALE, ZERO, pack, quantize, unpack
from splitc.runtimes.wire import CodecError, encode
from splitc.tools.zoo import CLUSTER_MODELS

try:
    import test_cluster_planner as tp
except ImportError:  # tests/ imported as a package
    from tests import test_cluster_planner as tp


def assert_one_line_error(message: str, needle: str) -> None:
    assert "\n" not in message and needle in message and "Traceback" not in message, message

CLUSTER = """
[network]
rate = "{rate}"
boundary = "{boundary}"
[[device]]
name = "pi"
profile = "rpi4"
count = {count}
memory_mb = 1024
"""


# --------------------------------------------------------------------------- the codec

def test_quantize_is_onnx_dynamic_quantize_linear():
    x = np.random.default_rng(1).normal(0.3, 2.0, (1, 4, 9, 7)).astype(np.float32)
    x[0, 0, 0, :3] = [0.5, -0.5, 1.5]  # values at a half step: ties round to even
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    graph = helper.make_graph([node], "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    want = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})
    q, scale, zero = quantize(x)
    assert scale == pytest.approx(float(want[1]), rel=1e-6) and int(zero) == int(want[2])
    assert np.abs(q.astype(int) - want[0].astype(int)).max() <= 1  # onnxruntime divides by a reciprocal
    assert np.mean(q == want[0]) > 0.99


def test_int8_payload_is_a_quarter_of_fp32_and_decodes_close():
    x = np.maximum(np.random.default_rng(2).normal(0, 1, (1, 16, 40, 40)), 0).astype(np.float32)
    idx = np.arange(12, dtype=np.int64)
    fp32, int8 = pack({"x": x, "i": idx}, "fp32"), pack({"x": x, "i": idx}, "int8")
    assert len(int8) * 4 < len(fp32)
    spec = {"x": ("float32", x.shape), "i": ("int64", idx.shape)}
    got = unpack(int8, spec, "int8")
    assert got["x"].dtype == np.float32 and np.array_equal(got["i"], idx)  # other dtypes travel as they are
    assert np.abs(got["x"] - x).max() <= (x.max() / 255) / 2 + 1e-6  # half a step at most
    assert np.array_equal(unpack(fp32, spec, "fp32")["x"], x)


@pytest.mark.parametrize("scale", [np.nan, np.inf, 0.0, -1.0])
def test_a_payload_whose_scale_is_not_a_positive_number_is_refused(scale):
    payload = encode({"x": np.zeros((2, 3), np.uint8), "x" + SCALE: np.asarray(scale, np.float32),
                      "x" + ZERO: np.asarray(0, np.uint8)})
    with pytest.raises(CodecError, match="int8 scale"):
        unpack(payload, {"x": ("float32", (2, 3))}, "int8")


def test_a_tensor_with_inf_cannot_be_sent_as_int8_and_the_error_names_it():
    with pytest.raises(CodecError, match=r"tensor 'x' holds inf or NaN.*boundary = \"fp32\""):
        pack({"x": np.array([1.0, np.inf], np.float32)}, "int8")


def test_boundary_field_of_cluster_toml():
    base = {"device": [{"name": "pi", "profile": "rpi4", "memory_mb": 100}]}
    assert parse_cluster(base, "c.toml").boundary == "fp32"
    assert parse_cluster({**base, "network": {"boundary": "int8"}}, "c.toml").boundary == "int8"
    with pytest.raises(SplitcError) as e:
        parse_cluster({**base, "network": {"boundary": "int4"}}, "c.toml")
    assert_one_line_error(str(e.value), "boundary")


# --------------------------------------------------------------------------- the planner

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tp.cases())
def test_planner_equals_brute_force_with_an_int8_boundary(case):
    chain, spec = case
    spec = dataclasses.replace(spec, boundary="int8")
    plan = Planner(chain, spec).solve(full_counts(spec))
    tp.assert_optimal(plan, brute_force(chain, spec), spec.objective)
    if plan is not None:
        again = evaluate(chain, spec, full_counts(spec), [(s.first, s.last, s.strategy, s.slots) for s in plan.stages])
        assert again == plan


def test_int8_prices_a_quarter_of_the_bytes_plus_coding_time():
    """One block on a worker (not the hub): each way is one worker-protocol message, its framing + 66 B of TCP/IP
    headers per 1448 B; int8 sends raw/4 + 5 bytes a tensor and codes at the cluster codec's rates ([codec] cluster_*)."""
    chain = tp.random_chain(__import__("random").Random(3), 1)
    fp32 = tp.make_spec([("hub", "a", 1, 10**9, 1.0, None), ("w", "b", 1, 10**9, 1.0, None)], rate=1e6, rtt=0.0)
    int8 = dataclasses.replace(fp32, boundary="int8")
    stages = [(0, 1, "single", ("w/0",))]
    a, b = (evaluate(chain, s, full_counts(s), stages) for s in (fp32, int8))
    inb, outb = chain.blocks[0].input_bytes, chain.blocks[0].output_bytes
    compute = chain.latency_s(0, 1, 1)
    on_wire = lambda payload, framing: (payload + framing) * (1 + 66 / 1448)
    (req, ans), (req8, ans8) = FRAMING_BYTES["fp32"], FRAMING_BYTES["int8"]
    assert a.latency_s == pytest.approx(compute + (on_wire(inb, req) + on_wire(outb, ans)) * 8 / 1e6)
    rpi = tp.RPI
    coding = (inb + outb) / rpi.cluster_encode_bytes_per_s + (inb + outb) / rpi.cluster_decode_bytes_per_s
    assert b.latency_s == pytest.approx(compute + (on_wire(inb // 4 + 5, req8) + on_wire(outb // 4 + 5, ans8)) * 8 / 1e6 + coding)


def test_int8_coding_without_cluster_rates_falls_back_to_the_profiles_codec_rates():
    """A profile measured before the cluster codec's rates existed prices coding at [codec] encode/decode_bytes_per_s;
    one with them at its cluster_* rates (the difference is exactly the coding seconds of the two rate pairs)."""
    chain = tp.random_chain(__import__("random").Random(3), 1)
    new = dataclasses.replace(tp.make_spec([("hub", "a", 1, 10**9, 1.0, None), ("w", "b", 1, 10**9, 1.0, None)], rate=1e6,
                                           rtt=0.0), boundary="int8")
    old = dataclasses.replace(new, groups=tuple(dataclasses.replace(
        g, profile=dataclasses.replace(g.profile, cluster_encode_bytes_per_s=None, cluster_decode_bytes_per_s=None))
        for g in new.groups))
    stages = [(0, 1, "single", ("w/0",))]
    a, b = (evaluate(chain, s, full_counts(s), stages) for s in (new, old))
    raw, rpi = chain.blocks[0].input_bytes + chain.blocks[0].output_bytes, tp.RPI
    assert rpi.cluster_encode_bytes_per_s > rpi.encode_bytes_per_s and rpi.cluster_decode_bytes_per_s > rpi.decode_bytes_per_s
    assert b.latency_s - a.latency_s == pytest.approx(raw * (1 / rpi.encode_bytes_per_s + 1 / rpi.decode_bytes_per_s
                                                              - 1 / rpi.cluster_encode_bytes_per_s - 1 / rpi.cluster_decode_bytes_per_s))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cluster_codec")
    onnx.save(CLUSTER_MODELS["yolo16"](size=160, width=0.5), d / "yolo16.onnx")
    return d


def _compile(folder: Path, rate: str, boundary: str, count: int, out: str | None):
    from splitc.compiler import compile_cluster

    toml = folder / f"{rate}-{boundary}-{count}.toml"
    toml.write_text(CLUSTER.format(rate=rate, boundary=boundary, count=count))
    return compile_cluster(folder / "yolo16.onnx", folder / out if out else None, toml)


@pytest.fixture(scope="module")
def compiled(folder) -> dict:
    """The fp32 and the int8 plan of yolo16 on 3 Pis over a gigabit LAN (out-fp32/, out-int8/)."""
    return {b: _compile(folder, "1gbit", b, 3, f"out-{b}") for b in ("fp32", "int8")}


def test_int8_on_a_slow_lan_spreads_where_fp32_keeps_one_device(folder):
    fp32 = _compile(folder, "200mbit", "fp32", 4, None).plans.best
    int8 = _compile(folder, "200mbit", "int8", 4, None).plans.best
    used = lambda plan: {s for st in plan.stages for s in st.slots}
    assert used(fp32) == {"pi/0"}  # the 160 px frame in fp32 costs more on the LAN than the tiles save
    assert len(used(int8)) > 1 and int8.latency_s < fp32.latency_s


# --------------------------------------------------------------------------- plan.json and the runtime

def test_an_int8_plan_runs_close_to_the_original_with_a_quarter_of_the_bytes(folder, compiled):
    from splitc.runtimes.cluster import ClusterRunner

    runs = {}
    for boundary, result in compiled.items():
        section = result.plan["cluster"]
        assert section["boundary"] == boundary
        with ClusterRunner(folder / f"out-{boundary}", spawn=True) as runner:
            stages = runner.state.plan["stages"]
            name = result.plan["model"]["inputs"][0]["name"]
            x = np.random.default_rng(4).random((1, 3, 160, 160), dtype=np.float32)
            got = runner.run({name: x})
            runs[boundary] = (stages, got, runner.engine.wire_bytes())
    stages, got, wire = runs["int8"]
    assert len({s for st in stages for s in st["slots"]}) > 1
    for st in stages:  # the hub's own slot is never coded; every other edge is
        for p in st["parts"]:
            assert p["codec"] == ("fp32" if p["slot"] == "pi/0" else "int8")
    assert [(s["strategy"], s["slots"], s["shares"]) for s in stages] == \
        [(s["strategy"], s["slots"], s["shares"]) for s in runs["fp32"][0]]  # the same plan: bytes compare
    sess = ort.InferenceSession(str(folder / "yolo16.onnx"), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x})))
    for n, r in ref.items():
        g = got[n]
        assert float(g.ravel() @ r.ravel() / np.linalg.norm(g) / np.linalg.norm(r)) >= 0.99
    assert not all(np.array_equal(got[n], ref[n]) for n in ref)  # coded, so not exact
    workers = lambda w: sum(a + b for d, (a, b) in w.items() if d != "pi/0")
    ratio = workers(runs["fp32"][2]) / workers(wire)
    assert 3.5 < ratio < 4.5, ratio


def test_worker_refuses_an_unknown_codec_in_one_line(folder, compiled):
    parts = cluster_worker.Parts(folder / "out-int8")
    file = json.loads((folder / "out-int8" / "plan.json").read_text())["cluster"]["plans"][0]["stages"][0]["parts"][0]["file"]
    parts.load(file)
    header, _ = cluster_worker.answer(parts, {"op": "run", "id": 1, "file": file, "codec": "int4"}, b"")
    assert header["ok"] is False
    assert_one_line_error(header["error"], "int4")


def test_splitc_run_judges_an_int8_plan_by_its_accuracy_budget(folder, compiled):
    np.save(folder / "frame.npy", np.random.default_rng(5).random((1, 3, 160, 160), dtype=np.float32))
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    r = subprocess.run([sys.executable, "-m", "splitc.cli.main", "run", "out-int8", "--input", "frame.npy", "--json"],
                       capture_output=True, text=True, cwd=folder, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["boundary"] == "int8" and report["pass"] is True  # the fp32 check (max error 1e-5) would fail it
    assert report["accuracy"]["cosine"] >= 0.99 and report["accuracy"]["max_abs_error"] > 1e-5
