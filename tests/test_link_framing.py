"""What a real device sends: every message's framing (HTTP + OIP header) and every segment's packet headers are
priced, by the link, the evaluator, the optimizer and plan.json."""

from __future__ import annotations

from dataclasses import replace

import pytest

from splitc.cost.targets import MESSAGE_BYTES, MSS_BYTES, SEGMENT_HEADER_BYTES, Link, parse_link
from splitc.partition.baselines import brute_force, solve_mincut
from splitc.partition.costgraph import CNode, CostGraph, CTensor, evaluate
from splitc.partition.optimizer import Goal, solve, solve_ilp

FAST = (1e30, 1e30)  # codec time negligible


def test_a_4660_byte_payload_on_1_mbit_pays_framing_and_headers():
    link = Link("1mbit", 1e6, 1e6, 0.0)
    framed = 4660 + MESSAGE_BYTES
    headers = framed / MSS_BYTES * SEGMENT_HEADER_BYTES
    assert link.transfer_s(4660, "up") == pytest.approx((framed + headers) * 8 / 1e6, rel=1e-12)
    assert link.transfer_s(4660, "up") > (4660 + 700) * 8 / 1e6  # ~0.7 KB more than the payload
    # a part of a message: headers only, the framing is the message's
    assert link.transfer_s(4660, "up", messages=0) == pytest.approx(4660 * (1 + 66 / 1448) * 8 / 1e6, rel=1e-12)
    assert parse_link("4g").message_bytes == MESSAGE_BYTES and parse_link("up=1Mbps,down=2Mbps,rtt=5ms").mss_bytes == MSS_BYTES


@pytest.mark.parametrize("payload, measured", [(4782.3, 5497.0), (16581.85, 17835.3)])
def test_defaults_reproduce_the_veth_measurement(payload, measured):
    # bytes per request up the emulated link (tc tbf on a veth pair, `splitc serve` behind it; see targets.py)
    assert Link("l", 1e6, 1e6, 0.0).wire_bytes(payload) == pytest.approx(measured, rel=0.005)


def _two_nodes(link: Link) -> CostGraph:
    # x (device) -> a -> t -> b -> y (back to the device). b saves 9 ms on the server; t is 100 B int8.
    nodes = (CNode("a", "Op", (0.001, 0.001)), CNode("b", "Op", (0.010, 0.001)))
    tensors = (CTensor("x", None, (0,), False, 400, 400), CTensor("t", 0, (1,), False, 400, 100),
               CTensor("y", 1, (), True, 40, 40))
    return CostGraph(("device", "server"), nodes, tensors, link, FAST, FAST)


def test_evaluator_prices_one_message_each_way():
    link = Link("l", 0.4e6, 5e6, 0.0)
    cost = evaluate(_two_nodes(link), [0, 1])
    f = 1 + SEGMENT_HEADER_BYTES / MSS_BYTES
    up, down = (100 + MESSAGE_BYTES) * f * 8 / 0.4e6, (40 + MESSAGE_BYTES) * f * 8 / 5e6
    assert cost.transfer_s == pytest.approx(up + down, rel=1e-12)
    assert cost.total_s == pytest.approx(0.001 + 0.001 + up + down, rel=1e-12)
    assert cost.period_s == pytest.approx(up, rel=1e-12)  # the uplink, framing included, is the busiest stage
    assert evaluate(_two_nodes(link), [0, 0]).transfer_s == 0.0  # nothing sent, no message


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_framing_changes_the_choice_and_every_solver_agrees(objective):
    # payload-only the cut wins (100 B at 0.4 Mbit/s: 2 ms < 9 ms saved); with ~1 KB of framing a frame (12 ms up) it loses
    bare = Link("l", 0.4e6, 5e6, 0.0, message_bytes=0.0, segment_header_bytes=0.0)
    assert solve(_two_nodes(bare), Goal(objective=objective)).placement == (0, 1)
    cg = _two_nodes(replace(bare, message_bytes=MESSAGE_BYTES, segment_header_bytes=SEGMENT_HEADER_BYTES))
    assert solve(cg, Goal(objective=objective)).placement == (0, 0)
    if objective == "latency":
        for solver in (solve_ilp, solve_mincut, brute_force):
            assert solver(cg).placement == (0, 0), solver.__name__


def test_bandwidth_estimator_reads_the_link_rate_the_sweep_priced():
    # the adaptive client's switch points are link rates priced with framing: a frame that took its wire bytes at
    # 2 Mbit/s must read as 2 Mbit/s, not as the payload's lower goodput (which switched plans ~15% early)
    from splitc.runtimes.adaptive import BandwidthEstimator

    link = Link("l", 2e6, 6e6, 0.02)
    entry = {"message_bytes": link.message_bytes, "segment_header_bytes": link.segment_header_bytes, "mss_bytes": link.mss_bytes}
    est = BandwidthEstimator(0.02, down_up_ratio=3.0, link=entry)
    network = 0.02 + link.transfer_s(4660, "up") + link.transfer_s(3900, "down")
    assert est.observe(network, 4660, 3900) == pytest.approx(2e6, rel=1e-9)
    assert BandwidthEstimator(0.02, 3.0).observe(network, 4660, 3900) < 0.87 * 2e6  # payload only: reads low


def test_plan_json_shows_wire_bytes_and_the_runtime_bounds_the_framing(tmp_path):
    import json

    from splitc.compiler import CompileOptions, compile_model
    from splitc.errors import SplitcError
    from splitc.runtimes.planfile import validate
    from test_plan import residual_model

    out = tmp_path / "out"
    compile_model(residual_model(tmp_path / "res.onnx"), out, CompileOptions(target="rpi4,cloud", link="up=1Gbps,down=1Gbps,rtt=0.2ms"))
    plan = json.loads((out / "plan.json").read_text())
    link, f = plan["links"][0], 1 + SEGMENT_HEADER_BYTES / MSS_BYTES
    assert (link["message_bytes"], link["segment_header_bytes"], link["mss_bytes"]) == (MESSAGE_BYTES, SEGMENT_HEADER_BYTES, MSS_BYTES)
    assert link["message_s"]["up"] == pytest.approx(MESSAGE_BYTES * f * 8 / 1e9, rel=1e-12)
    assert plan["boundary"], "the fixture plan must cut"
    for b in plan["boundary"]:
        assert b["wire_bytes"] == round(b["encoded_bytes"] * f) and b["wire_bytes"] > b["encoded_bytes"]
        assert b["transfer_s"] == pytest.approx(b["encoded_bytes"] * f * 8 / 1e9, rel=1e-12)
    sent = plan["predicted"]["link_bytes"][0]
    assert sent["wire_up"] == round((sent["up"] + MESSAGE_BYTES) * f)
    for bad in (float("nan"), -1.0, 1e300):
        link["message_bytes"] = bad
        with pytest.raises(SplitcError, match=r"links\[0\]\.message_bytes"):
            validate(plan, out)
