"""Give every tensor of the main graph a static shape and a dtype.

ONNX shape inference (with data propagation) does most of the work. Where it cannot, for
example a Reshape whose target is computed from a Paddle export's shape arithmetic, the pass
runs the model once in onnxruntime on synthetic inputs of the fixed shapes and reads the
shapes off the real tensors, in a child process bounded in time and memory (``splitc.frontend.observe``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
import onnx_ir as ir

from splitc.errors import SplitcError
from splitc.ir.graph import graph_inputs, static_dims
from splitc.frontend.observe import ObserveError, observe


def _needs_shape(graph: ir.Graph) -> list[ir.Value]:
    out = []
    for node in graph:
        for v in node.outputs:
            if v.name and (static_dims(v) is None or v.dtype is None):
                out.append(v)
    return out


MAX_TENSOR_BYTES = 1 << 40  # 1 TiB: no device holds more; larger dims are a broken model or --input-shape


def _check_sizes(graph: ir.Graph, model_name: str) -> None:
    """Refuse dims that are negative or whose product (in Python ints: it cannot overflow) is beyond any memory."""
    for v in list(graph_inputs(graph)) + [v for node in graph for v in node.outputs]:
        if v.shape is None:
            continue
        dims = [d for d in v.shape.dims if isinstance(d, int)]  # symbolic dims are not counted (nor known)
        itemsize = v.dtype.itemsize if v.dtype is not None else 1
        if any(d < 0 for d in dims) or math.prod(dims) * itemsize > MAX_TENSOR_BYTES:
            shape = "x".join(map(str, dims))
            raise SplitcError(f"{model_name}: tensor '{v.name}' has shape {shape}, {math.prod(dims) * itemsize:.3g} bytes"
                              f" (more than {MAX_TENSOR_BYTES / 2**40:g} TiB or a negative dim); check the model's dims and --input-shape")


@dataclass(frozen=True)
class InferShapesPass(ir.passes.InPlacePass):
    model_name: str = "model"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for node in graph:  # stale value_info from before the inputs were fixed would conflict
            for v in node.outputs:
                v.shape = None
        proto = ir.to_proto(model)
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception as e:  # noqa: BLE001  (onnx raises many types)
            raise SplitcError(f"{self.model_name}: ONNX shape inference failed: {str(e).splitlines()[0]}") from None
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for node in graph:
            for v in node.outputs:
                vi = known.get(v.name)
                if vi is None or not vi.type.HasField("tensor_type"):
                    continue
                tt = vi.type.tensor_type
                if tt.elem_type and v.dtype is None:
                    v.dtype = ir.DataType(tt.elem_type)
                if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                    v.shape = ir.Shape([d.dim_value for d in tt.shape.dim])
        _check_sizes(graph, self.model_name)
        missing = _needs_shape(graph)
        if missing:
            self._observe(model, missing)
            _check_sizes(graph, self.model_name)
        return ir.passes.PassResult(model, True)

    def _observe(self, model: ir.Model, missing: list[ir.Value]) -> None:
        proto = ir.to_proto(model)
        existing = {o.name for o in proto.graph.output}
        for v in missing:
            if v.name not in existing:
                proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(v.name))
        specs = [{"name": v.name, "dtype": v.dtype.numpy().str, "shape": list(static_dims(v))} for v in graph_inputs(model.graph)]
        try:
            observed = observe(proto.SerializeToString(), specs, self.model_name)
        except ObserveError as e:
            if not e.run_failed:
                raise SplitcError(str(e)) from None
            raise SplitcError(
                f"{self.model_name}: tensor '{missing[0].name}' has no static shape and the model could not be run"
                f" to observe it ({str(e).partition(': ')[2]})"
            ) from None
        for v in missing:
            if v.name not in observed:
                continue
            shape, dtype = observed[v.name]
            v.shape = ir.Shape(list(shape))
            if v.dtype is None:
                v.dtype = ir.DataType.from_numpy(dtype)
