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


def solve_ilp(cg: CostGraph, time_limit_s: float | None = None, solver: str = "auto", relax: bool = True) -> Solution:
    """Minimise end-to-end latency exactly, as a 0-1 ILP.

    x[v] = 1 places node v on the server; data flows forward: x[c] >= x[p]. For each tensor t,
    y[t] >= x[c] for every consumer c says "some reader is on the server", and the upload is
    paid as y[t] - x[p]: once, however many consumers. An output produced on the server is
    paid as its download x[p]. The RTT is paid per direction used (U >= up[t], D >= down[t]).

    When every node lies on a path from an input to an output (true of any pruned model),
    a plan uses both directions exactly when it places anything on the server, so U = D >= x[v].
    Every row is then a difference constraint (one +1, one -1): the matrix is totally unimodular
    and each vertex of the LP relaxation is integral. With ``relax`` the LP is solved and its
    solution checked to be 0/1, falling back to branch and bound if it is not.
    """
    import pulp

    t0 = time.perf_counter()
    n = len(cg.nodes)
    structured = _on_input_output_paths(cg)
    relax = relax and structured
    prob = pulp.LpProblem("splitc_partition", pulp.LpMinimize)
    var = _variable_factory(prob)
    x = [var(f"x{i}", 0, 1, "Continuous" if relax else "Binary") for i in range(n)]
    use_up = var("U", 0, 1)
    use_down = use_up if structured else var("D", 0, 1)
    objective = [(cg.nodes[i].latency_s[0], 1 - x[i]) for i in range(n)]
    objective += [(cg.nodes[i].latency_s[1], x[i]) for i in range(n)]
    for j, t in enumerate(cg.tensors):
        x_p = x[t.producer] if t.producer is not None else 0
        if t.consumers:
            y = var(f"y{j}", 0, 1)
            for c in t.consumers:
                prob += y >= x[c]
            objective.append((cg.send_s(t, 0, 1), y - x_p))
            if not structured:
                prob += use_up >= y - x_p
        if t.is_output and t.producer is not None:
            objective.append((cg.send_s(t, 1, 0), x_p))
            if not structured:
                prob += use_down >= x_p
    if structured:
        for i in range(n):
            prob += use_up >= x[i]
    for p, c in cg.edges():
        prob += x[c] >= x[p]
    for a, b in cg.tied:
        prob += x[a] == x[b]
    rtt = cg.link.rtt_s * (2 * use_up if structured else use_up + use_down)
    # in microseconds: the solver's tolerances (~1e-7) would swallow differences below 0.1 us if in seconds
    prob += 1e6 * (pulp.lpSum(coef * term for coef, term in objective) + rtt)
    status = _solve(prob, time_limit_s, solver)
    values = [v.value() or 0.0 for v in x]
    if relax and any(abs(v - round(v)) > 1e-6 for v in values):
        return solve_ilp(cg, time_limit_s, solver, relax=False)
    placement = [int(round(v)) for v in values]
    return _solution(cg, placement, f"ilp/{status[0]}" + ("-lp" if relax else ""), t0, status[1])


def _on_input_output_paths(cg: CostGraph) -> bool:
    """Is every node reachable from a graph input and able to reach a graph output?"""
    n = len(cg.nodes)
    succ: list[list[int]] = [[] for _ in range(n)]
    from_input = [False] * n
    to_output = [False] * n
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
    kwargs = {"msg": False, "gapRel": 0.0, "gapAbs": 0.0}  # exact: the default gaps (HiGHS: 1e-6 s absolute) stop early
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
    compared with device-only. That argument needs every node on an input-to-output path (true
    of every imported model, whose dead code is pruned); other graphs are refused.
    """
    import networkx as nx

    if not _on_input_output_paths(cg):
        raise ValueError("min-cut is exact only when every node lies on a path from an input to an output; use solve_ilp")
    t0 = time.perf_counter()
    g = nx.DiGraph()
    s, t = "s", "t"
    for i, node in enumerate(cg.nodes):
        g.add_edge(s, i, capacity=_units(node.latency_s[1]))
        g.add_edge(i, t, capacity=_units(node.latency_s[0]))
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
    """The published baselines, priced in the same cost model.

    device_only, cloud_only; best_single_cut: Neurosurgeon's best cut along one topological
    order; dads: DADS' min-cut over the whole DAG (present when the min-cut is exact here).
    """
    t0 = time.perf_counter()
    n = len(cg.nodes)
    x = (np.arange(n)[None, :] >= (n - np.arange(n + 1))[:, None]).astype(np.int8)
    res = evaluate_many(cg, x)
    k = int(np.argmin(np.where(res["feasible"], res["total"], np.inf)))
    out = {
        "device_only": _solution(cg, [0] * n, "device_only", t0),
        "cloud_only": _solution(cg, [1] * n, "cloud_only", t0),
        "best_single_cut": _solution(cg, x[k], "best_single_cut", t0),
    }
    if _on_input_output_paths(cg):
        out["dads"] = solve_mincut(cg)
    return out
