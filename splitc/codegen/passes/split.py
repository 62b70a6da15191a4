"""Split pass: apply a placement to the model, producing one ONNX model per stage.

Mechanics only: which node runs where was decided by the partition pass; the order of stages
comes from :mod:`splitc.partition.schedule`. Each part is a copy of the model with every other stage's
nodes removed, the tensors it receives turned into graph inputs (behind a dequantize op when
the boundary quantizes), the tensors it sends turned into outputs (behind a quantize op), and
only the initializers it uses. Nodes that depend on no input (constants, shape arithmetic) are
copied into every part that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import AddInitializersToInputsPass, RemoveUnusedNodesPass

from splitc.ir import metadata as ann
from splitc.ir.graph import _subgraphs, graph_inputs, node_inputs
from splitc.codegen.passes.boundary import (FLOAT_TYPES, WireTensor, dequantize_nodes, quantize_nodes, quantizes, static_dequantize_nodes,
                                    static_quantize_nodes, static_wire_name, wire_names)
from splitc.partition.passes.partition import PartitionResult
from splitc.frontend.passes.replicable import is_replicable
from splitc.partition.schedule import Schedule, schedule



@dataclass(frozen=True)
class Crossing:
    """One tensor crossing one link in one direction (a hop)."""

    tensor: str
    src: int  # tier index
    dst: int
    link: int
    stage: int  # sent right after this stage
    raw_bytes: int
    encoded_bytes: int  # the optimizer's estimate, before entropy coding
    codec: str
    wire: tuple[WireTensor, ...]
    is_output: bool  # a result on its way to the device
    quant: object | None = None  # splitc.cost.quantizers.TensorCodec of a calibrated (static) codec


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


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


class SplitPass(ir.passes.InPlacePass):
    """Reads the PartitionResult, writes a SplitResult under ``splitc.parts``; the model is unchanged."""

    def __init__(self, boundary: str = "int8", codecs: dict | None = None):
        super().__init__()
        self.boundary = boundary
        self.codecs = codecs or {}  # tensor name -> splitc.cost.quantizers.TensorCodec (calibrated boundaries)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result: PartitionResult = model.graph.meta[ann.PARTITION]
        if not self.codecs:
            self.codecs = model.graph.meta.get(ann.CODECS) or {}
        cg, placement = result.cost_graph, result.solution.placement
        sched = schedule(cg, placement)
        graph = model.graph
        by_name = {v.name: v for v in list(graph.inputs) + [o for n in graph for o in n.outputs]}
        crossings = []
        for hop in sched.hops:
            t = cg.tensors[hop.tensor]
            v = by_name[t.name]
            lossy = quantizes(v, self.boundary) and not (t.is_output and not hop.up)
            shape = ann.get(v, ann.TENSOR, ann.TensorInfo).shape
            wire = (tuple(WireTensor(n, d, s) for n, d, s in zip(wire_names(t.name), ("uint8", "float32", "uint8"), (shape, (), ())))
                    if lossy else (WireTensor(t.name, v.dtype.numpy().name, shape),))
            encoded = t.encoded_bytes if hop.up or t.encoded_down_bytes is None else t.encoded_down_bytes
            tc = self.codecs.get(t.name) if v.dtype in FLOAT_TYPES and not (t.is_output and not hop.up) else None
            if tc is not None:  # calibrated: the symbols alone cross; scales and zero points are constants of both parts
                crossings.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded, tc.name,
                                          (WireTensor(static_wire_name(t.name), "uint8", tc.wire_shape(shape), tc.bits),), False, tc))
                continue
            crossings.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded,
                                      "int8-dynamic+zstd" if lossy else "raw+zstd", wire, t.is_output and not hop.up))
        proto = ir.to_proto(model)
        node_names = [n.name for n in cg.nodes]
        produced_in = {t.name: (0 if t.producer is None else sched.stage_of[t.producer]) for t in cg.tensors}
        tier_of_tensor = {t.name: (0 if t.producer is None else placement[t.producer]) for t in cg.tensors}
        tier_of_stage = {s.index: s.tier for s in sched.stages}
        kept_for_later: dict[int, set[str]] = {}  # stage -> tensors it produces that a later stage on its tier reads
        for t in cg.tensors:
            src = produced_in[t.name]
            if any(sched.stage_of[c] > src and tier_of_stage[sched.stage_of[c]] == tier_of_stage[src] for c in t.consumers):
                kept_for_later.setdefault(src, set()).add(t.name)
        parts = []
        for stage in sched.stages:
            parts.append(self._part(model, proto, stage, {node_names[i] for i in stage.nodes}, crossings, produced_in,
                                    tier_of_tensor, kept_for_later.get(stage.index, set())))
        outputs = tuple(v.name for v in graph.outputs)
        model.graph.meta[ann.PARTS] = SplitResult(tuple(parts), tuple(crossings), outputs, sched)
        return ir.passes.PassResult(model, False)

    def _part(self, model, proto, stage, names, crossings, produced_in, tier_of_tensor, later_local) -> StagePart:
        graph = model.graph
        tier = stage.tier
        placed = [n for n in graph if n.name in names]
        keep = {n.name for n in placed}
        stack = list(placed)
        if stage.index == 0:  # results computed from weights alone are produced on the device
            stack += [v.producer() for v in graph.outputs if v.producer() is not None and is_replicable(v.producer())]
            keep |= {n.name for n in stack}
        while stack:  # pull in the replicable producers this part reads
            for v in node_inputs(stack.pop()):
                p = v.producer()
                if p is not None and is_replicable(p) and p.name not in keep:
                    keep.add(p.name)
                    stack.append(p)
        read = {}
        for n in placed:
            for v in node_inputs(n):
                p = v.producer()
                if not v.is_initializer() and not (p is not None and is_replicable(p)) and produced_in.get(v.name) != stage.index:
                    read[v.name] = v
        received = {c.tensor: c for c in crossings if c.dst == tier and c.tensor in read and tier_of_tensor[c.tensor] != tier}
        local = [name for name in read if name not in received]  # graph inputs on the device, or from an earlier stage here
        sent = [c for c in crossings if c.stage == stage.index and c.src == tier]
        results = [v.name for v in graph.outputs if tier == 0 and (produced_in.get(v.name) == stage.index if v.name in produced_in else stage.index == 0)]

        part = ir.from_proto(proto)
        g = part.graph
        values = {v.name: v for v in list(g.inputs) + [o for n in g for o in n.outputs]}
        opset = _opset(part)
        new_inputs: list[ir.Value] = []
        prologue: list[ir.Node] = []
        for name, c in received.items():
            old = values[name]
            if c.quant is not None:
                q = ir.Value(name=c.wire[0].name, type=ir.TensorType(ir.DataType.UINT8), shape=ir.Shape(list(c.wire[0].shape)))
                nodes, new = static_dequantize_nodes(q, c.quant, old.dtype, name, opset)
                prologue += nodes
                new_inputs.append(q)
            elif len(c.wire) == 3:
                q, scale, zp = (ir.Value(name=w.name, type=ir.TensorType(ir.DataType.from_numpy(np.dtype(w.dtype))),
                                         shape=ir.Shape(list(w.shape))) for w in c.wire)
                nodes, new = dequantize_nodes(q, scale, zp, old.dtype, name, opset)
                prologue += nodes
                new_inputs += [q, scale, zp]
            else:
                new = ir.Value(name=name, type=old.type, shape=old.shape)
                new_inputs.append(new)
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
            new.name = name
        originals = {v.name for v in graph_inputs(g)}
        for name in local:
            if name in originals:
                continue  # a graph input: kept below
            old = values[name]
            new = ir.Value(name=name, type=old.type, shape=old.shape)
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
            new.name = name
            new_inputs.append(new)
        dropped = [n for n in g if n.name not in keep]
        for n in dropped:  # detach them (and their bodies) so the weights only they read become unused
            for m in [n, *(i for sub in _subgraphs(n) for i in ir.traversal.RecursiveGraphIterator(sub))]:
                for i in range(len(m.inputs)):
                    m.replace_input_with(i, None)
        g.remove(dropped, safe=False)
        for node in reversed(prologue):
            if len(g):
                g.insert_before(next(iter(g)), node)
            else:
                g.append(node)
        out_values: list[ir.Value] = []
        out_names: set[str] = set()

        def emit(v: ir.Value) -> None:
            if v.name not in out_names:
                out_names.add(v.name)
                out_values.append(v)

        for name in results:
            if name in values and name not in received:
                emit(values[name])
        for name in sorted(later_local):
            emit(values[name])
        for c in sent:
            src = values[c.tensor]
            if c.quant is not None:
                if c.wire[0].name in out_names:
                    continue
                nodes, q = static_quantize_nodes(src, c.quant, opset)
                for node in nodes:
                    g.append(node)
                emit(q)
            elif len(c.wire) == 3:
                if wire_names(c.tensor)[0] in out_names:
                    continue
                nodes, wire = quantize_nodes(src, opset)
                for node in nodes:
                    g.append(node)
                for w in wire:
                    emit(w)
            else:
                emit(src)
        used = {id(u) for n in ir.traversal.RecursiveGraphIterator(g) for u in n.inputs if u is not None} | {id(v) for v in out_values}
        kept_inputs = [v for v in graph_inputs(g) if v.name in originals and tier == 0 and id(v) in used]
        g.inputs.clear()
        g.inputs.extend(kept_inputs + new_inputs)
        g.outputs.clear()
        g.outputs.extend(out_values)
        if not out_values:  # the stage runs and sends nothing
            return StagePart(stage.index, tier, None, tuple(v.name for v in g.inputs), tuple(v.name for v in out_values))
        RemoveUnusedNodesPass()(part)
        g.sort()
        if part.ir_version < 4:
            AddInitializersToInputsPass()(part)
        return StagePart(stage.index, tier, part, tuple(v.name for v in g.inputs if not v.is_initializer()),
                         tuple(v.name for v in g.outputs))
