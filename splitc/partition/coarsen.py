"""Graph coarsening that keeps the optimum: tie nodes that provably share a tier, then contract them.

Rules (each says when it is exact):

- **fused**: an activation or batch norm onnxruntime fuses into its Conv already shares its tier
  (a `tied` pair of the cost graph): contracting it changes nothing.
- **pull-up** (latency and energy objectives; deadline, energy and memory limits; no return
  flows): node u reads one tensor s that only u reads, writes one tensor t that only v reads,
  and s is no larger than t (raw and encoded) while u is no slower on any higher tier. Then any
  plan with u below v is no worse with u moved up to v's tier: t's hops are replaced by s's
  (smaller) over the same links, u's compute gets no slower, the device holds less. So an
  optimal plan exists with u and v together. u must not be tied already (it could not move
  alone). (Not for throughput or a cloud-time limit: moving
  u up loads the higher tier.)

Contraction sums the latencies of each tied group, drops tensors internal to a group and
remaps the rest; for any placement that respects the ties the cost is unchanged. The memory
metric depends on the schedule, so with a memory limit groups are tied but not contracted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from splitc.partition.costgraph import CNode, CostGraph, CWeight


@dataclass(frozen=True)
class Coarsened:
    graph: CostGraph  # the contracted graph
    groups: tuple[tuple[int, ...], ...]  # fine node indices per coarse node
    rules: dict[str, int]  # how many ties each rule added

    def expand(self, placement) -> tuple[int, ...]:
        n = sum(len(g) for g in self.groups)
        fine = [0] * n
        for tier, group in zip(placement, self.groups):
            for v in group:
                fine[v] = tier
        return tuple(fine)


def pull_up_ties(cg: CostGraph) -> list[tuple[int, int]]:
    reads: dict[int, list[int]] = {}
    writes: dict[int, list[int]] = {}
    for j, t in enumerate(cg.tensors):
        for c in set(t.consumers):
            reads.setdefault(c, []).append(j)
        if t.producer is not None:
            writes.setdefault(t.producer, []).append(j)
    fused = {v for pair in cg.tied for v in pair}  # u must be free to move alone
    ties = []
    for u in range(len(cg.nodes)):
        if u in fused:
            continue
        ins, outs = reads.get(u, []), writes.get(u, [])
        if len(ins) != 1 or len(outs) != 1:
            continue
        s, t = cg.tensors[ins[0]], cg.tensors[outs[0]]
        if s.consumers != (u,) or s.is_output or t.is_output or len(t.consumers) != 1:
            continue
        lat = cg.nodes[u].latency_s
        if any(lat[j + 1] > lat[j] for j in range(cg.k - 1)):
            continue
        if s.raw_bytes <= t.raw_bytes and s.encoded_bytes <= t.encoded_bytes and s.coder_s is None and t.coder_s is None \
                and all(s.raw_bytes * x <= t.raw_bytes * y for x, y in zip(s.coder_factor, t.coder_factor)):
            ties.append((u, t.consumers[0]))
    return ties


def coarsen(cg: CostGraph, objective: str = "latency", limits: frozenset[str] = frozenset()) -> Coarsened:
    ties = list(cg.tied)
    rules = {"fused": len(ties), "pull_up": 0}
    if objective in ("latency", "energy") and not cg.allow_return and not ({"cloud_time"} & set(limits)):
        extra = pull_up_ties(cg)
        rules["pull_up"] = len(extra)
        ties += extra
    tied_only = Coarsened(replace(cg, tied=tuple(sorted(set(ties)))), tuple((i,) for i in range(len(cg.nodes))), rules)
    if "device_memory" in limits:  # schedule-dependent metric: tie, don't contract
        return tied_only
    uf = nx.utils.UnionFind(range(len(cg.nodes)))
    for a, b in ties:
        uf.union(a, b)
    members: dict[int, list[int]] = {}
    for v in range(len(cg.nodes)):
        members.setdefault(uf[v], []).append(v)
    groups0 = list(members.values())
    group_of = {v: gi for gi, g in enumerate(groups0) for v in g}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(groups0)))
    for t in cg.tensors:
        if t.producer is not None:
            for c in t.consumers:
                if group_of[c] != group_of[t.producer]:
                    dag.add_edge(group_of[t.producer], group_of[c])
    if not nx.is_directed_acyclic_graph(dag):  # ties across a diamond: contracting would make a cycle
        return tied_only
    order = list(nx.lexicographical_topological_sort(dag, key=lambda g: min(groups0[g])))
    rank = {g: i for i, g in enumerate(order)}
    groups = tuple(tuple(sorted(groups0[g])) for g in order)
    nodes = tuple(
        CNode("+".join(cg.nodes[v].name for v in grp[:3]) + (f"+{len(grp) - 3}" if len(grp) > 3 else ""),
              cg.nodes[grp[0]].op_type if len(grp) == 1 else "Group",
              tuple(sum(cg.nodes[v].latency_s[t] for v in grp) for t in range(cg.k)))
        for grp in groups
    )
    tensors = []
    for t in cg.tensors:
        p = rank[group_of[t.producer]] if t.producer is not None else None
        cons = tuple(sorted({rank[group_of[c]] for c in t.consumers} - ({p} if p is not None else set())))
        if cons or t.is_output:
            tensors.append(replace(t, producer=p, consumers=cons))
    weights = tuple(CWeight(w.name, w.bytes, tuple(sorted({rank[group_of[r]] for r in w.readers}))) for w in cg.weights)
    graph = replace(cg, nodes=nodes, tensors=tuple(tensors), tied=(), weights=weights)
    return Coarsened(graph, groups, rules)
