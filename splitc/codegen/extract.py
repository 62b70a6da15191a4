"""Extract one stage of the model as a part: a copy holding the stage's nodes, with the stage's interface as its
graph inputs and outputs. No boundary ops yet (:mod:`splitc.codegen.crossings` adds them) and nothing pruned
(:func:`finish_part` does, once the boundary is in).

Nodes that depend on no input (constants, shape arithmetic: replicable) are copied into every part that reads
them; stage 0 also computes the model outputs that depend on weights alone.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import AddInitializersToInputsPass, RemoveUnusedNodesPass

from splitc.codegen.interface import StageInterface
from splitc.frontend.passes.replicable import is_replicable
from splitc.ir.graph import _subgraphs, graph_inputs, node_inputs


def nodes_to_copy(model: ir.Model, iface: StageInterface) -> set[str]:
    """The stage's nodes and, transitively, the replicable producers they (and stage 0's results) read."""
    graph = model.graph
    names = set(iface.nodes)
    stack = [n for n in graph if n.name in names]
    if iface.stage == 0:  # results computed from weights alone are produced on the device
        stack += [v.producer() for v in graph.outputs if v.producer() is not None and is_replicable(v.producer())]
    keep = {n.name for n in stack}
    while stack:
        for v in node_inputs(stack.pop()):
            p = v.producer()
            if p is not None and is_replicable(p) and p.name not in keep:
                keep.add(p.name)
                stack.append(p)
    return keep


def extract_part(model: ir.Model, iface: StageInterface, proto: onnx.ModelProto | None = None) -> ir.Model:
    """A new model running the stage: inputs ``iface.inputs`` (the model's own), then each received and local
    tensor as a plain input under its own name; outputs ``iface.results`` then ``iface.keeps``. The tensors the
    stage sends are computed but not yet outputs. ``proto`` (``ir.to_proto(model)``) saves re-serializing per stage."""
    keep = nodes_to_copy(model, iface)
    part = ir.from_proto(proto if proto is not None else ir.to_proto(model))
    g = part.graph
    values = {v.name: v for v in list(graph_inputs(g)) + [o for n in g for o in n.outputs]}
    originals = {v.name: v for v in graph_inputs(g)}
    new_inputs = []
    for name in [t.tensor for t in iface.receives] + list(iface.local):
        old = values[name]
        new = ir.Value(name=name, type=old.type, shape=old.shape)
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        new.name = name
        new_inputs.append(new)
        values[name] = new
    dropped = [n for n in g if n.name not in keep]
    for n in dropped:  # detach them (and their bodies) so the weights only they read become unused
        for m in [n, *(i for sub in _subgraphs(n) for i in ir.traversal.RecursiveGraphIterator(sub))]:
            for i in range(len(m.inputs)):
                m.replace_input_with(i, None)
    g.remove(dropped, safe=False)
    g.inputs.clear()
    g.inputs.extend([originals[name] for name in iface.inputs] + new_inputs)
    g.outputs.clear()
    g.outputs.extend(values[name] for name in dict.fromkeys((*iface.results, *iface.keeps)))
    return part


def finish_part(part: ir.Model) -> ir.Model | None:
    """Prune what no output needs and sort; ``None`` when the part outputs nothing (the stage only forwards)."""
    if not len(part.graph.outputs):
        return None
    RemoveUnusedNodesPass()(part)
    part.graph.sort()
    if part.ir_version < 4:
        AddInitializersToInputsPass()(part)
    return part
