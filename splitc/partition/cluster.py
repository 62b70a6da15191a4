"""The exact cluster planner over a block chain (pure: BlockChain + ClusterSpec -> ClusterPlan).

A plan is a path over block indices; each step is a stage [first, last) x strategy x how many devices of each unit
(interchangeable devices form a unit, so 4-8 devices of a few kinds stay a few hundred options per block pair).
- latency: shortest path (the fused-layer DP t(i, j) = min_k t_stage(i, k) + t(k, j), over strategies and device
  subsets). A device may serve several stages, so memory couples the stages: an A* search over (block, the memory each
  device already holds, devices of a unit anonymous) with the memory-free shortest path as its (exact, consistent)
  heuristic; it follows the memory-free optimum straight when that fits.
- throughput: each device in at most one stage; a DP over (block, devices left) keeping the Pareto set of
  (busiest device, busy seconds per link resource, latency): period = max of the first ones, latency <= deadline.
Prices come from splitc.partition.cluster_cost (shared with the brute force of splitc.partition.cluster_brute).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, replace

from splitc.cost.cluster import ClusterSpec
from splitc.errors import SplitcError
from splitc.partition.blocks import BlockChain
from splitc.partition.cluster_cost import (  # noqa: F401
    STRATEGIES,
    ClusterPlan,
    ClusterStage,
    StageCost,
    allowed,
    evaluate,
    resources,
    stage_cost,
    units,
)

MAX_EXPANSIONS = 20_000  # A* states popped before falling back to plans with each device in one stage (~1 min)
_EPS = 1e-12


@dataclass(frozen=True)
class Option:
    first: int
    last: int
    strategy: str
    take: tuple[int, ...]  # devices per unit
    cost: StageCost
    charge: tuple[tuple[int, int], ...]  # per unit: (weights, peak) each of its devices is charged


def full_counts(spec: ClusterSpec) -> tuple[int, ...]:
    return tuple(g.count for g in spec.groups) + ((1,) if spec.server else ())


def count_vectors(spec: ClusterSpec) -> list[tuple[int, ...]]:
    """Every sub-multiset of the devices that keeps the hub (the coordinator)."""
    ranges = [range(1 if g.hub else 0, g.count + 1) for g in spec.groups] + ([range(2)] if spec.server else [])
    return [v for v in itertools.product(*ranges)]


class Planner:
    def __init__(self, chain: BlockChain, spec: ClusterSpec):
        self.chain, self.spec = chain, spec
        self.units = units(chain, spec, full_counts(spec))
        self.options: list[list[Option]] = [[] for _ in chain.blocks]
        takes = [t for t in itertools.product(*[range(u.count + 1) for u in self.units]) if sum(t)]
        for first in range(len(chain.blocks)):
            for last in range(first + 1, len(chain.blocks) + 1):
                for t in takes:
                    devs = tuple(u for u, n in enumerate(t) for _ in range(n))
                    for strategy in STRATEGIES:
                        if not allowed(chain, first, last, strategy, len(devs), spec.objective):
                            continue
                        sc = stage_cost(chain, spec, self.units, first, last, strategy, devs)
                        if sc is not None:
                            charge = [(0, 0)] * len(t)
                            for d, m in zip(devs, sc.memory):
                                charge[d] = m
                            self.options[first].append(Option(first, last, strategy, t, sc, tuple(charge)))

    def avail(self, counts: tuple[int, ...]) -> tuple[int, ...]:
        """Devices per unit of the sub-multiset ``counts`` (per group, then the server)."""
        out = []
        for g, n in zip(self.spec.groups, counts):
            for u in self.units:
                if u.group == g.name:
                    take = min(n, 1) if u.hub else max(0, n - (1 if g.hub else 0))
                    out.append(take)
        if self.spec.server and len(self.units) > len(out):
            out.append(counts[-1])
        return tuple(out)

    def solve(self, counts: tuple[int, ...], memory_bytes: float | None = None, bound: float = math.inf) -> ClusterPlan | None:
        """The best plan of the sub-multiset ``counts``; ``memory_bytes``: every device's memory instead of its own;
        ``bound``: throughput, a period some plan of these devices is known to reach (a smaller set's best)."""
        avail, spec = self.avail(counts), self.spec
        if memory_bytes is not None:
            spec = replace(spec, groups=tuple(replace(g, memory_bytes=memory_bytes) for g in spec.groups))
        memory = tuple(u.memory if memory_bytes is None or u.memory == math.inf else memory_bytes for u in self.units)
        opts = [[o for o in row if all(t <= a for t, a in zip(o.take, avail))
                 and all(w + p <= m for (w, p), m in zip(o.charge, memory))] for row in self.options]
        if self.spec.objective == "latency":
            stages = self._astar(opts, avail, memory, MAX_EXPANSIONS)
            if stages is not None:
                return self._merged(spec, counts, stages) if stages else None
        stages = self._pareto(opts, avail, bound)
        if not stages and self.spec.objective == "latency":  # no plan with a device per stage: search on (4x)
            stages = self._astar(opts, avail, memory, 4 * MAX_EXPANSIONS)
            return self._merged(spec, counts, stages) if stages else None
        return evaluate(self.chain, spec, counts, stages, spec.objective == "throughput") if stages else None

    def _merged(self, spec, counts, stages) -> ClusterPlan | None:
        """Consecutive single stages on one device (the hub's split in two costs the same) as one stage."""
        plan = evaluate(self.chain, spec, counts, stages)
        joined: list = []
        for st in stages:
            if joined and st[2] == joined[-1][2] == "single" and st[3] == joined[-1][3]:
                joined[-1] = (joined[-1][0], st[1], "single", st[3])
            else:
                joined.append(st)
        fewer = evaluate(self.chain, spec, counts, joined) if len(joined) < len(stages) else None
        return fewer if fewer is not None and fewer.latency_s <= plan.latency_s * (1 + 1e-9) else plan

    def _slots(self, u: int, ks) -> tuple[str, ...]:
        return tuple(self.units[u].slot(k) for k in ks)

    def _astar(self, opts: list[list[Option]], avail, memory, limit: int):
        """Min latency, devices reusable, memory exact. [] when no plan fits; None past ``limit`` states."""
        n = len(self.chain.blocks)
        h = [math.inf] * n + [0.0]
        for i in reversed(range(n)):
            h[i] = min((o.cost.latency_s + h[o.last] for o in opts[i]), default=math.inf)
        if h[0] == math.inf:
            return []
        # what the blocks left need at least: their weights somewhere (a channel split spreads a block's weights,
        # every other strategy puts all of them on each of its devices), and a block that cannot be channel-split
        # whole on one device; a state whose free memory cannot hold that is dropped (memory in use only grows)
        rest, whole = [0] * (n + 1), [0] * (n + 1)
        for b in reversed(range(n)):
            block = self.chain.blocks[b]
            rest[b] = rest[b + 1] + block.weight_bytes
            whole[b] = max(whole[b + 1], 0 if block.channel else block.weight_bytes)

        def room(mem, j: int) -> bool:
            free = [memory[u] - w - p for u, m in enumerate(mem) for w, p in m]
            return sum(free) >= rest[j] and max(free, default=-1) >= whole[j]

        start = tuple(((0, 0),) * a for a in avail)
        if not room(start, 0):
            return []
        heap = [(h[0], 0, 0, 0.0, 0, start, None)]
        closed: set = set()
        tie = itertools.count(1)
        while heap:
            _, _, _, g, i, mem, path = heapq.heappop(heap)
            key = (i, tuple(tuple(sorted(m)) for m in mem))
            if key in closed:
                continue
            closed.add(key)
            if i == n:
                stages = []
                while path is not None:
                    path, stage = path
                    stages.append(stage)
                return stages[::-1]
            if len(closed) > limit:
                return None
            for o in opts[i]:
                if h[o.last] == math.inf:
                    continue
                per_unit = []
                for u, t in enumerate(o.take):
                    if not t:
                        per_unit.append([((), mem[u])])
                        continue
                    choices, seen = [], set()
                    for ks in itertools.combinations(range(avail[u]), t):
                        states = tuple(mem[u][k] for k in ks)
                        if states in seen:
                            continue
                        seen.add(states)
                        w, p = o.charge[u]
                        new = list(mem[u])
                        for k in ks:
                            new[k] = (new[k][0] + w, max(new[k][1], p))
                        if all(a + b <= memory[u] for a, b in (new[k] for k in ks)):
                            choices.append((ks, tuple(new)))
                    per_unit.append(choices)
                for combo in itertools.product(*per_unit):
                    if not room([m for _, m in combo], o.last):
                        continue
                    slots = tuple(s for u, (ks, _) in enumerate(combo) for s in self._slots(u, ks))
                    g2 = g + o.cost.latency_s
                    heapq.heappush(heap, (g2 + h[o.last], -o.last, next(tie), g2, o.last, tuple(m for _, m in combo),
                                          (path, (o.first, o.last, o.strategy, slots))))
        return []

    def _pareto(self, opts: list[list[Option]], avail, bound: float = math.inf):
        """Each device in at most one stage: the Pareto set per (block, devices left) of (busiest device, busy per
        link resource, latency); the min period (then latency) under throughput, else the min latency."""
        n, spec = len(self.chain.blocks), self.spec
        deadline = spec.deadline_s if spec.objective == "throughput" and spec.deadline_s is not None else math.inf
        throughput = spec.objective == "throughput"
        # ``bound``: the best complete period so far; labels past it are dropped (throughput)
        floor = [0.0] * (n + 1)  # a lower bound on the period of any plan of blocks [i, n): the busiest block's best
        for b in reversed(range(n)):
            best_b = min((o.cost.busy_s for row in opts[: b + 1] for o in row if o.last > b), default=math.inf)
            floor[b] = max(floor[b + 1], best_b)
        by_take = []
        for row in opts:
            groups: dict = {}
            for o in row:
                groups.setdefault(o.take, []).append(o)
            by_take.append(groups)
        labels: dict = {(0, avail): [((0.0,) * (1 + len(resources(spec))), 0.0, None)]}
        for i in range(n):
            for (at, left), rows in sorted(((k, v) for k, v in labels.items() if k[0] == i), key=lambda kv: kv[0]):
                for take, group in by_take[i].items():
                    if any(t > a for t, a in zip(take, left)):
                        continue
                    rest = tuple(a - t for a, t in zip(left, take))
                    for o in group:
                        target = labels.setdefault((o.last, rest), [])
                        for vec, lat, back in rows:
                            lat2 = lat + o.cost.latency_s
                            # the busiest device so far counts only above the floor of what is left (every plan
                            # of the rest has a stage at least that busy): labels below it tie and dominate
                            vec2 = (max(vec[0], o.cost.busy_s, floor[o.last] if throughput else 0.0),) \
                                + tuple(a + b for a, b in zip(vec[1:], o.cost.links))
                            if lat2 > deadline or (throughput and max(max(vec2), floor[o.last]) > bound * (1 + _EPS)):
                                continue
                            if _insert(target, (vec2, lat2, (back, o))) and o.last == n and throughput:
                                bound = min(bound, max(vec2))
        done = [r for (at, _), rows in labels.items() if at == n for r in rows]
        if not done:
            return []
        if spec.objective == "throughput":
            best = min(max(v) for v, _, _ in done)
            done = [r for r in done if max(r[0]) <= best * (1 + _EPS)]
        _, _, back = min(done, key=lambda r: r[1])
        chosen = []
        while back is not None:
            back, o = back
            chosen.append(o)
        used = [0] * len(self.units)
        stages = []
        for o in reversed(chosen):
            slots = tuple(s for u, t in enumerate(o.take) for s in self._slots(u, range(used[u], used[u] + t)))
            used = [a + t for a, t in zip(used, o.take)]
            stages.append((o.first, o.last, o.strategy, slots))
        return stages


def _insert(rows: list, label) -> bool:
    """Add ``label`` to a Pareto set unless one there is as good in every component; False when it was not added."""
    vec, lat, _ = label
    key = vec + (lat,)
    for other in rows:
        if all(a <= b for a, b in zip(other[0] + (other[1],), key)):
            return False
    rows[:] = [r for r in rows if not all(a <= b for a, b in zip(key, r[0] + (r[1],)))]
    rows.append(label)
    return True


def plan_all(chain: BlockChain, spec: ClusterSpec) -> dict[tuple[int, ...], ClusterPlan]:
    """The best plan of every sub-multiset of the devices that keeps the hub, keyed by devices per group (then the
    server: 0 or 1); sub-multisets where nothing fits are left out. Nothing fits the whole cluster: a one-line error."""
    planner = Planner(chain, spec)
    plans: dict[tuple[int, ...], ClusterPlan] = {}
    for counts in count_vectors(spec):  # every smaller set comes first: its best plan is a plan of this set too
        known = min((p.period_s for c, p in plans.items() if all(a <= b for a, b in zip(c, counts))), default=math.inf)
        if sum(planner.avail(counts)) and (p := planner.solve(counts, bound=known)) is not None:
            plans[counts] = p
    if full_counts(spec) not in plans:
        raise nothing_fits(planner)
    return plans


def nothing_fits(planner: Planner) -> SplitcError:
    """Why nothing fits the whole cluster: the deadline (even with unbounded memory), or the least memory every device
    would need (a binary search over one memory size for all: the least, over plans, of their fullest device)."""
    spec, full = planner.spec, full_counts(planner.spec)
    if planner.solve(full, math.inf) is None:
        if spec.deadline_s is None:
            return SplitcError(f"{spec.source}: no device of the cluster can compute (field 'worker')")
        fastest = Planner(planner.chain, replace(spec, objective="latency", deadline_s=None)).solve(full, math.inf)
        return SplitcError(f"{spec.source}: no plan meets deadline_ms = {spec.deadline_s * 1e3:g}; the fastest plan takes"
                           f" {fastest.latency_s * 1e3:.1f} ms: raise deadline_ms or add devices")
    # plans with each device in at most one stage (the label search; all the throughput objective allows): exact
    # under throughput, an upper bound under latency (whose exact search over device reuse can take minutes when
    # memory is the binding limit)
    exact = spec.objective == "throughput"
    quick = planner if exact else Planner(planner.chain, replace(spec, objective="throughput", deadline_s=None))
    lo, hi = 0, 1 << 20
    while quick.solve(full, hi) is None:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if quick.solve(full, mid) is not None else (mid, hi)
    have = min(g.memory_bytes for g in spec.groups) / 1e6
    return SplitcError(f"{spec.source}: the model fits no plan on this cluster (field 'memory_mb' = {have:g} on the"
                       f" smallest device); {'it needs memory_mb >=' if exact else 'a plan fits with memory_mb ='}"
                       f" {math.ceil(hi / 1e3) / 1e3:g} on every device; raise it or add devices")
