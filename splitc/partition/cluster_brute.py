"""Brute force over every cluster plan of a small case: all segmentations of the block chain x every strategy x every
set of actual slots per stage, priced by the planner's own evaluator. The tests check the planner against it."""

from __future__ import annotations

import itertools

from splitc.cost.cluster import ClusterSpec
from splitc.partition.blocks import BlockChain
from splitc.partition.cluster import full_counts
from splitc.partition.cluster_cost import (
    STRATEGIES,
    ClusterPlan,
    allowed,
    evaluate,
    units,
)

_EPS = 1e-12


def better(a: ClusterPlan, b: ClusterPlan | None, objective: str) -> bool:
    """Latency: the lower latency. Throughput: the lower period, then the lower latency."""
    if b is None:
        return True
    if objective == "throughput" and abs(a.period_s - b.period_s) > _EPS * max(a.period_s, b.period_s):
        return a.period_s < b.period_s
    return a.latency_s < b.latency_s


def all_plans(chain: BlockChain, spec: ClusterSpec, counts: tuple[int, ...] | None = None):
    """Every valid plan (None-priced ones left out)."""
    counts = counts or full_counts(spec)
    us = units(chain, spec, counts)
    slots = [u.slot(k) for u in us for k in range(u.count)]
    subsets = [c for r in range(1, len(slots) + 1) for c in itertools.combinations(slots, r)]
    n = len(chain.blocks)
    disjoint = spec.objective == "throughput"

    def stages_from(first: int, used: frozenset):
        if first == n:
            yield []
            return
        for last in range(first + 1, n + 1):
            for subset in subsets:
                if disjoint and used & set(subset):
                    continue
                for strategy in STRATEGIES:
                    if not allowed(chain, first, last, strategy, len(subset), spec.objective):
                        continue
                    for rest in stages_from(last, used | set(subset)):
                        yield [(first, last, strategy, subset)] + rest

    for stages in stages_from(0, frozenset()):
        plan = evaluate(chain, spec, counts, stages)
        if plan is not None:
            yield plan


def brute_force(chain: BlockChain, spec: ClusterSpec, counts: tuple[int, ...] | None = None) -> ClusterPlan | None:
    best = None
    for plan in all_plans(chain, spec, counts):
        if better(plan, best, spec.objective):
            best = plan
    return best
