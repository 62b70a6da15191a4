"""Give every tensor of the main graph a static shape and a dtype.

ONNX shape inference (with data propagation) does most of the work. Where it cannot, for
example a Reshape whose target is computed from a Paddle export's shape arithmetic, the pass
runs the model once in onnxruntime on synthetic inputs of the fixed shapes and reads the
shapes off the real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from splitc.errors import SplitcError
from splitc.ir.graph import graph_inputs, static_dims
from splitc.runtimes.ort import synthetic_inputs


def _needs_shape(graph: ir.Graph) -> list[ir.Value]:
    out = []
    for node in graph:
        for v in node.outputs:
            if v.name and (static_dims(v) is None or v.dtype is None):
                out.append(v)
    return out


def _synthetic_inputs(graph: ir.Graph) -> dict[str, np.ndarray]:
    """Inputs of the fixed shapes, made as the runtime makes them (normal floats, ones for integers and masks)."""
    return synthetic_inputs([{"name": v.name, "dtype": v.dtype.numpy(), "shape": static_dims(v)} for v in graph_inputs(graph)])


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
        missing = _needs_shape(graph)
        if missing:
            self._observe(model, missing)
        return ir.passes.PassResult(model, True)

    def _observe(self, model: ir.Model, missing: list[ir.Value]) -> None:
        import onnxruntime as ort

        proto = ir.to_proto(model)
        existing = {o.name for o in proto.graph.output}
        for v in missing:
            if v.name not in existing:
                proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(v.name))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            results = session.run(names, _synthetic_inputs(model.graph))
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SplitcError(
                f"{self.model_name}: tensor '{missing[0].name}' has no static shape and the model could not be run"
                f" to observe it ({first[:200]})"
            ) from None
        observed = dict(zip(names, results))
        for v in missing:
            arr = observed.get(v.name)
            if arr is None or not isinstance(arr, np.ndarray):
                continue
            v.shape = ir.Shape(list(arr.shape))
            if v.dtype is None:
                v.dtype = ir.DataType.from_numpy(arr.dtype)
