"""Crossings: each hop of the schedule with its codec and wire tensors, and the boundary ops that put them on a part.

:func:`crossings` decides, per hop, what goes on the wire (dynamic int8 with its scale and zero point, a
calibrated codec's symbols, or the tensor as it is). :func:`insert_boundary` edits an extracted part
(:mod:`splitc.codegen.extract`): each received tensor becomes its wire inputs behind a dequantize op, and each
sent tensor becomes wire outputs behind a quantize op (the ops of :mod:`splitc.codegen.passes.boundary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from splitc.codegen.passes.boundary import (
    FLOAT_TYPES,
    WireTensor,
    dequantize_nodes,
    quantize_nodes,
    quantizes,
    static_dequantize_nodes,
    static_quantize_nodes,
    static_wire_name,
    wire_names,
)
from splitc.ir import metadata as ann
from splitc.partition.costgraph import CostGraph
from splitc.partition.schedule import Schedule

DYNAMIC, RAW = "int8-dynamic+zstd", "raw+zstd"


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


def crossings(cg: CostGraph, sched: Schedule, values: Mapping[str, ir.Value], boundary: str,
              codecs: Mapping[str, object]) -> tuple[Crossing, ...]:
    """One crossing per hop of ``sched``, in the same order. ``values``: tensor name -> its IR value (dtype, shape);
    ``codecs``: tensor name -> calibrated TensorCodec. Results on their way down always travel losslessly."""
    out = []
    for hop in sched.hops:
        t = cg.tensors[hop.tensor]
        v = values[t.name]
        result_down = t.is_output and not hop.up
        shape = ann.get(v, ann.TENSOR, ann.TensorInfo).shape
        encoded = t.encoded_bytes if hop.up or t.encoded_down_bytes is None else t.encoded_down_bytes
        tc = codecs.get(t.name) if v.dtype in FLOAT_TYPES and not result_down else None
        if t.coder_s is not None and not result_down:  # an image input: the runtime sends the compressed frame
            wire = (WireTensor(t.name, v.dtype.numpy().name, shape),)
            out.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded, t.codec, wire, False))
        elif tc is not None:  # calibrated: the symbols alone cross; scales and zero points are constants of both parts
            wire = (WireTensor(static_wire_name(t.name), "uint8", tc.wire_shape(shape), tc.bits),)
            out.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded, tc.name, wire, False, tc))
        elif quantizes(v, boundary) and not result_down:
            wire = tuple(WireTensor(n, d, s) for n, d, s in zip(wire_names(t.name), ("uint8", "float32", "uint8"), (shape, (), ())))
            out.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded, DYNAMIC, wire, False))
        else:
            wire = (WireTensor(t.name, v.dtype.numpy().name, shape),)
            out.append(Crossing(t.name, hop.src, hop.dst, hop.link, hop.stage, t.raw_bytes, encoded, RAW, wire, result_down))
    return tuple(out)


def opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def _wire_value(w: WireTensor) -> ir.Value:
    return ir.Value(name=w.name, type=ir.TensorType(ir.DataType.from_numpy(np.dtype(w.dtype))), shape=ir.Shape(list(w.shape)))


def insert_boundary(part: ir.Model, received: Sequence[Crossing], sent: Sequence[Crossing]) -> ir.Model:
    """Put the wire on ``part`` in place: each received tensor (a plain graph input of that name) is replaced,
    where it is encoded, by its wire inputs and the dequantize ops that rebuild it; each sent tensor is appended to
    the outputs as its wire tensors, after the quantize ops (once per wire name)."""
    g = part.graph
    version = opset(part)
    inputs = list(g.inputs)
    position = {v.name: i for i, v in enumerate(inputs)}
    prologue: list[ir.Node] = []
    for c in received:
        if c.quant is None and len(c.wire) == 1:
            continue  # the tensor itself: already the input
        old = inputs[position[c.tensor]]
        if c.quant is not None:
            wire = [_wire_value(c.wire[0])]
            nodes, new = static_dequantize_nodes(wire[0], c.quant, old.dtype, c.tensor, version)
        else:
            wire = [_wire_value(w) for w in c.wire]
            nodes, new = dequantize_nodes(*wire, old.dtype, c.tensor, version)
        prologue += nodes
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        new.name = c.tensor
        inputs[position[c.tensor]] = wire
    g.inputs.clear()
    g.inputs.extend(v for item in inputs for v in (item if isinstance(item, list) else [item]))
    for node in reversed(prologue):
        if len(g):
            g.insert_before(next(iter(g)), node)
        else:
            g.append(node)
    values = {v.name: v for v in list(g.inputs) + [o for n in g for o in n.outputs]}
    outputs = {v.name for v in g.outputs}
    for c in sent:
        if c.wire[0].name in outputs:
            continue
        src = values[c.tensor]
        if c.quant is not None:
            nodes, q = static_quantize_nodes(src, c.quant, version)
            wire = (q,)
        elif len(c.wire) == 3:
            nodes, wire = quantize_nodes(src, version)
        else:
            nodes, wire = [], (src,)
        for node in nodes:
            g.append(node)
        for w in wire:
            if w.name not in outputs:
                outputs.add(w.name)
                g.outputs.append(w)
    return part
