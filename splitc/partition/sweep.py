"""Bandwidth sweep: the exact intervals of uplink bandwidth over which each plan is optimal.

For a fixed placement, latency and device energy are affine in s = 1/B (B the device link's
uplink rate; the downlink scales in proportion): wire time is bits / B, radio energy is
(alpha B + beta) bits / B. The optimum over all placements is the lower envelope of those
lines, a concave piecewise-affine function of s. Eisner and Severance's parametric search finds
its breakpoints exactly with one solve per breakpoint and per plan: solve at both ends;
intersect the two plans' lines; solve there; if nothing beats the intersection it is a
breakpoint, otherwise recurse on both sides of the new plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitc.partition.costgraph import CostGraph, evaluate
from splitc.errors import SplitcError
from splitc.partition.optimizer import Goal, Solution, solve


@dataclass(frozen=True)
class Interval:
    lo_bps: float  # uplink bits/s
    hi_bps: float
    solution: Solution  # the plan, priced at the middle of the interval
    value_at_lo: float  # objective at lo_bps and hi_bps
    value_at_hi: float


def _at(cg: CostGraph, up_bps: float) -> CostGraph:
    return cg.with_links((cg.links[0].scaled(up_bps),) + tuple(cg.links[1:]))


def sweep_bandwidth(cg: CostGraph, goal: Goal, lo_bps: float, hi_bps: float, time_limit_s: float | None = None,
                    rel_tol: float = 1e-9) -> list[Interval]:
    if goal.objective not in ("latency", "energy") or goal.deadline_s is not None or goal.max_energy_j is not None:
        raise SplitcError("--sweep-bandwidth needs --objective latency or energy and no --deadline/--max-energy"
                          " (those make the feasible plans depend on the bandwidth)")
    metric = goal.objective

    def plan_at(s: float) -> tuple[int, ...]:
        return solve(_at(cg, 1.0 / s), goal, time_limit_s).placement

    def value(p: tuple[int, ...], s: float) -> float:
        return evaluate(_at(cg, 1.0 / s), p).metric(metric)

    s_lo, s_hi = 1.0 / hi_bps, 1.0 / lo_bps  # s grows as bandwidth falls

    def line(p):  # (intercept, slope) in s, exactly affine
        a, b = value(p, s_lo), value(p, s_hi)
        slope = (b - a) / (s_hi - s_lo)
        return a - slope * s_lo, slope

    breaks: list[tuple[float, tuple[int, ...], tuple[int, ...]]] = []

    def refine(pa, pb, depth=0):
        if pa == pb or depth > 60:
            return
        (ia, ma), (ib, mb) = line(pa), line(pb)
        if abs(ma - mb) <= rel_tol * max(abs(ma), abs(mb), 1e-30):
            return  # parallel: the same cost everywhere (a tie)
        s = (ib - ia) / (ma - mb)
        if not s_lo < s < s_hi:
            return
        pc = plan_at(s)
        if value(pc, s) >= value(pa, s) * (1 - rel_tol) or pc in (pa, pb):
            breaks.append((s, pa, pb))
            return
        refine(pa, pc, depth + 1)
        refine(pc, pb, depth + 1)

    first, last = plan_at(s_lo), plan_at(s_hi)
    refine(first, last)
    breaks.sort()
    pieces: list[tuple[float, float, tuple[int, ...]]] = []  # in s
    start, current = s_lo, first
    for s, pa, pb in breaks:
        if pa != current:
            current = pa
        pieces.append((start, s, current))
        start, current = s, pb
    pieces.append((start, s_hi, current))
    merged: list[list] = []
    for a, b, p in pieces:
        if merged and merged[-1][2] == p:
            merged[-1][1] = b
        else:
            merged.append([a, b, p])
    out = []
    for a, b, p in reversed(merged):  # ascending bandwidth
        priced = evaluate(_at(cg, 2.0 / (a + b)), p)  # at the interval's middle (in 1/B)
        sol = Solution(p, priced, "sweep", 0.0)
        out.append(Interval(1.0 / b, 1.0 / a, sol, value(p, b), value(p, a)))
    return out
