"""Split pass: apply a placement to the model, producing one ONNX model per stage.

Mechanics only: which node runs where was decided by the partition pass; the order of stages
comes from :mod:`splitc.partition.schedule`. Per stage, three steps, each testable alone:

1. :func:`splitc.codegen.interface.stage_interfaces` (no IR): which tensors the stage reads, receives, keeps
   and sends;
2. :func:`splitc.codegen.extract.extract_part`: a copy of the model with every other stage's nodes removed,
   the tensors it receives or reads from an earlier stage as graph inputs (nodes that depend on no input,
   constants and shape arithmetic, are copied into every part that needs them);
3. :func:`splitc.codegen.crossings.insert_boundary`: received tensors behind a dequantize op, sent tensors as
   outputs behind a quantize op (where the boundary quantizes); then only the nodes and initializers the
   outputs need are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx_ir as ir

from splitc.codegen.crossings import Crossing, crossings, insert_boundary
from splitc.codegen.extract import extract_part, finish_part
from splitc.codegen.interface import StageInterface, stage_interfaces
from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs
from splitc.partition.passes.partition import PartitionResult
from splitc.partition.schedule import Schedule, schedule

__all__ = ["Crossing", "SplitPass", "SplitResult", "StagePart", "split_stage"]


@dataclass(frozen=True)
class StagePart:
    index: int
    tier: int
    model: ir.Model | None  # None: the stage runs nothing (it only forwards inputs)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class SplitResult:
    stages: tuple[StagePart, ...]
    crossings: tuple[Crossing, ...]
    outputs: tuple[str, ...]  # the original graph outputs, in order
    schedule: Schedule

    @property
    def parts(self) -> dict[int, ir.Model]:
        """Stage index -> model, for the stages that run something."""
        return {s.index: s.model for s in self.stages if s.model is not None}


def split_stage(model: ir.Model, iface: StageInterface, hops: tuple[Crossing, ...], proto=None) -> StagePart:
    """Extract the stage, put its boundary on, prune: the stage's part (``hops``: one crossing per schedule hop)."""
    part = extract_part(model, iface, proto)
    insert_boundary(part, [hops[t.hop] for t in iface.receives], [hops[t.hop] for t in iface.sends])
    inputs = tuple(v.name for v in part.graph.inputs)
    part = finish_part(part)
    if part is None:
        return StagePart(iface.stage, iface.tier, None, inputs, ())
    return StagePart(iface.stage, iface.tier, part, tuple(v.name for v in part.graph.inputs if not v.is_initializer()),
                     tuple(v.name for v in part.graph.outputs))


@dataclass(frozen=True)
class SplitPass(ir.passes.InPlacePass):
    """Reads the PartitionResult, writes a SplitResult under ``splitc.parts``; the model is unchanged.

    ``codecs`` (tensor name -> splitc.cost.quantizers.TensorCodec) calibrates boundaries; ``None``: those the
    model carries under ``splitc.codecs``, if any."""

    boundary: str = "int8"
    codecs: Mapping[str, object] | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result: PartitionResult = model.graph.meta[ann.PARTITION]
        codecs = self.codecs if self.codecs is not None else (model.graph.meta.get(ann.CODECS) or {})
        cg = result.cost_graph
        sched = schedule(cg, result.solution.placement)
        graph = model.graph
        values = {v.name: v for v in list(graph.inputs) + [o for n in graph for o in n.outputs]}
        hops = crossings(cg, sched, values, self.boundary, codecs)
        outputs = tuple(v.name for v in graph.outputs)
        interfaces = stage_interfaces(cg, sched, [v.name for v in graph_inputs(graph)], outputs)
        proto = ir.to_proto(model)
        parts = tuple(split_stage(model, iface, hops, proto) for iface in interfaces)
        model.graph.meta[ann.PARTS] = SplitResult(parts, hops, outputs, sched)
        return ir.passes.PassResult(model, False)
