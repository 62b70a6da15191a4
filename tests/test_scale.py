"""Compile-time memory stays linear in the graph: baselines, the single-cut curve and evaluation (issue 11)."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from splitc.cost.targets import Link
from splitc.partition.baselines import baselines
from splitc.partition.costgraph import CNode, CostGraph, CTensor, evaluate_cuts, evaluate_many
from splitc.partition.synth import synthetic_dag


def chain(n: int) -> CostGraph:
    """A chain whose tensors shrink from 1 MB to 100 bytes half way: the best single cut is there."""
    nodes = tuple(CNode(f"n{i}", "Relu", (1e-4, 1e-6)) for i in range(n))
    size = [10**6 if i < n // 2 else 100 for i in range(n)]
    tensors = (CTensor("x", None, (0,), False, 10**6, 10**6),) + tuple(
        CTensor(f"t{i}", i, (i + 1,) if i + 1 < n else (), i + 1 == n, size[i], size[i]) for i in range(n))
    return CostGraph(("dev", "cloud"), nodes, tensors, (Link("l", 10e6, 50e6, 0.02),), (1e8, 1e9), (1e8, 1e9))


@pytest.mark.parametrize("tiers", [2, 3])
@pytest.mark.parametrize("variant", ["plain", "tied", "return"])
def test_evaluate_cuts_prices_every_single_cut_as_evaluate_many(tiers, variant):
    for seed in range(6):
        cg = synthetic_dag(12 + 3 * seed, seed=seed, tiers=tiers)
        cg = {"plain": cg, "tied": replace(cg, tied=((1, 4), (6, 7))), "return": replace(cg, allow_return=True)}[variant]
        n = len(cg.nodes)
        dense = (np.arange(n)[None, :] >= np.arange(n + 1)[:, None]).astype(np.int64) * (tiers - 1)  # row c: c on the device
        want, got = evaluate_many(cg, dense), evaluate_cuts(cg)
        assert (got["feasible"] == want["feasible"]).all()
        if variant == "tied":
            assert not got["feasible"].all()  # the tied pairs rule some cuts out
        for key in ("total", "rtt", "transfer", "energy", "period"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-15, err_msg=key)
        for key in ("compute", "bytes_up", "bytes_down"):
            for a, b in zip(got[key], want[key]):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15, err_msg=key)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_baselines_memory_is_linear_in_the_node_count():
    """Twice the nodes, about twice the memory: the dense (n+1) x n cut matrix made it four times (a 20,000-node
    chain ran out of memory)."""
    small, large = chain(3000), chain(6000)
    ratio = _peak_bytes(lambda: baselines(large)) / _peak_bytes(lambda: baselines(small))
    assert ratio < 2.6, f"baselines' peak memory grew {ratio:.1f}x for 2x the nodes"
    base = baselines(large)
    assert base["best_single_cut"].cost.total_s == pytest.approx(float(evaluate_cuts(large)["total"].min()))
    assert base["best_single_cut"].cost.total_s < min(base["device_only"].cost.total_s, base["cloud_only"].cost.total_s)


def test_single_cut_curve_memory_is_linear_in_the_node_count():
    from splitc.codegen.report import single_cut_curve

    ratio = _peak_bytes(lambda: single_cut_curve(chain(12000))) / _peak_bytes(lambda: single_cut_curve(chain(6000)))
    assert ratio < 2.6, f"the report's single-cut curve grew {ratio:.1f}x for 2x the nodes"


def test_schedule_is_linear_in_the_node_count():
    """Each node's readiness was checked against a fresh union of every scheduled node: 5 s of CPU for 20,000 nodes
    (two minutes for 100,000)."""
    from splitc.partition.schedule import schedule

    n = 20000
    t0 = time.process_time()
    plan = schedule(chain(n), [0] * (n // 2) + [1] * (n - n // 2))
    assert time.process_time() - t0 < 1.5
    assert [s.nodes for s in plan.stages] == [tuple(range(n // 2)), tuple(range(n // 2, n))]
    assert [(h.tensor, h.up) for h in plan.hops] == [(n // 2, True), (n, False)]  # t{n/2-1} goes up, the result comes down
