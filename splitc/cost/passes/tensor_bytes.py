"""Annotate every tensor of the main graph with its dtype, static shape and size in bytes."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from splitc.ir import metadata as ann
from splitc.errors import SplitcError
from splitc.ir.graph import graph_inputs, static_dims, tensor_bytes
from splitc.frontend.passes.replicable import is_replicable


@dataclass(frozen=True)
class TensorBytesPass(ir.passes.InPlacePass):
    model_name: str = "model"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        values: list[tuple[ir.Value, ir.Node | None]] = [(v, None) for v in graph_inputs(graph)]
        values += [(v, None) for v in graph.initializers.values()]
        values += [(v, n) for n in graph for v in n.outputs if v.name]
        for value, producer in values:
            dims = static_dims(value)
            if dims is None and value.const_value is not None:
                dims = tuple(value.const_value.shape.dims)
            dtype = value.dtype
            if dims is None or dtype is None:
                if producer is not None and is_replicable(producer):
                    continue  # never crosses a cut
                where = f"output of node '{producer.name}' ({producer.op_type})" if producer else "a graph input"
                raise SplitcError(
                    f"{self.model_name}: tensor '{value.name}' ({where}) has no static shape; its shape depends on data,"
                    " which splitc cannot cost — fix the inputs with --input-shape or simplify the model"
                )
            nbytes = tensor_bytes(dtype, dims) if dtype != ir.DataType.STRING else 0
            value.meta[ann.TENSOR] = ann.TensorInfo(dtype.name.lower(), dims, nbytes)
        return ir.passes.PassResult(model, False)
