"""Replace Shape/Size of static tensors with constants.

With every input shape fixed, shape arithmetic no longer depends on data. Turning its roots
into constants lets each part of the split recompute it locally instead of receiving it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from splitc.ir.graph import static_dims


def _shape_value(node: ir.Node) -> np.ndarray | None:
    dims = static_dims(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    if dims is None:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), dtype=np.int64)
    rank = len(dims)
    start_attr, end_attr = node.attributes.get("start"), node.attributes.get("end")
    start = start_attr.as_int() if start_attr is not None else 0
    end = end_attr.as_int() if end_attr is not None else rank
    start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    start, end = min(max(start, 0), rank), min(max(end, 0), rank)
    return np.array(dims[start:end], dtype=np.int64)


@dataclass(frozen=True)
class MaterializeShapesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("Shape", "Size"):
                continue
            value = _shape_value(node)
            if value is None:
                continue
            old = node.outputs[0]
            const = ir.node("Constant", [], attributes={"value": ir.tensor(value, name=old.name)}, name=node.name)
            new = const.outputs[0]
            new.shape, new.dtype = ir.Shape(list(value.shape)), ir.DataType.INT64
            graph.insert_before(node, const)
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
            graph.remove(node, safe=False)
            new.name = old.name
            modified = True
        return ir.passes.PassResult(model, modified)
