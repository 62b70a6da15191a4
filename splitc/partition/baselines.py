"""The published baselines, the min-cut and brute force, priced in the one cost model.

- device_only / cloud_only: everything on the first / last tier.
- best_single_cut (Neurosurgeon): the best cut along one topological order, device -> last tier.
- dads (DADS): the minimum s-t cut over the whole DAG (networkx), device vs. last tier.
- brute_force: every placement, for checking the exact methods on small graphs.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from splitc.partition.costgraph import CostGraph, evaluate_cuts, evaluate_many
from splitc.cost.targets import Link
from splitc.partition.problem import Goal, Infeasible, on_input_output_paths, solution


def _collapse(cg: CostGraph) -> CostGraph:
    """A two-tier view (device, last tier) of a chain: the links in series."""
    if cg.k == 2:
        return cg
    links = cg.links
    series = Link(
        "+".join(l.name for l in links),
        1.0 / sum(1.0 / l.up_bps for l in links),
        1.0 / sum(1.0 / l.down_bps for l in links),
        sum(l.rtt_s for l in links),
        radio=links[0].radio,
        # every hop sends its own message: at the series rate this framing takes the seconds of all hops' (up)
        message_bytes=sum(l.message_bytes / l.up_bps for l in links) / sum(1.0 / l.up_bps for l in links),
        segment_header_bytes=links[0].segment_header_bytes,
        mss_bytes=links[0].mss_bytes,
    )
    nodes = tuple(replace(n, latency_s=(n.latency_s[0], n.latency_s[-1])) for n in cg.nodes)
    tensors = tuple(t if t.coder_s is None else replace(t, coder_s=(t.coder_s[0], t.coder_s[-1])) for t in cg.tensors)
    return replace(cg, tiers=(cg.tiers[0], cg.tiers[-1]), nodes=nodes, tensors=tensors, links=(series,),
                   encode_bytes_per_s=(cg.encode_bytes_per_s[0], cg.encode_bytes_per_s[-1]),
                   decode_bytes_per_s=(cg.decode_bytes_per_s[0], cg.decode_bytes_per_s[-1]),
                   busy_power_w=(cg.busy_power_w[0], cg.busy_power_w[-1]))


def solve_mincut(cg: CostGraph):
    """The latency optimum as a minimum s-t cut (DADS' construction), with networkx.

    Source side = device. Node v: s->v costs its server latency, v->t its device latency.
    A tensor gets an auxiliary vertex a: p->a carries its upload cost and a->c is infinite for
    every consumer, so the upload is paid once. Outputs pay their download on s->p. c->p is
    infinite (data flows forward), and tied nodes are joined both ways. Any plan that uses the
    server uses both directions (inputs start and outputs end on the device), so the RTT is
    charged to the cut plan and compared with device-only. That argument needs every node on an
    input-to-output path (true of every imported model, whose dead code is pruned); other graphs
    are refused. With more than two tiers it cuts between the device and the last tier.
    """
    import networkx as nx

    if not on_input_output_paths(cg):
        raise ValueError("min-cut is exact only when every node lies on a path from an input to an output; use solve_ilp")
    t0 = time.perf_counter()
    from splitc.partition.coarsen import coarsen

    # contract nodes that provably share a tier in an optimal plan (exact for latency, which is what the cut prices):
    # a 100,000-node chain becomes a handful of nodes, and the max-flow is the slow part
    contracted = coarsen(_collapse(cg))
    if not on_input_output_paths(contracted.graph):
        contracted = None
    two = contracted.graph if contracted is not None else _collapse(cg)
    g = nx.DiGraph()
    s, t = "s", "t"
    for i, node in enumerate(two.nodes):
        g.add_edge(s, i, capacity=_units(node.latency_s[1]))
        g.add_edge(i, t, capacity=_units(node.latency_s[0]))
    for j, ten in enumerate(two.tensors):
        if ten.consumers:
            src = ten.producer if ten.producer is not None else s
            aux = ("a", j)
            _add_capacity(g, src, aux, two.send_s(ten, 0, 1))
            for c in ten.consumers:
                g.add_edge(aux, c)  # no capacity attribute: infinite
        if ten.is_output and ten.producer is not None:
            _add_capacity(g, s, ten.producer, two.send_s(ten, 1, 0))
    for p, c in two.edges():
        g.add_edge(c, p)
    for a, b in two.tied:
        g.add_edge(a, b)
        g.add_edge(b, a)
    _, (source_side, _) = nx.minimum_cut(g, s, t)
    last = cg.k - 1
    side = [0 if i in source_side else 1 for i in range(len(two.nodes))]
    placement = [tier * last for tier in (contracted.expand(side) if contracted is not None else side)]
    cut = solution(cg, placement, "mincut", t0)
    device = solution(cg, [0] * len(cg.nodes), "mincut", t0)
    return cut if cut.cost.total_s <= device.cost.total_s else device


def _units(seconds: float) -> int:
    """Capacities in integer femtoseconds: networkx's max-flow is only exact on integers (with
    float capacities, round-off leaves saturated edges with a tiny residual and the returned
    partition is not a minimum cut)."""
    return int(round(seconds * 1e15))


def _add_capacity(g, u, v, cap: float) -> None:
    cap = _units(cap)
    if g.has_edge(u, v) and "capacity" in g[u][v]:
        g[u][v]["capacity"] += cap
    else:
        g.add_edge(u, v, capacity=cap)


def brute_force(cg: CostGraph, max_nodes: int = 22, goal=None):
    """Try every placement (k^n); the best that meets ``goal`` (default: latency, no limits)."""
    goal = goal or Goal()
    t0 = time.perf_counter()
    n, k = len(cg.nodes), cg.k
    if k ** n > k ** max_nodes or n > max_nodes:
        raise ValueError(f"brute force over {n} nodes ({k}^{n} placements) is too slow (max {max_nodes})")
    best_key, best = (np.inf, np.inf), None
    total = k ** n
    chunk = max(1, min(total, 1 << 16))
    powers = k ** np.arange(n, dtype=np.int64)
    metric = {"latency": "total", "energy": "energy", "throughput": "period"}[goal.objective]
    limit_keys = {"latency": "total", "energy": "energy", "device_memory": "memory", "cloud_time": None}
    for start in range(0, total, chunk):
        codes = np.arange(start, min(start + chunk, total), dtype=np.int64)
        x = (codes[:, None] // powers) % k
        r = evaluate_many(cg, x)
        ok = r["feasible"].copy()
        for m, bound in goal.limits().items():
            value = r["compute"][-1] if m == "cloud_time" else r[limit_keys[m]]
            ok &= value <= bound * (1 + 1e-9) + 1e-12
        primary = np.where(ok, r[metric], np.inf)
        i = int(np.lexsort((np.where(ok, r["total"], np.inf), primary))[0])
        key = (primary[i], r["total"][i])
        if key < best_key:
            best_key, best = key, x[i]
    if best is None or not np.isfinite(best_key[0]):
        raise Infeasible("no placement meets the limits")
    return solution(cg, best, "brute_force", t0)


def baselines(cg: CostGraph, goal=None) -> dict:
    """device_only, cloud_only, best_single_cut (Neurosurgeon, by the goal's objective) and dads (min-cut)."""
    goal = goal or Goal()
    t0 = time.perf_counter()
    n, last = len(cg.nodes), cg.k - 1
    r = evaluate_cuts(cg)  # row c: the first c nodes on the device
    metric = {"latency": "total", "energy": "energy", "throughput": "period"}[goal.objective]
    value = np.where(r["feasible"], r[metric], np.inf)[::-1]  # device-only first: ties go to the most nodes on the device
    best = value.min()
    # the sums are difference arrays, so equal costs may differ in the last bits: the first within round-off wins
    i = int(np.argmax(value <= best + 1e-12 * abs(best))) if np.isfinite(best) else 0
    c = n - i
    out = {
        "device_only": solution(cg, [0] * n, "device_only", t0),
        "cloud_only": solution(cg, [last] * n, "cloud_only", t0),
        "best_single_cut": solution(cg, [0] * c + [last] * (n - c), "best_single_cut", t0),
    }
    if on_input_output_paths(cg) and not cg.allow_return:
        out["dads"] = solve_mincut(cg)
    return out
