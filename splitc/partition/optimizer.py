"""Exact partitioning of a cost graph as an ILP (PuLP; HiGHS, or CBC where HiGHS is missing).

Policy only: this module sees a :class:`CostGraph` and a :class:`Goal` and returns a placement.
Every placement is priced by :func:`splitc.partition.costgraph.evaluate`, so all methods are compared in
one cost model. Baselines, the min-cut and brute force live in :mod:`splitc.partition.baselines`.

Formulation. Tiers form a chain 0..k-1; z[v][j] = 1 iff node v runs on tier >= j ("ladder"
variables, z[v][j] >= z[v][j+1]). For tensor t and link l (tiers l, l+1, ladder index j = l+1):
y[t][j] >= z[c][j] for every consumer c says "some reader is above the link", and the upload
over the link is y[t][j] - z[p][j]: paid once, however many readers. Without return flows,
z[c][j] >= z[p][j] on every edge and an output produced above the link is downloaded: z[p][j].
When every node lies on an input-to-output path, link l is used in both directions exactly when
some node is above it, so it pays half an RTT each way, rtt U_l in all, with U_l >= z[v][j] (otherwise
each direction used pays rtt / 2). Every row is then a difference
constraint: the matrix is totally unimodular and the LP relaxation has integral vertices, so the
latency problem is solved as an LP (checked to be 0/1). Energy (busy power x device time + idle
power x (latency - device time) + radio) and device memory are linear in the same variables; throughput minimises a bottleneck T over tiers and links; constraints are
rows on those expressions. Those (and return flows) are solved as MIPs with zero gap.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import replace

from splitc.partition.costgraph import CostGraph, evaluate
from splitc.partition.problem import (LIMIT_FLAGS, OBJECTIVES, Goal, Infeasible, Solution, fixed,  # noqa: F401  (the API)
                                     on_input_output_paths, solution)
from splitc.errors import SplitcError

_OFF = 1e20  # a right-hand side HiGHS reads as "no bound"
_SCALE = {"latency": 1e6, "energy": 1e6, "throughput": 1e6, "device_memory": 1e-6, "cloud_time": 1e6}  # µs, µJ, MB


class _Formulation:
    """Variables and metric expressions for one cost graph; solved for any objective and limits."""

    def __init__(self, cg: CostGraph, relax: bool, needs: set[str]):
        import pulp

        self.cg, k, n = cg, cg.k, len(cg.nodes)
        self._uses: dict = {}
        self._limit_rows: dict = {}  # metric -> (its row, the expression's own constant)
        self.structured = on_input_output_paths(cg) and not cg.allow_return
        self.relax = relax and self.structured
        self.prob = pulp.LpProblem("splitc_partition", pulp.LpMinimize)
        var = self.var = _variable_factory(self.prob)
        cat = "Continuous" if self.relax else "Binary"
        self.z = [[None] + [var(f"z{v}_{j}", 0, 1, cat) for j in range(1, k)] for v in range(n)]
        for v in range(n):
            for j in range(1, k - 1):
                self.prob += self.z[v][j] >= self.z[v][j + 1]
        on = [[self._on(v, t) for t in range(k)] for v in range(n)]
        self.compute = [pulp.lpSum(cg.nodes[v].latency_s[t] * on[v][t] for v in range(n)) for t in range(k)]
        codec = [[] for _ in range(k)]
        wire_up, wire_down = [[] for _ in range(k - 1)], [[] for _ in range(k - 1)]
        transfer, rtt = [], []
        for ti, t in enumerate(cg.tensors):
            for link in range(k - 1):
                j = link + 1
                zp = self.z[t.producer][j] if t.producer is not None else 0
                up = down = None
                if t.consumers:
                    y = var(f"y{ti}_{j}", 0, 1)
                    for c in t.consumers:
                        self.prob += y >= self.z[c][j]
                    if cg.allow_return:
                        up = var(f"u{ti}_{j}", 0, 1)
                        self.prob += up >= y - zp
                    else:
                        up = y - zp
                if t.producer is not None and (cg.allow_return or t.is_output):
                    if cg.allow_return:
                        down = var(f"d{ti}_{j}", 0, 1)
                        readers = list(t.consumers) if not t.is_output else []
                        if t.is_output:
                            self.prob += down >= zp
                        for c in readers:
                            self.prob += down >= zp - self.z[c][j]
                    else:
                        down = zp
                for term, is_up in ((up, True), (down, False)):
                    if term is None:
                        continue
                    enc, wire, dec = cg.hop_parts(t, link, is_up)
                    transfer.append((enc + wire + dec) * term)
                    codec[link if is_up else link + 1].append(enc * term)
                    codec[link + 1 if is_up else link].append(dec * term)
                    (wire_up if is_up else wire_down)[link].append(wire * term)
                    if not self.structured:
                        self._rtt_use(link, is_up, term)
        if not cg.allow_return:
            for p, c in cg.edges():
                for j in range(1, k):
                    self.prob += self.z[c][j] >= self.z[p][j]
        for a, b in cg.tied:
            for j in range(1, k):
                self.prob += self.z[a][j] == self.z[b][j]
        for link in range(k - 1):
            r, frame_up, frame_down = cg.links[link].rtt_s, cg.links[link].message_s("up"), cg.links[link].message_s("down")
            if self.structured:
                used = var(f"U{link}", 0, 1)
                for v in range(n):
                    self.prob += used >= self.z[v][link + 1]
                rtt.append(r * used)  # a round trip: half an RTT up, half down
                uses = (used, used)
            else:
                uses = (self._uses.get((link, True), 0), self._uses.get((link, False), 0))
                rtt.append(r / 2 * (uses[0] + uses[1]))
            # one message each direction used: its framing goes on the wire once
            transfer += [frame_up * uses[0], frame_down * uses[1]]
            wire_up[link].append(frame_up * uses[0])
            wire_down[link].append(frame_down * uses[1])
        self.codec = [pulp.lpSum(c) for c in codec]
        self.wire_up = [pulp.lpSum(w) for w in wire_up]
        self.wire_down = [pulp.lpSum(w) for w in wire_down]
        self.metrics = {"latency": pulp.lpSum(self.compute) + pulp.lpSum(transfer) + pulp.lpSum(rtt),
                        "cloud_time": self.compute[k - 1]}
        if "energy" in needs:
            self.metrics["energy"] = self._energy()
        if "throughput" in needs:
            self.metrics["throughput"] = self._period()
        if "device_memory" in needs:
            self.metrics["device_memory"] = self._memory()

    def _on(self, v: int, tier: int):
        z = self.z[v]
        lo = 1 if tier == 0 else z[tier]
        hi = z[tier + 1] if tier + 1 < self.cg.k else 0
        return lo - hi

    def _rtt_use(self, link: int, up: bool, term) -> None:
        key = (link, up)
        if key not in self._uses:
            self._uses[key] = self.var(f"{'U' if up else 'D'}{link}", 0, 1)
        self.prob += self._uses[key] >= term

    def _energy(self):
        cg = self.cg
        busy = self.compute[0] + self.codec[0]
        energy = cg.busy_power_w[0] * busy + cg.idle_power_w[0] * (self.metrics["latency"] - busy)  # idle while waiting
        radio = cg.links[0].radio
        if radio is not None:
            energy += radio.power_w(cg.links[0].up_bps, "up") * self.wire_up[0]
            energy += radio.power_w(cg.links[0].down_bps, "down") * self.wire_down[0]
        return energy

    def _period(self):
        period = self.var("T", 0, None)
        for t in range(self.cg.k):
            self.prob += period >= self.compute[t] + self.codec[t]
        for link in range(self.cg.k - 1):
            self.prob += period >= self.wire_up[link]
            self.prob += period >= self.wire_down[link]
        return period

    def _memory(self):
        import pulp

        from splitc.partition.costgraph import _live_intervals

        cg = self.cg
        off = lambda v: self.z[v][1]  # noqa: E731  (1 when v is above the device)
        held = []
        for w in cg.weights:
            h = self.var(f"w_{len(held)}", 0, 1)
            for r in w.readers:
                self.prob += h >= 1 - off(r)
            held.append(w.bytes * h)
        weights = pulp.lpSum(held)
        peak = self.var("M", 0, None)
        starts, ends = _live_intervals(cg)
        by_start: dict[int, list[int]] = {}
        for j, st in enumerate(starts):
            by_start.setdefault(int(st), []).append(j)
        active: set[int] = set()
        for i in range(len(cg.nodes)):  # a peak follows a start: one row per step where a tensor appears
            active = {j for j in active if ends[j] >= i}
            new = by_start.get(i, [])
            if not new:
                continue
            active.update(new)

            def held_bytes(j):
                t = cg.tensors[j]
                return t.raw_bytes * (1 - off(t.producer)) if t.producer is not None else t.raw_bytes

            self.prob += peak >= weights + pulp.lpSum(held_bytes(j) for j in sorted(active))
        if not by_start:
            self.prob += peak >= weights
        return peak

    def _set_limit(self, metric: str, bound: float | None) -> None:
        """Each limit is one row, added once; a solve sets its right-hand side (1e20: off)."""
        rows = self._limit_rows
        if metric not in rows:
            expr = _SCALE[metric] * self.metrics[metric]
            if not hasattr(expr, "constant"):  # a bare variable (the period, the memory peak)
                expr = expr + 0
            own = float(expr.constant)  # the expression's own constant term
            self.prob += expr <= _OFF, f"limit_{metric}"
            row = self.prob._constraints[f"limit_{metric}"]  # the stored row (PuLP may copy what it is given)
            rows[metric] = (row, own)
        row, own = rows[metric]
        row.constant = own - (_OFF if bound is None else _SCALE[metric] * bound)

    def solve(self, objective: str, limits: dict[str, float], time_limit_s, solver) -> tuple[list[int], str, str, float, float | None]:
        """(placement, solver label, status, relative gap, the solver's proven lower bound on the objective or None)."""
        for metric in set(limits) | set(self._limit_rows):
            self._set_limit(metric, limits.get(metric))
        expr = _SCALE[objective] * self.metrics[objective]
        self.prob.setObjective(expr)
        label, status, gap, raw_bound = _run(self.prob, time_limit_s, solver)
        if status not in ("optimal", "time limit"):
            return [], label, "timeout" if status == "timeout" else "infeasible", 0.0, None
        # the solver sees no constant term: add it back, in the objective's own units
        bound = None if raw_bound is None else (raw_bound + float(getattr(expr, "constant", 0.0))) / _SCALE[objective]
        k = self.cg.k
        value = lambda v, j: self.z[v][j].value() or 0.0  # noqa: E731
        placement = [sum(1 for j in range(1, k) if value(v, j) > 0.5) for v in range(len(self.cg.nodes))]
        fractional = any(abs(value(v, j) - round(value(v, j))) > 1e-6 for v in range(len(self.cg.nodes)) for j in range(1, k))
        return placement, label, "fractional" if fractional else status, gap, bound


def solve(cg: CostGraph, goal: Goal = Goal(), time_limit_s: float | None = None, solver: str = "auto",
          relax: bool = True, coarsen: bool = True) -> Solution:
    """The exact optimum of ``goal`` over every placement of ``cg`` (within ``time_limit_s``).

    With ``coarsen``, nodes that provably share a tier in some optimal plan are contracted first
    (:mod:`splitc.partition.coarsen`) and the plan is expanded back; the cost is priced on ``cg`` itself.
    """
    if coarsen:
        from splitc.partition.coarsen import coarsen as contract

        t0 = time.perf_counter()
        c = contract(cg, goal.objective, frozenset(goal.limits()))
        if len(c.graph.nodes) < len(cg.nodes) or c.graph.tied != cg.tied:
            sub = solve(c.graph, goal, time_limit_s, solver, relax, coarsen=False)
            fine = solution(cg, c.expand(sub.placement), sub.method, t0, sub.status, sub.gap)
            note = f"coarsened {len(cg.nodes)} -> {len(c.graph.nodes)} nodes (" + ", ".join(f"{k}: {v}" for k, v in c.rules.items()) + ")"
            return replace(fine, notes=sub.notes + (note,), bound=sub.bound)  # contraction keeps an optimum: same bound
    if goal.objective not in OBJECTIVES:
        raise SplitcError(f"--objective '{goal.objective}': choose one of {', '.join(OBJECTIVES)}")
    if goal.objective == "energy" or goal.max_energy_j is not None:
        if cg.links[0].radio is None:
            raise SplitcError(f"link '{cg.links[0].name}' has no radio power model for energy; add radio=3g|4g|wifi to it")
        if cg.busy_power_w[0] <= 0:
            raise SplitcError(f"target '{cg.tiers[0]}' has no busy power ([power] busy_w) for energy")
    t0 = time.perf_counter()
    limits = goal.limits()
    needs = {goal.objective, "latency", *limits}
    # the LP relaxation is exact only for the pure latency problem (a totally unimodular matrix)
    form = _Formulation(cg, relax and goal.objective == "latency" and not limits, needs)
    placement, label, status, gap, bound = form.solve(goal.objective, limits, time_limit_s, solver)
    if status == "fractional":  # not a vertex (cannot happen for a TU matrix, but never trust it)
        return solve(cg, goal, time_limit_s, solver, relax=False)
    if status == "timeout":
        if time_limit_s is None:  # "Not Solved" without a time limit: the solver gave up
            raise SplitcError(f"the solver ({label}) stopped without a plan; check the profiles' and links' numbers, or drop a limit")
        raise SplitcError(f"the solver found no plan within --time-limit {time_limit_s:g}s; raise it (or drop a limit)")
    if status == "infeasible":
        raise _diagnose(cg, form, goal, time_limit_s, solver)
    notes = ()
    if goal.objective != "latency":  # among the optima, the fastest one
        best = evaluate(cg, placement).metric(goal.objective)
        tie = {**limits, goal.objective: best * (1 + 1e-9) + 1e-15}
        again, _, status2, _, _ = form.solve("latency", tie, time_limit_s, solver)
        if again and status2 in ("optimal", "time limit"):
            placement = again
            notes = ("ties on the objective broken by latency",)
    method = f"ilp/{label}" + ("-lp" if form.relax else "")
    sol = solution(cg, placement, method, t0, status, gap)
    return Solution(sol.placement, sol.cost, sol.method, sol.solve_s, sol.status, sol.gap, notes, bound)


def solve_ilp(cg: CostGraph, time_limit_s: float | None = None, solver: str = "auto", relax: bool = True) -> Solution:
    """Latency-optimal placement with no limits (the two-tier default)."""
    return solve(cg, Goal(), time_limit_s, solver, relax)


def _diagnose(cg, form: _Formulation, goal: Goal, time_limit_s, solver) -> Infeasible:
    limits = goal.limits()
    for metric in limits:  # is one limit alone in the way? then how far must it move?
        others = {m: v for m, v in limits.items() if m != metric}
        placement, _, status, _, _ = form.solve(metric, others, time_limit_s, solver)
        if placement and status != "infeasible":
            best = evaluate(cg, placement).metric(metric)
            return Infeasible(f"no plan meets {LIMIT_FLAGS[metric]} {_fmt(metric, limits[metric])}: the smallest feasible value"
                              f" is {_fmt(metric, best)}{' given the other limits' if others else ''}")
    names = " and ".join(f"{LIMIT_FLAGS[m]} {_fmt(m, v)}" for m, v in limits.items())
    return Infeasible(f"no plan meets {names} together; relax one of them")


def _fmt(metric: str, value: float) -> str:
    if metric in ("latency", "cloud_time"):
        return f"{value * 1e3:.3f}ms"
    if metric == "energy":
        return f"{value:.4f}J"
    return f"{value / 1e6:.2f}MB"


def _variable_factory(prob):
    """PuLP >= 3.3 attaches variables to the problem (``add_variable``); older PuLP builds them free-standing."""
    import pulp

    if hasattr(prob, "add_variable"):
        return lambda name, low, up, cat="Continuous": prob.add_variable(name, low, up, cat=cat)
    return lambda name, low, up, cat="Continuous": pulp.LpVariable(name, low, up, cat=cat)


def _run(prob, time_limit_s: float | None, solver: str) -> tuple[str, str, float, float | None]:
    """Solve; (solver label, status, relative gap, proven lower bound on the objective without its constant term).

    The bound is HiGHS's: the MIP dual bound, or for an LP solved to optimality with a feasible dual, its
    objective (LP duality). CBC through PuLP reports none."""
    import pulp

    available = pulp.listSolvers(onlyAvailable=True)
    name = solver if solver != "auto" else ("HiGHS" if "HiGHS" in available else "PULP_CBC_CMD")
    kwargs = {"msg": False, "gapRel": 0.0, "gapAbs": 0.0}  # exact: the default gaps stop early
    if time_limit_s is not None:
        kwargs["timeLimit"] = time_limit_s
    with _quiet_stdout():  # HiGHS prints its banner on fd 1 even with msg=False
        prob.solve(pulp.getSolver(name, **kwargs))
    status = pulp.LpStatus[prob.status]
    gap, bound = 0.0, None
    model = getattr(prob, "solverModel", None)
    if name == "HiGHS" and model is not None:
        try:
            info = model.getInfo()
            if info.mip_node_count >= 0 and info.mip_gap < 1e30:
                gap = max(0.0, float(info.mip_gap))
            if info.mip_node_count >= 0:
                bound = float(info.mip_dual_bound) if abs(info.mip_dual_bound) < 1e30 else None
            elif status == "Optimal" and info.dual_solution_status == 2:  # kSolutionStatusFeasible
                bound = float(info.objective_function_value)
        except Exception:  # noqa: BLE001  (older highspy)
            pass
    label = "highs" if name == "HiGHS" else "cbc"
    if status == "Optimal" and gap <= 1e-9:
        return label, "optimal", 0.0, bound
    if status in ("Optimal", "Not Solved") and getattr(prob, "sol_status", 0) in (pulp.LpSolutionIntegerFeasible, pulp.LpSolutionOptimal):
        return label, "time limit", gap, bound
    if status == "Not Solved":
        return label, "timeout", gap, None
    return label, status.lower(), gap, None


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


__all__ = ["Goal", "Infeasible", "Solution", "fixed", "solve", "solve_ilp"]
