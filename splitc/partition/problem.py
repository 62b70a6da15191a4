"""The partitioning problem's vocabulary: objectives, goals (objective + limits), solutions and policies.

Every solver (``optimizer``: ILP/LP; ``baselines``: min-cut, single cuts, brute force) speaks it; none imports another's privates.
A *policy* is any ``CostGraph -> Solution`` callable; ``PartitionPass`` takes one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from splitc.errors import SplitcError
from splitc.partition.costgraph import Breakdown, CostGraph, evaluate

OBJECTIVES = ("latency", "energy", "throughput")


@dataclass(frozen=True)
class Goal:
    """What to minimise, and the limits a plan must meet (None: no limit)."""

    objective: str = "latency"
    deadline_s: float | None = None
    max_energy_j: float | None = None
    max_device_memory: int | None = None
    max_cloud_s: float | None = None

    def limits(self) -> dict[str, float]:
        pairs = {"latency": self.deadline_s, "energy": self.max_energy_j, "device_memory": self.max_device_memory,
                 "cloud_time": self.max_cloud_s}
        return {k: float(v) for k, v in pairs.items() if v is not None}

    def met_by(self, cost: Breakdown) -> bool:
        return cost.feasible and all(cost.metric(m) <= v * (1 + 1e-9) + 1e-12 for m, v in self.limits().items())


LIMIT_FLAGS = {"latency": "--deadline", "energy": "--max-energy", "device_memory": "--max-device-memory",
               "cloud_time": "--max-cloud-time"}


class Infeasible(SplitcError):
    """No placement meets the limits; the message names the binding one and what would do."""


@dataclass(frozen=True)
class Solution:
    placement: tuple[int, ...]  # tier index per node
    cost: Breakdown
    method: str
    solve_s: float
    status: str = "optimal"  # or "time limit" (then gap says how far from proven optimal)
    gap: float = 0.0
    notes: tuple[str, ...] = field(default=())
    bound: float | None = None  # the solver's proven lower bound on the objective (None: it reported none)


def solution(cg: CostGraph, placement, method: str, t0: float, status: str = "optimal", gap: float = 0.0) -> Solution:
    placement = tuple(int(p) for p in placement)
    return Solution(placement, evaluate(cg, placement), method, time.perf_counter() - t0, status, gap)


def on_input_output_paths(cg: CostGraph) -> bool:
    """Is every node reachable from a graph input and able to reach a graph output?"""
    n = len(cg.nodes)
    succ: list[list[int]] = [[] for _ in range(n)]
    from_input, to_output = [False] * n, [False] * n
    for t in cg.tensors:
        for c in t.consumers:
            if t.producer is None:
                from_input[c] = True
            else:
                succ[t.producer].append(c)
        if t.is_output and t.producer is not None:
            to_output[t.producer] = True
    for i in range(n):  # indices are topological
        if from_input[i]:
            for c in succ[i]:
                from_input[c] = True
    for i in reversed(range(n)):
        if any(to_output[c] for c in succ[i]):
            to_output[i] = True
    return all(from_input) and all(to_output)


def fixed(placement, method: str = "fixed"):
    """A policy that returns ``placement`` as it is (replaying a plan, e.g. one of a sweep), priced by the shared
    evaluator. ``placement`` is a tier per node, or a function ``cost_graph -> tier per node``."""

    def policy(cg: CostGraph) -> Solution:
        return solution(cg, placement(cg) if callable(placement) else placement, method, time.perf_counter())

    return policy
