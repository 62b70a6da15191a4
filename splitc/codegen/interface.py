"""What each stage of a schedule takes in and hands on: pure bookkeeping over the cost graph, no IR.

A stage reads tensors from three places: the model's inputs (on the device only), hops that bring a tensor
from another tier (``receives``), and tensors an earlier stage on its own tier produced and kept for it
(``local``). It hands on three kinds of tensor: the model's outputs it produces on the device (``results``),
tensors a later stage on its tier reads (``keeps``) and hops it sends right after it runs (``sends``). A
:class:`Transfer` names a hop by its index into :attr:`Schedule.hops`; :mod:`splitc.codegen.crossings` turns
each hop into one crossing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitc.partition.costgraph import CostGraph
from splitc.partition.schedule import Schedule


@dataclass(frozen=True)
class Transfer:
    tensor: str
    hop: int  # index into Schedule.hops


@dataclass(frozen=True)
class StageInterface:
    stage: int
    tier: int
    nodes: tuple[str, ...]  # the cost-graph nodes it runs, in graph order
    inputs: tuple[str, ...]  # model inputs it reads, returns or sends (device stages only), in the model's order
    receives: tuple[Transfer, ...]  # hops bringing a tensor it reads from another tier, in schedule order
    local: tuple[str, ...]  # tensors an earlier stage on its tier produced and kept for it
    results: tuple[str, ...]  # model outputs it produces on the device, in the model's order
    keeps: tuple[str, ...]  # tensors it produces that a later stage on its tier reads, sorted by name
    sends: tuple[Transfer, ...]  # hops it sends right after it runs, in schedule order


def stage_interfaces(cg: CostGraph, sched: Schedule, model_inputs: Sequence[str],
                     model_outputs: Sequence[str]) -> tuple[StageInterface, ...]:
    """One :class:`StageInterface` per stage of ``sched``.

    A model input is produced "in stage 0"; a model output the cost graph does not hold (computed from weights
    alone, or an input passed straight through) is produced in stage 0 too, on the device.
    """
    tier_of_stage = [s.tier for s in sched.stages]
    produced_in = {t.name: (0 if t.producer is None else sched.stage_of[t.producer]) for t in cg.tensors}
    tier_of_tensor = {t.name: tier_of_stage[produced_in[t.name]] for t in cg.tensors}
    reads: list[list[str]] = [[] for _ in sched.stages]  # per stage, the cost-graph tensors it reads, in graph order
    keeps: list[set[str]] = [set() for _ in sched.stages]
    read_inputs: list[set[str]] = [set() for _ in sched.stages]  # per stage, the model inputs it reads
    for t in cg.tensors:
        src = produced_in[t.name]
        for stage in sorted({sched.stage_of[c] for c in t.consumers}):
            if t.producer is None:
                read_inputs[stage].add(t.name)
            if stage != src:
                reads[stage].append(t.name)
            if stage > src and tier_of_stage[stage] == tier_of_stage[src] and t.producer is not None:
                keeps[src].add(t.name)  # (a model input is every device stage's own input: never kept)
    inputs = set(model_inputs)
    out = []
    for stage in sched.stages:
        tier, read = stage.tier, set(reads[stage.index])
        receives = {}  # tensor -> hop: the last hop bringing it to this tier
        for i, hop in enumerate(sched.hops):
            name = cg.tensors[hop.tensor].name
            if hop.dst == tier and name in read and tier_of_tensor[name] != tier:
                receives[name] = i
        results = tuple(name for name in model_outputs if tier == 0 and produced_in.get(name, 0) == stage.index
                        and name not in receives)
        sends = tuple(Transfer(cg.tensors[hop.tensor].name, i) for i, hop in enumerate(sched.hops)
                      if hop.stage == stage.index and hop.src == tier)
        used = read_inputs[stage.index] | set(results) | {t.tensor for t in sends}
        out.append(StageInterface(
            stage.index,
            tier,
            tuple(cg.nodes[v].name for v in stage.nodes),
            tuple(name for name in model_inputs if tier == 0 and name in used),
            tuple(Transfer(name, i) for name, i in sorted(receives.items(), key=lambda item: item[1])),
            tuple(name for name in reads[stage.index] if name not in receives and name not in inputs),
            results,
            tuple(sorted(keeps[stage.index])),
            sends,
        ))
    return tuple(out)
