"""From a placement to an execution schedule: stages and hops (no IR, no policy).

A stage is a maximal run of nodes on one tier that can execute once everything before it has;
a plan without return flows has at most one stage per tier, in chain order. Stage 0 is always
on the device (where inputs originate), possibly empty. A hop moves one tensor across one link
in one direction, right after the stage that produced it, toward the farthest tier that reads
it (relayed hop by hop); results produced away from the device are brought down to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitc.partition.costgraph import CostGraph


@dataclass(frozen=True)
class Stage:
    index: int
    tier: int
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class Hop:
    tensor: int  # index into cost_graph.tensors
    link: int  # joins tiers link and link + 1
    up: bool
    stage: int  # sent right after this stage

    @property
    def src(self) -> int:
        return self.link if self.up else self.link + 1

    @property
    def dst(self) -> int:
        return self.link + 1 if self.up else self.link


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    hops: tuple[Hop, ...]
    stage_of: tuple[int, ...]  # per node


def schedule(cg: CostGraph, placement) -> Schedule:
    n, k = len(cg.nodes), cg.k
    preds: list[set[int]] = [set() for _ in range(n)]
    for t in cg.tensors:
        if t.producer is not None:
            for c in t.consumers:
                preds[c].add(t.producer)
    done: set[int] = set()
    stages: list[Stage] = []
    stage_of = [-1] * n
    tier = 0
    while len(done) < n or not stages:
        for attempt in range(k):
            t = (tier + attempt) % k
            batch: list[int] = []
            taken: set[int] = set()
            for v in range(n):  # indices are topological: one pass closes the batch
                if v not in done and placement[v] == t and all(p in done or p in taken for p in preds[v]):
                    batch.append(v)
                    taken.add(v)
            if batch or not stages:  # stage 0 is the device's, even when it runs nothing
                for v in batch:
                    stage_of[v] = len(stages)
                stages.append(Stage(len(stages), t, tuple(batch)))
                done |= taken
                tier = t
                break
        else:  # pragma: no cover - a cycle cannot occur in a DAG
            raise ValueError("placement cannot be scheduled")
    hops: list[Hop] = []
    for j, t in enumerate(cg.tensors):
        src = 0 if t.producer is None else placement[t.producer]
        stage = 0 if t.producer is None else stage_of[t.producer]
        tiers = {placement[c] for c in t.consumers} | ({0} if t.is_output else set())
        hi, lo = max(tiers, default=src), min(tiers, default=src)
        hops += [Hop(j, link, True, stage) for link in range(src, hi)]
        hops += [Hop(j, link, False, stage) for link in reversed(range(lo, src))]
    hops.sort(key=lambda h: (h.stage, not h.up, h.link if h.up else -h.link))
    return Schedule(tuple(stages), tuple(hops), tuple(stage_of))
