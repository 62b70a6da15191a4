"""Mark nodes that depend on no graph input.

Constants, weight transforms (a ConstantOfShape, a Transpose of an initializer) and shape
arithmetic are computed from weights alone: every part recomputes what it needs (onnxruntime
folds them at load time), so they are never sent and never cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs, node_inputs


@dataclass(frozen=True)
class ReplicablePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        dynamic: set[int] = {id(v) for v in graph_inputs(graph)}
        modified = False
        for node in graph:  # topological order
            if node.op_type in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"):
                reads_input = True  # nondeterministic: computing it twice would differ
            else:
                reads_input = any(id(v) in dynamic for v in node_inputs(node))
            if reads_input:
                dynamic.update(id(o) for o in node.outputs)
                node.meta.pop(ann.REPLICABLE, None)
            else:
                why = "constant" if node.op_type in ("Constant", "ConstantOfShape") else "depends only on weights and static shapes"
                node.meta[ann.REPLICABLE] = ann.Replicable(why)
                modified = True
        return ir.passes.PassResult(model, modified)


def is_replicable(node: ir.Node) -> bool:
    return isinstance(node.meta.get(ann.REPLICABLE), ann.Replicable)
