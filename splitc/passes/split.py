"""Split pass: apply a partition plan to the model, producing one ONNX model per tier.

Mechanics only: which node runs where was decided by the partition pass. Each part is a copy
of the model with the other parts' nodes removed, the tensors it receives turned into graph
inputs (behind a dequantize op when the boundary quantizes), the tensors it sends turned into
outputs (behind a quantize op), and only the initializers it uses. Nodes that depend on no
input (constants, shape arithmetic) are copied into every part that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
from onnx_ir.passes.common import AddInitializersToInputsPass, RemoveUnusedNodesPass

from splitc import annotations as ann
from splitc.graphutil import _subgraphs, graph_inputs, node_inputs
from splitc.passes.boundary import WireTensor, dequantize_nodes, quantize_nodes, quantizes
from splitc.passes.partition import PARTITION, PartitionResult
from splitc.passes.replicable import is_replicable

PARTS = "splitc.parts"  # on ir.Graph.meta: SplitResult


@dataclass(frozen=True)
class Crossing:
    tensor: str
    src: int  # tier index
    dst: int
    raw_bytes: int
    encoded_bytes: int  # the optimizer's estimate, before entropy coding
    codec: str
    wire: tuple[WireTensor, ...]
    is_output: bool


@dataclass(frozen=True)
class SplitResult:
    parts: dict[int, ir.Model]  # tier index -> model (absent when the tier runs nothing)
    crossings: tuple[Crossing, ...]
    outputs: tuple[str, ...]  # the original graph outputs, in order


def _np_dtype(dtype: ir.DataType) -> str:
    return dtype.numpy().name


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


class SplitPass(ir.passes.InPlacePass):
    """Reads the PartitionResult, writes a SplitResult under ``splitc.parts``; the model is unchanged."""

    def __init__(self, boundary: str = "int8"):
        super().__init__()
        self.boundary = boundary

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result: PartitionResult = model.graph.meta[PARTITION]
        cg, placement = result.cost_graph, result.solution.placement
        tier_of = {n.name: placement[i] for i, n in enumerate(cg.nodes)}
        graph = model.graph
        by_name = {v.name: v for v in list(graph.inputs) + [o for n in graph for o in n.outputs]}
        crossings = []
        for t in cg.tensors:
            src = 0 if t.producer is None else placement[t.producer]
            dsts = {placement[c] for c in t.consumers} | ({0} if t.is_output else set())
            for dst in sorted(dsts - {src}):
                v = by_name[t.name]
                lossy = quantizes(v, self.boundary) and not t.is_output
                wire = (
                    tuple(WireTensor(n, d, s) for n, d, s in zip(
                        (f"{t.name}__q", f"{t.name}__scale", f"{t.name}__zero_point"),
                        ("uint8", "float32", "uint8"),
                        (ann.get(v, ann.TENSOR, ann.TensorInfo).shape, (), ()),
                    ))
                    if lossy
                    else (WireTensor(t.name, _np_dtype(v.dtype), ann.get(v, ann.TENSOR, ann.TensorInfo).shape),)
                )
                crossings.append(Crossing(t.name, src, dst, t.raw_bytes, t.encoded_bytes if not t.is_output or dst != 0 else t.raw_bytes,
                                          "int8-dynamic+zstd" if lossy else "raw+zstd", wire, t.is_output and dst == 0))
        proto = ir.to_proto(model)
        parts = {}
        outputs = tuple(v.name for v in graph.outputs)
        for tier in range(len(cg.tiers)):
            part = self._part(model, proto, tier, tier_of, crossings)
            if part is not None:
                parts[tier] = part
        model.graph.meta[PARTS] = SplitResult(parts, tuple(crossings), outputs)
        return ir.passes.PassResult(model, False)

    def _part(self, model, proto, tier, tier_of, crossings) -> ir.Model | None:
        graph = model.graph
        placed = [n for n in graph if tier_of.get(n.name) == tier]
        keep = {n.name for n in placed}
        stack = list(placed)
        while stack:  # pull in the replicable producers this part reads
            for v in node_inputs(stack.pop()):
                p = v.producer()
                if p is not None and is_replicable(p) and p.name not in keep:
                    keep.add(p.name)
                    stack.append(p)
        received = [c for c in crossings if c.dst == tier and not c.is_output]  # results are merged by the runtime
        sent = [c for c in crossings if c.src == tier]
        own_outputs = [
            v.name for v in graph.outputs
            if (v.producer() is None and tier == 0)
            or (v.producer() is not None and (tier_of.get(v.producer().name) == tier or (tier == 0 and is_replicable(v.producer()))))
        ]
        if tier == 0:  # replicable outputs are computed on the device
            for v in graph.outputs:
                if v.producer() is not None and is_replicable(v.producer()):
                    keep.add(v.producer().name)
                    stack = [v.producer()]
                    while stack:
                        for u in node_inputs(stack.pop()):
                            p = u.producer()
                            if p is not None and p.name not in keep:
                                keep.add(p.name)
                                stack.append(p)
        if not placed and not sent and not own_outputs:
            return None

        part = ir.from_proto(proto)
        g = part.graph
        values = {v.name: v for v in list(g.inputs) + [o for n in g for o in n.outputs]}
        originals = {v.name for v in graph_inputs(g)}
        opset = _opset(part)
        new_inputs: list[ir.Value] = []
        prologue: list[ir.Node] = []
        for c in received:
            old = values[c.tensor]
            if len(c.wire) == 3:
                q, scale, zp = (ir.Value(name=w.name, type=ir.TensorType(ir.DataType.from_numpy(__import__("numpy").dtype(w.dtype))),
                                         shape=ir.Shape(list(w.shape))) for w in c.wire)
                nodes, new = dequantize_nodes(q, scale, zp, old.dtype, c.tensor, opset)
                prologue += nodes
                new_inputs += [q, scale, zp]
            else:
                new = ir.Value(name=c.tensor, type=old.type, shape=old.shape)
                new_inputs.append(new)
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
            new.name = c.tensor
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
        used_inputs = {id(u) for n in ir.traversal.RecursiveGraphIterator(g) for u in n.inputs if u is not None}
        sent_names = {c.tensor for c in sent}
        kept_inputs = [v for v in graph_inputs(g) if v.name in originals and (id(v) in used_inputs or v.name in sent_names or v.name in own_outputs)]
        out_values: list[ir.Value] = [values[n] if n not in {c.tensor for c in received} else None for n in own_outputs]
        out_values = [v for v in out_values if v is not None]
        for c in sent:
            src = values[c.tensor]
            if len(c.wire) == 3:
                nodes, wire = quantize_nodes(src, opset)
                for node in nodes:
                    g.append(node)
                out_values += list(wire)
            elif src not in out_values:
                out_values.append(src)
        g.inputs.clear()
        g.inputs.extend(kept_inputs + new_inputs)
        g.outputs.clear()
        g.outputs.extend(out_values)
        RemoveUnusedNodesPass()(part)
        g.sort()
        if part.ir_version < 4:
            AddInitializersToInputsPass()(part)
        return part
