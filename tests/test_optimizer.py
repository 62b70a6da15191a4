"""The exact partitioners against brute force, on random cost graphs and on hand-made ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.partition.costgraph import CNode, CostGraph, CTensor, evaluate, evaluate_many
from splitc.partition.baselines import baselines, brute_force, solve_mincut
from splitc.partition.optimizer import Goal, solve, solve_ilp
from splitc.cost.targets import Link, parse_link

REL = 1e-9


def approx(x):
    return pytest.approx(x, rel=REL, abs=1e-12)


# --------------------------------------------------------------------------- random cost graphs

@st.composite
def cost_graphs(draw, min_nodes=2, max_nodes=12, dangling=False):
    """A random DAG in topological order.

    Graph inputs feed several nodes, nodes read up to three earlier tensors (so tensors have
    several consumers), some nodes produce two tensors, every unread tensor is an output and a
    few read tensors are outputs too. ``dangling`` also allows nodes that read nothing
    (RandomNormal-like) and produced tensors that nobody reads and are not outputs.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    lat = st.floats(0.0, 0.1, allow_nan=False, allow_subnormal=False)
    nodes = tuple(CNode(f"n{i}", "Op", (draw(lat), draw(lat))) for i in range(n))
    n_inputs = draw(st.integers(1, 3))
    # (producer or None, consumers)
    producers: list[int | None] = [None] * n_inputs
    consumers: list[set[int]] = [set(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=4))) for _ in range(n_inputs)]
    for i in range(n):
        if i > 0:
            earlier = [j for j, p in enumerate(producers) if p is not None and p < i]
            if earlier:
                for j in draw(st.sets(st.sampled_from(earlier), max_size=3)):
                    consumers[j].add(i)
        if not dangling and not any(i in c for c in consumers):
            consumers[draw(st.integers(0, len(consumers) - 1))].add(i)  # an input or an earlier node's tensor
        for _ in range(draw(st.integers(1, 2))):
            producers.append(i)
            consumers.append(set())
    tensors = []
    size = st.integers(0, 200_000)
    for j, (p, cons) in enumerate(zip(producers, consumers)):
        if p is None and not cons:
            continue
        if p is not None and not cons:
            is_output = True if not dangling else draw(st.booleans())
        else:
            is_output = p is not None and draw(st.integers(0, 4)) == 0
        raw = draw(size)
        tensors.append(CTensor(f"t{j}", p, tuple(sorted(cons)), is_output, raw, draw(st.integers(0, raw))))
    edges = sorted({(t.producer, c) for t in tensors if t.producer is not None for c in t.consumers})
    tied = tuple(e for e in edges if draw(st.integers(0, 5)) == 0)
    rate = st.floats(1e6, 1e9, allow_nan=False)
    link = Link("test", draw(rate), draw(rate), draw(st.floats(0.0, 0.2, allow_nan=False, allow_subnormal=False)))
    codec = st.floats(1e7, 1e10, allow_nan=False)
    encode, decode = (draw(codec), draw(codec)), (draw(codec), draw(codec))
    return CostGraph(("device", "server"), nodes, tuple(tensors), link, encode, decode, tied)


def check_exact(cg: CostGraph, mincut_may_refuse: bool = False) -> None:
    best = brute_force(cg)
    assert best.cost.feasible
    for relax in (True, False):
        ilp = solve_ilp(cg, relax=relax)
        assert ilp.status == "optimal"
        assert ilp.cost.feasible
        assert ilp.cost == evaluate(cg, ilp.placement)
        assert ilp.cost.total_s == approx(best.cost.total_s), relax
    try:
        cut = solve_mincut(cg)
    except ValueError as e:
        # its RTT argument needs every node on an input-to-output path; it must say so, not guess
        assert mincut_may_refuse and "min-cut is exact only when" in str(e)
    else:
        assert cut.cost.feasible
        assert cut.cost.total_s == approx(best.cost.total_s)
    base = baselines(cg)
    for name in ("device_only", "cloud_only", "best_single_cut"):
        assert base[name].cost.feasible, name
        assert ilp.cost.total_s <= base[name].cost.total_s * (1 + REL) + 1e-12, name
    # the single-cut baseline is a prefix of the topological order
    p = base["best_single_cut"].placement
    assert list(p) == sorted(p)


SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
)


@settings(max_examples=120, **SETTINGS)
@given(cost_graphs(max_nodes=12))
def test_exact_methods_agree_small(cg):
    check_exact(cg)


@settings(max_examples=12, **SETTINGS)
@given(cost_graphs(min_nodes=16, max_nodes=20))
def test_exact_methods_agree_large(cg):
    check_exact(cg)


@settings(max_examples=80, **SETTINGS)
@given(cost_graphs(max_nodes=10, dangling=True))
def test_exact_methods_agree_with_dangling_nodes(cg):
    """Nodes that read nothing or whose result nobody reads: a plan may use one direction only."""
    check_exact(cg, mincut_may_refuse=True)


@settings(max_examples=60, **SETTINGS)
@given(cost_graphs(max_nodes=10), st.data())
def test_evaluate_many_matches_evaluate(cg, data):
    n = len(cg.nodes)
    rows = data.draw(st.lists(st.lists(st.integers(0, 1), min_size=n, max_size=n), min_size=1, max_size=8))
    many = evaluate_many(cg, np.array(rows, dtype=np.int8))
    for k, row in enumerate(rows):
        one = evaluate(cg, row)
        assert one.total_s == approx(float(many["total"][k]))
        assert one.feasible == bool(many["feasible"][k])
        assert one.total_s == approx(sum(one.compute_s) + one.transfer_s + one.rtt_s)


# --------------------------------------------------------------------------- hand-made cases

LINK = Link("hand", up_bps=8e6, down_bps=16e6, rtt_s=0.05, message_bytes=0.0, segment_header_bytes=0.0)  # 1 MB/s up, 2 MB/s down;
# payload bytes only, for the arithmetic below (framing and packet headers: tests/test_link_framing.py)
FAST_CODEC = (1e30, 1e30)  # codec time negligible: transfers are wire time only


def graph(nodes, tensors, link=LINK, tied=(), enc=FAST_CODEC, dec=FAST_CODEC):
    cnodes = tuple(CNode(name, "Op", lat) for name, lat in nodes)
    return CostGraph(("device", "server"), cnodes, tuple(tensors), link, enc, dec, tuple(tied))


def test_tensor_with_three_server_consumers_is_sent_once():
    # x -> a; a's output t is read by b, c, d (all on the server); their outputs come back
    cg = graph(
        [("a", (0.01, 0.01)), ("b", (1.0, 0.01)), ("c", (1.0, 0.01)), ("d", (1.0, 0.01))],
        [
            CTensor("x", None, (0,), False, 500_000, 500_000),
            CTensor("t", 0, (1, 2, 3), False, 100_000, 100_000),
            CTensor("yb", 1, (), True, 10, 10),
            CTensor("yc", 2, (), True, 10, 10),
            CTensor("yd", 3, (), True, 10, 10),
        ],
    )
    cost = evaluate(cg, [0, 1, 1, 1])
    assert cost.feasible
    assert cost.transfer_s == approx(100_000 / 1e6 + 3 * 10 / 2e6)
    assert cost.rtt_s == approx(0.05)  # one round trip
    assert cost.total_s == approx(0.01 + 0.03 + 0.1 + 0.000015 + 0.05)
    for solve in (solve_ilp, solve_mincut, brute_force):
        sol = solve(cg)
        assert sol.placement == (0, 1, 1, 1), solve.__name__
        assert sol.cost.total_s == approx(cost.total_s)


def test_residual_cut_crosses_two_tensors():
    # x -> a -> t1 -> b -> t2 -> c -> t3 -> add(t3, t1) -> y
    # a, b are cheap on the device (b is slow on the server); c and add are expensive on the
    # device. The best plan cuts {t1, t2}: cheaper than sending t1 alone and running b remotely.
    cg = graph(
        [("a", (0.01, 0.01)), ("b", (0.01, 0.1)), ("c", (2.0, 0.01)), ("add", (1.0, 0.01))],
        [
            CTensor("x", None, (0,), False, 400_000, 400_000),
            CTensor("t1", 0, (1, 3), False, 50_000, 50_000),
            CTensor("t2", 1, (2,), False, 20_000, 20_000),
            CTensor("t3", 2, (3,), False, 400_000, 400_000),
            CTensor("y", 3, (), True, 1000, 1000),
        ],
    )
    expected = 0.01 + 0.01 + 0.01 + 0.01 + (70_000 / 1e6) + (1000 / 2e6) + 0.05
    for solve in (solve_ilp, solve_mincut, brute_force):
        sol = solve(cg)
        assert sol.placement == (0, 0, 1, 1), solve.__name__
        assert sol.cost.total_s == approx(expected)
        assert sol.cost.transfer_s == approx(0.07 + 0.0005)
    # the crossing tensors are exactly t1 and t2 (up) and y (down)
    up = [t.name for t in cg.tensors if t.producer is not None and sol.placement[t.producer] == 0
          and any(sol.placement[c] == 1 for c in t.consumers)]
    assert up == ["t1", "t2"]
    assert baselines(cg)["best_single_cut"].placement == (0, 0, 1, 1)


def test_input_consumed_by_two_nodes():
    # x is read by a and b; both results are outputs
    tensors = [
        CTensor("x", None, (0, 1), False, 100_000, 100_000),
        CTensor("ya", 0, (), True, 10, 10),
        CTensor("yb", 1, (), True, 10, 10),
    ]
    cg = graph([("a", (1.0, 0.01)), ("b", (1.0, 0.01))], tensors)
    both = evaluate(cg, [1, 1])
    assert both.transfer_s == approx(0.1 + 2 * 10 / 2e6)  # x sent once for two readers
    one = evaluate(cg, [1, 0])
    assert one.transfer_s == approx(0.1 + 10 / 2e6)
    assert one.compute_s == approx((1.0, 0.01))
    for solve in (solve_ilp, solve_mincut, brute_force):
        assert solve(cg).placement == (1, 1), solve.__name__
    # with a fast device, the input stays home
    cg = graph([("a", (0.001, 0.01)), ("b", (0.001, 0.01))], tensors)
    for solve in (solve_ilp, solve_mincut, brute_force):
        assert solve(cg).placement == (0, 0), solve.__name__


def test_rtt_half_each_way_per_direction_used():
    # x -> a -> t -> b -> u -> c -> y ; plus a node z that reads nothing and feeds output yz,
    # and a node d whose result nobody reads.
    cg = graph(
        [("a", (0.1, 0.1)), ("b", (0.1, 0.1)), ("c", (0.1, 0.1)), ("z", (0.1, 0.1)), ("d", (0.1, 0.1))],
        [
            CTensor("x", None, (0, 4), False, 0, 0),
            CTensor("t", 0, (1,), False, 0, 0),
            CTensor("u", 1, (2,), False, 0, 0),
            CTensor("y", 2, (), True, 0, 0),
            CTensor("yz", 3, (), True, 0, 0),
            CTensor("dead", 4, (), False, 0, 0),
        ],
    )
    rtt = LINK.rtt_s
    assert evaluate(cg, [0, 0, 0, 0, 0]).rtt_s == 0.0
    # a request/response exchange (up and back down) is one round trip: one RTT, half each way
    assert evaluate(cg, [1, 1, 1, 1, 1]).rtt_s == approx(rtt)
    assert evaluate(cg, [0, 1, 0, 0, 0]).feasible is False  # u would flow back to the device
    assert evaluate(cg, [0, 1, 1, 0, 0]).rtt_s == approx(rtt)  # one cut each way
    assert evaluate(cg, [0, 1, 1, 1, 0]).rtt_s == approx(rtt)  # two tensors down: still one RTT
    assert evaluate(cg, [0, 0, 0, 0, 1]).rtt_s == approx(rtt / 2)  # up only
    assert evaluate(cg, [0, 0, 0, 1, 0]).rtt_s == approx(rtt / 2)  # down only
    assert evaluate(cg, [0, 0, 0, 1, 1]).rtt_s == approx(rtt)
    full = evaluate(cg, [1, 1, 1, 1, 1])
    assert full.total_s == approx(sum(full.compute_s) + full.transfer_s + rtt)


def test_rtt_decides_between_offloading_and_staying():
    # one node: 0.3 s on the device, free on the server; zero-size tensors; offloading pays one round trip
    tensors = [CTensor("x", None, (0,), False, 0, 0), CTensor("y", 0, (), True, 0, 0)]
    for rtt, where in ((0.25, 1), (0.35, 0)):
        cg = graph([("a", (0.3, 0.0))], tensors, link=Link("l", 8e6, 8e6, rtt))
        for solve in (solve_ilp, solve_mincut, brute_force):
            assert solve(cg).placement == (where,), (solve.__name__, rtt)


def test_sourceless_node_offloads_with_one_rtt():
    # z reads nothing (like RandomNormal) and is slow on the device; c reads x and is a bit
    # faster on the server. Offloading z alone pays half an RTT (down only); also offloading c
    # would save 0.02 s of compute but costs the other half (up).
    cg = graph(
        [("z", (1.0, 0.0)), ("c", (0.02, 0.0))],
        [
            CTensor("x", None, (1,), False, 0, 0),
            CTensor("yz", 0, (), True, 0, 0),
            CTensor("yc", 1, (), True, 0, 0),
        ],
    )
    best = brute_force(cg)
    assert best.placement == (1, 0)
    assert best.cost.total_s == approx(0.02 + 0.025)
    for relax in (True, False):
        sol = solve_ilp(cg, relax=relax)
        assert sol.placement == (1, 0)
        assert sol.cost.total_s == approx(best.cost.total_s)
    # min-cut charges both RTTs to any offloading plan, which is wrong here: it refuses
    with pytest.raises(ValueError, match="use solve_ilp"):
        solve_mincut(cg)


def test_tied_nodes_share_a_tier():
    # b is fused into a: even though b is slow on the device, it must follow a
    cg = graph(
        [("a", (0.001, 0.5)), ("b", (1.0, 0.0))],
        [CTensor("x", None, (0,), False, 0, 0), CTensor("t", 0, (1,), False, 0, 0), CTensor("y", 1, (), True, 0, 0)],
        tied=[(0, 1)],
    )
    assert evaluate(cg, [0, 1]).feasible is False
    for solve in (solve_ilp, solve_mincut, brute_force):
        sol = solve(cg)
        assert sol.placement == (1, 1), solve.__name__
        assert sol.cost.total_s == approx(0.5 + 0.05)  # one round trip


def test_idle_power_while_waiting_moves_the_energy_plan():
    # x -> a -> t -> b -> y, zero-size tensors (no radio energy), a round trip of 20 ms.
    # latency: device only 0.10 s; a on the device, b on the server 0.03 + 0.07 + 0.02 = 0.12 s; all on the
    # server 0.20 + 0.07 + 0.02 = 0.29 s. Device busy 5 W, idle 2 W.
    from dataclasses import replace

    cg = graph([("a", (0.03, 0.2)), ("b", (0.07, 0.07))],
               [CTensor("x", None, (0,), False, 0, 0), CTensor("t", 0, (1,), False, 0, 0), CTensor("y", 1, (), True, 0, 0)],
               link=Link("l", 8e6, 8e6, 0.02, radio=parse_link("wifi").radio, message_bytes=0.0))  # nothing on the wire
    cg = replace(cg, busy_power_w=(5.0, 50.0), idle_power_w=(2.0, 20.0))
    cut = evaluate(cg, [0, 1])
    # the device computes 0.03 s and waits 0.09 s for the wire and the server
    assert cut.energy_j == approx(5.0 * 0.03 + 2.0 * 0.09)
    assert evaluate(cg, [1, 1]).energy_j == approx(2.0 * 0.29)
    latency = solve_ilp(cg).placement
    energy = solve(cg, Goal("energy"))
    assert latency == (0, 0)
    # waiting costs: the server-only plan (0 J of compute) waits 0.29 s; the cut computes 0.03 s and waits 0.09 s
    assert energy.placement == (0, 1) != latency
    assert energy.cost.energy_j == approx(brute_force(cg, goal=Goal("energy")).cost.energy_j)
    # priced without the waiting, the device would hand everything to the server
    assert solve(replace(cg, idle_power_w=(0.0, 0.0)), Goal("energy")).placement == (1, 1)


def test_idle_power_above_busy_power_is_refused():
    from dataclasses import replace

    cg = graph([("a", (0.1, 0.1))], [CTensor("x", None, (0,), False, 0, 0), CTensor("y", 0, (), True, 0, 0)])
    with pytest.raises(ValueError, match="idle power"):
        replace(cg, busy_power_w=(2.0, 2.0), idle_power_w=(3.0, 0.0))


def test_codec_and_wire_time():
    cg = graph(
        [("a", (1.0, 0.0))],
        [CTensor("x", None, (0,), False, 4000, 1000), CTensor("y", 0, (), True, 400, 400)],
        link=Link("l", 8e3, 16e3, 0.0, message_bytes=0.0, segment_header_bytes=0.0),  # payload only
        enc=(1e6, 2e6),
        dec=(4e6, 8e6),
    )
    enc, wire, dec = cg.send_parts(cg.tensors[0], 0, 1)
    # raw bytes go through the codec, encoded bytes over the wire
    assert (enc, wire, dec) == (approx(4000 / 1e6), approx(1000 / 1e3), approx(4000 / 8e6))
    enc, wire, dec = cg.send_parts(cg.tensors[1], 1, 0)
    assert (enc, wire, dec) == (approx(400 / 2e6), approx(400 / 2e3), approx(400 / 4e6))
    cost = evaluate(cg, [1])
    assert cost.transfer_s == approx(4000 / 1e6 + 1.0 + 4000 / 8e6 + 400 / 2e6 + 0.2 + 400 / 4e6)


def test_brute_force_refuses_large_graphs():
    cg = graph([(f"n{i}", (1.0, 1.0)) for i in range(23)], [CTensor("x", None, (0,), False, 0, 0)])
    with pytest.raises(ValueError, match="23 nodes"):
        brute_force(cg)
