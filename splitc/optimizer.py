"""Exact partitioning of a cost graph: the ILP (PuLP), the min-cut, brute force and baselines.

Policy only: this module sees a :class:`CostGraph` and returns placements. It never touches
the IR. Every placement is priced by :func:`splitc.costgraph.evaluate`, so all methods are
compared in one cost model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from splitc.costgraph import Breakdown, CostGraph, evaluate, evaluate_many


@dataclass(frozen=True)
class Solution:
    placement: tuple[int, ...]  # tier index per node
    cost: Breakdown
    method: str
    solve_s: float
    status: str = "optimal"


def _solution(cg: CostGraph, placement, method: str, t0: float, status: str = "optimal") -> Solution:
    placement = tuple(int(p) for p in placement)
    return Solution(placement, evaluate(cg, placement), method, time.perf_counter() - t0, status)


def solve_ilp(cg: CostGraph, time_limit_s: float | None = None, solver: str = "auto") -> Solution:
    """Minimise end-to-end latency exactly, as a 0-1 ILP.

    x[v] = 1 places node v on the server. For each tensor t: up[t] >= x[c] - x[p] for every
    consumer c (sent once, whatever the number of consumers); down[t] >= x[p] for outputs.
    Data flows forward: x[c] >= x[p]. U >= up[t], D >= down[t] charge the RTT per direction.
    The constraints are difference constraints, so the LP relaxation is integral and HiGHS
    proves optimality at the root.
    """
    import pulp

    t0 = time.perf_counter()
    n = len(cg.nodes)
    prob = pulp.LpProblem("splitc_partition", pulp.LpMinimize)
    var = _variable_factory(prob)
    x = [var(f"x{i}", 0, 1, "Binary") for i in range(n)]
    use_up = var("U", 0, 1)
    use_down = var("D", 0, 1)
    terms = [(cg.nodes[i].latency_s[0], 1 - x[i]) for i in range(n)]
    terms += [(cg.nodes[i].latency_s[1], x[i]) for i in range(n)]
    for j, t in enumerate(cg.tensors):
        up_cost, down_cost = cg.send_s(t, 0, 1), cg.send_s(t, 1, 0)
        if t.consumers:
            up = var(f"u{j}", 0, 1)
            for c in t.consumers:
                prob += up >= x[c] - (x[t.producer] if t.producer is not None else 0)
            prob += use_up >= up
            terms.append((up_cost, up))
        if t.is_output and t.producer is not None:
            down = var(f"d{j}", 0, 1)
            prob += down >= x[t.producer]
            prob += use_down >= down
            terms.append((down_cost, down))
    for p, c in cg.edges():
        prob += x[c] >= x[p]
    for a, b in cg.tied:
        prob += x[a] == x[b]
    prob += pulp.lpSum(coef * var for coef, var in terms) + cg.link.rtt_s * (use_up + use_down)
    status = _solve(prob, time_limit_s, solver)
    placement = [int(round(v.value() or 0)) for v in x]
    return _solution(cg, placement, f"ilp/{status[0]}", t0, status[1])


def _variable_factory(prob):
    """PuLP >= 3.3 attaches variables to the problem (``add_variable``); older PuLP builds them free-standing."""
    import pulp

    if hasattr(prob, "add_variable"):
        return lambda name, low, up, cat="Continuous": prob.add_variable(name, low, up, cat=cat)
    return lambda name, low, up, cat="Continuous": pulp.LpVariable(name, low, up, cat=cat)


def _solve(prob, time_limit_s: float | None, solver: str) -> tuple[str, str]:
    import pulp

    available = pulp.listSolvers(onlyAvailable=True)
    name = solver if solver != "auto" else ("HiGHS" if "HiGHS" in available else "PULP_CBC_CMD")
    kwargs = {"msg": False}
    if time_limit_s is not None:
        kwargs["timeLimit"] = time_limit_s
    with _quiet_stdout():  # HiGHS prints its banner on fd 1 even with msg=False
        prob.solve(pulp.getSolver(name, **kwargs))
    status = pulp.LpStatus[prob.status]
    label = "highs" if name == "HiGHS" else "cbc"
    return label, "optimal" if status == "Optimal" else status.lower()


@contextlib.contextmanager
def _quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def solve_mincut(cg: CostGraph) -> Solution:
    """The same optimum as a minimum s-t cut (DADS' construction), with networkx.

    Source side = device. Node v: s->v costs its server latency, v->t its device latency.
    A tensor gets an auxiliary vertex a: p->a carries its upload cost and a->c is infinite for
    every consumer, so the upload is paid once. Outputs pay their download on s->p. c->p is
    infinite (data flows forward). Both directions are used by any plan that uses the server
    (inputs start and outputs end on the device), so the RTT is charged to the cut plan and
    compared with device-only.
    """
    import networkx as nx

    t0 = time.perf_counter()
    g = nx.DiGraph()
    s, t = "s", "t"
    for i, node in enumerate(cg.nodes):
        g.add_edge(s, i, capacity=node.latency_s[1])
        g.add_edge(i, t, capacity=node.latency_s[0])
    for j, ten in enumerate(cg.tensors):
        if ten.consumers:
            src = ten.producer if ten.producer is not None else s
            aux = ("a", j)
            _add_capacity(g, src, aux, cg.send_s(ten, 0, 1))
            for c in ten.consumers:
                g.add_edge(aux, c)  # no capacity attribute: infinite
        if ten.is_output and ten.producer is not None:
            _add_capacity(g, s, ten.producer, cg.send_s(ten, 1, 0))
    for p, c in cg.edges():
        g.add_edge(c, p)
    for a, b in cg.tied:
        g.add_edge(a, b)
        g.add_edge(b, a)
    _, (source_side, _) = nx.minimum_cut(g, s, t)
    placement = [0 if i in source_side else 1 for i in range(len(cg.nodes))]
    cut = _solution(cg, placement, "mincut", t0)
    device = _solution(cg, [0] * len(cg.nodes), "mincut", t0)
    return cut if cut.cost.total_s <= device.cost.total_s else device


def _add_capacity(g, u, v, cap: float) -> None:
    if g.has_edge(u, v) and "capacity" in g[u][v]:
        g[u][v]["capacity"] += cap
    else:
        g.add_edge(u, v, capacity=cap)


def brute_force(cg: CostGraph, max_nodes: int = 22) -> Solution:
    """Try every placement (2^n). For checking the exact methods on small graphs."""
    t0 = time.perf_counter()
    n = len(cg.nodes)
    if n > max_nodes:
        raise ValueError(f"brute force over {n} nodes is too slow (max {max_nodes})")
    best_total, best = np.inf, None
    chunk = 1 << min(n, 16)
    for start in range(0, 1 << n, chunk):
        codes = np.arange(start, min(start + chunk, 1 << n), dtype=np.int64)
        x = ((codes[:, None] >> np.arange(n)) & 1).astype(np.int8)
        res = evaluate_many(cg, x)
        totals = np.where(res["feasible"], res["total"], np.inf)
        i = int(np.argmin(totals))
        if totals[i] < best_total:
            best_total, best = totals[i], x[i]
    return _solution(cg, best, "brute_force", t0)


def baselines(cg: CostGraph) -> dict[str, Solution]:
    """Device-only, server-only and the best single cut along the topological order (Neurosurgeon)."""
    t0 = time.perf_counter()
    n = len(cg.nodes)
    x = (np.arange(n)[None, :] >= (n - np.arange(n + 1))[:, None]).astype(np.int8)
    res = evaluate_many(cg, x)
    k = int(np.argmin(np.where(res["feasible"], res["total"], np.inf)))
    return {
        "device_only": _solution(cg, [0] * n, "device_only", t0),
        "cloud_only": _solution(cg, [1] * n, "cloud_only", t0),
        "best_single_cut": _solution(cg, x[k], "best_single_cut", t0),
    }
