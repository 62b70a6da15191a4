"""The cluster planner (splitc/partition/cluster.py) against brute force over every plan of small random cases (same
evaluator, every strategy, both objectives, memory limits, a LAN, a star and a server tier), and plans for every
sub-multiset of the devices."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.cost.cluster import ClusterSpec, DeviceGroup
from splitc.cost.targets import load_target, parse_link
from splitc.errors import SplitcError
from splitc.partition.blocks import Block, BlockChain, Layer, proportional, tile
from splitc.partition.cluster import Planner, count_vectors, full_counts, plan_all
from splitc.partition.cluster_brute import all_plans, brute_force
from splitc.partition.cluster_cost import evaluate

RPI = load_target("rpi4")


def conv(name, h, c_in, c_out, k, s, lat):
    pad = k // 2
    out_h = (h + 2 * pad - k) // s + 1
    return Layer(name, "Conv", lat, tuple(x * 0.05 for x in lat), c_in * h * h * 4, c_out * out_h * out_h * 4,
                 c_in * c_out * k * k * 4, c_out, h, out_h, k, s, pad, pad, 1)


def fc(name, n_in, n_out, lat):
    return Layer(name, "Gemm", lat, tuple(x * 0.05 for x in lat), n_in * 4, n_out * 4, n_in * n_out * 4, n_out)


def block(b, layers, spatial, channel):
    return Block(tuple(x.name for x in layers), (f"t{b}",), (f"t{b + 1}",), tuple(layers), layers[0].in_bytes,
                 layers[-1].out_bytes, sum(x.weight_bytes for x in layers), max(x.in_bytes + x.out_bytes for x in layers),
                 spatial, channel)


def random_chain(rnd: random.Random, nblocks: int, layers_max: int = 3) -> BlockChain:
    """Up to ``layers_max`` layers a block: conv blocks (spatial; channel when one conv), then maybe an fc tail."""
    h, c, blocks = rnd.choice([8, 12, 16]), 3, []
    fc_from = rnd.randint(1, nblocks) if rnd.random() < 0.4 else nblocks
    for b in range(nblocks):
        lat = lambda: (rnd.uniform(1e-3, 5e-2), rnd.uniform(1e-3, 5e-2), rnd.uniform(1e-4, 1e-3))
        if b >= fc_from:
            n_in = c * h * h if b == fc_from else c
            c = rnd.choice([16, 64])
            blocks.append(block(b, [fc(f"fc{b}", n_in, c, lat())], False, True))
            h = 1
            continue
        layers = []
        for k in range(rnd.randint(1, layers_max)):
            co = rnd.choice([4, 8, 16])
            layer = conv(f"b{b}l{k}", h, c, co, rnd.choice([1, 3, 5]), rnd.choice([1, 1, 2]) if h > 4 else 1, lat())
            layers.append(layer)
            h, c = layer.out_h, co
        blocks.append(block(b, layers, rnd.random() < 0.85, len(layers) == 1))
    return BlockChain(("a", "b", "cloud"), tuple(blocks))


def make_spec(groups, objective="latency", network="lan", rate=100e6, rtt=1e-3, deadline=None, server=None, worker=True):
    """groups: (name, profile, count, memory bytes, cpu_share, port rate or None); the first is the hub."""
    gs = tuple(DeviceGroup(name, dataclasses.replace(RPI, name=prof), n, mem, share, r or rate, i == 0, worker or i > 0)
               for i, (name, prof, n, mem, share, r) in enumerate(groups))
    return ClusterSpec(gs, objective, deadline, network, rate, rtt,
                       dataclasses.replace(RPI, name="cloud") if server else None, parse_link(server) if server else None)


@st.composite
def cases(draw):
    rnd = random.Random(draw(st.integers(0, 2**32)))
    objective = draw(st.sampled_from(["latency", "throughput"]))
    hub = draw(st.integers(1, 2))
    workers = draw(st.integers(0, 4 - hub))
    server = draw(st.booleans()) and hub + workers < 4
    devices = hub + workers + server
    nblocks = draw(st.integers(1, 4 if objective == "throughput" or devices <= 2 else 3 if devices == 3 else 2))
    chain = random_chain(rnd, nblocks)
    memory = lambda: draw(st.sampled_from([10**9, 6000, 20000]))
    groups = [("hub", "a", hub, memory(), 1.0, None)]
    if workers:
        groups.append(("w", "b", workers, memory(), draw(st.sampled_from([1.0, 0.25])), draw(st.sampled_from([None, 2e6]))))
    network = draw(st.sampled_from(["lan", "star"]))
    if network == "lan":
        groups = [g[:5] + (None,) for g in groups]
    spec = make_spec(groups, objective, network, rate=draw(st.sampled_from([1e6, 1e8])),
                     rtt=draw(st.sampled_from([0.0, 2e-3])),
                     deadline=(draw(st.sampled_from([None, 0.6, 0.9, 1.2])) or 0) * chain.latency_s(0, nblocks, 0) or None
                     if objective == "throughput" else None,  # around one device's latency: the bound bites
                     server="4g" if server else None, worker=draw(st.booleans()) or hub > 1 or workers > 0)
    return chain, spec


def assert_optimal(plan, best, objective):
    assert (plan is None) == (best is None)
    if plan is None:
        return
    if objective == "latency":
        assert plan.latency_s == pytest.approx(best.latency_s, rel=1e-9)
    else:
        assert plan.period_s == pytest.approx(best.period_s, rel=1e-9)
        assert plan.latency_s <= best.latency_s * (1 + 1e-9)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_planner_equals_brute_force(case):
    chain, spec = case
    plan = Planner(chain, spec).solve(full_counts(spec))
    assert_optimal(plan, brute_force(chain, spec), spec.objective)
    if plan is not None:  # the reported plan is its own price under the shared evaluator
        again = evaluate(chain, spec, full_counts(spec), [(s.first, s.last, s.strategy, s.slots) for s in plan.stages])
        assert again == plan


def test_throughput_under_a_deadline_keeps_the_faster_of_two_equally_busy_stages():
    """Two conv blocks and an fc on a hub + two workers. Unbounded, data-parallel replicas give the best period, but a
    frame then waits for one device's whole run. Under a deadline below that latency, the first conv must be fused
    tiles on the two workers (busier, a frame finishes sooner). Tiles and replicas on the same two workers reach the
    same DP state and neither dominates the other (lower busy time vs lower latency): the DP must keep both."""
    convs = [block(b, [conv(f"c{b}", 32, 8, 8, 3, 1, (0.02, 0.02, 0.002))], True, False) for b in range(2)]
    chain = BlockChain(("a", "b", "cloud"), (*convs, block(2, [fc("fc", 8 * 32 * 32, 10, (0.001, 0.001, 1e-4))], False, True)))
    spec = make_spec([("hub", "a", 1, 10**9, 1.0, None), ("w", "b", 2, 10**9, 1.0, None)], "throughput", rate=1e9, rtt=0.0)
    free = Planner(chain, spec).solve(full_counts(spec))
    assert [s.strategy for s in free.stages][:1] == ["data"]
    bound = dataclasses.replace(spec, deadline_s=free.latency_s * 0.9)
    plan = Planner(chain, bound).solve(full_counts(spec))
    assert_optimal(plan, brute_force(chain, bound), "throughput")
    assert plan.latency_s <= bound.deadline_s and plan.period_s > free.period_s and plan.stages[0].strategy == "spatial"


def test_every_strategy_is_optimal_somewhere():
    """Each strategy wins some case the brute force agrees on: none is priced out or silently never offered."""
    seen = set()
    for seed in range(400):
        rnd = random.Random(seed)
        objective = ["latency", "throughput"][seed % 2]
        chain = random_chain(rnd, rnd.randint(1, 2))
        spec = make_spec([("hub", "a", 1, 10**9, 1.0, None), ("w", "b", 2, rnd.choice([10**9, 6000]), 1.0, None)],
                         objective, rate=rnd.choice([1e6, 1e8]))
        plan = Planner(chain, spec).solve(full_counts(spec))
        if plan is not None and not {s.strategy for s in plan.stages} <= seen:
            assert_optimal(plan, brute_force(chain, spec), objective)
            seen |= {s.strategy for s in plan.stages}
        if seen == {"single", "data", "spatial", "channel"}:
            break
    assert seen == {"single", "data", "spatial", "channel"}


def test_memory_is_a_hard_limit_and_devices_are_reused_under_latency():
    """Two conv blocks, each filling a device alone. On a fast LAN the latency optimum runs both spatially on all three
    devices (each device serves two stages). On a slow one it keeps both on the hub, until the memory limit forbids
    the hub to hold both: then a block moves and the frame pays the transfers (the brute force agrees each time)."""
    chain = BlockChain(("a", "b", "cloud"), (block(0, [conv("c0", 16, 3, 16, 3, 1, (0.01, 0.01, 0.001))], True, True),
                                             block(1, [conv("c1", 16, 16, 16, 3, 1, (0.01, 0.01, 0.001))], True, True)))
    need = max(b.weight_bytes + b.peak_bytes for b in chain.blocks)

    def solve(memory, rate, rtt):
        spec = make_spec([("hub", "a", 3, memory, 1.0, None)], rate=rate, rtt=rtt)
        plan = Planner(chain, spec).solve(full_counts(spec))
        assert_optimal(plan, brute_force(chain, spec), "latency")
        return plan

    fast = solve(10**9, 1e9, 0.0)
    assert [s.strategy for s in fast.stages] == ["spatial", "spatial"] and fast.stages[0].slots == fast.stages[1].slots
    slow = solve(10**9, 1e6, 2e-3)
    assert [(s.strategy, s.slots) for s in slow.stages] == [("single", ("hub/0",))]
    tight = solve(need, 1e6, 2e-3)
    assert tight.latency_s > slow.latency_s
    assert all(used <= need for _, used in tight.memory_bytes)
    assert len({s for st_ in tight.stages for s in st_.slots}) > 1


def test_a_search_too_large_falls_back_to_one_stage_per_device(monkeypatch):
    """Past MAX_EXPANSIONS states the latency search gives the best plan with each device in one stage, marked
    inexact: still a valid plan (the evaluator prices it), never better than the optimum."""
    rnd = random.Random(3)
    chain = random_chain(rnd, 3)
    spec = make_spec([("hub", "a", 1, 10**9, 1.0, None), ("w", "b", 2, 10**9, 1.0, None)], rate=1e8)
    exact = Planner(chain, spec).solve(full_counts(spec))
    monkeypatch.setattr("splitc.partition.cluster.MAX_EXPANSIONS", 0)
    fallback = Planner(chain, spec).solve(full_counts(spec))
    assert exact.exact and not fallback.exact
    assert fallback.latency_s >= exact.latency_s * (1 - 1e-12)
    slots = [s for st_ in fallback.stages for s in st_.slots]
    assert len(slots) == len(set(slots))
    assert evaluate(chain, spec, full_counts(spec), [(s.first, s.last, s.strategy, s.slots) for s in fallback.stages],
                    exact=False) == fallback


def test_when_the_fallback_finds_nothing_the_search_goes_on(monkeypatch):
    """Blocks of 10, 25 and 10 weight units on two devices holding 30: only a device serving blocks 0 and 2 works,
    which no plan with each device in one stage can do. A search cut short must not report 'nothing fits'."""
    layers = [fc(f"fc{b}", 8, 8, (0.01, 0.01, 0.001)) for b in range(3)]
    chain = BlockChain(("a", "b", "cloud"), tuple(
        dataclasses.replace(block(b, [layer], False, False), weight_bytes=w, peak_bytes=1)
        for b, (layer, w) in enumerate(zip(layers, (10_000, 25_000, 10_000)))))
    spec = make_spec([("hub", "a", 2, 31_000, 1.0, None)], rate=1e9)
    monkeypatch.setattr("splitc.partition.cluster.MAX_EXPANSIONS", 1)
    plan = Planner(chain, spec).solve(full_counts(spec))
    assert_optimal(plan, brute_force(chain, spec), "latency")
    assert [s.slots for s in plan.stages] in ([("hub/0",), ("hub/1",), ("hub/0",)], [("hub/1",), ("hub/0",), ("hub/1",)])


def test_plans_for_every_sub_multiset_and_the_smallest_memory_that_fits():
    rnd = random.Random(7)
    chain = random_chain(rnd, 3)
    spec = make_spec([("hub", "a", 2, 10**9, 1.0, None), ("w", "b", 2, 10**9, 0.5, None)], "throughput")
    plans = plan_all(chain, spec)
    assert set(plans) == set(count_vectors(spec)) == {(h, w) for h in (1, 2) for w in (0, 1, 2)}
    for counts, plan in plans.items():
        assert len(plan.devices) == sum(counts)
        assert {s for st_ in plan.stages for s in st_.slots} <= set(plan.devices)
        assert_optimal(plan, brute_force(chain, spec, counts), "throughput")
    assert plans[(2, 2)].period_s <= plans[(1, 0)].period_s  # more devices never hurt the optimum
    need = min(max(m for _, m in p.memory_bytes) for p in all_plans(chain, spec))  # brute force: least max memory
    tight = [dataclasses.replace(g, memory_bytes=need - 1) for g in spec.groups]
    with pytest.raises(SplitcError, match=rf"memory_mb >= {-(-need // 1000) / 1000:g} on every device") as err:
        plan_all(chain, dataclasses.replace(spec, groups=tuple(tight)))
    assert "\n" not in str(err.value)


def test_tile_rows_and_halo():
    """3x3 stride-1 convs: each layer back widens a tile by one row per side, clipped at the image border."""
    layers = [conv(f"c{k}", 16, 4, 4, 3, 1, (1.0,)) for k in range(3)]
    t = tile(layers, 4, 8, 0)
    assert t.in_rows == (1, 11) and t.out_rows == (4, 8)
    assert tile(layers, 0, 4, 0).in_rows == (0, 7)
    strided = conv("s", 16, 4, 4, 3, 2, (1.0,))  # out 8 rows; output rows [2, 4) read input rows 3..7
    assert tile([strided], 2, 4, 0).in_rows == (3, 8)
    assert t.seconds == pytest.approx(sum(0.05 + 0.95 * r / 16 for r in (8, 6, 4)))
    assert proportional(10, [1.0, 1.0, 0.5]) == [4, 4, 2] and sum(proportional(7, [1, 1, 1])) == 7
