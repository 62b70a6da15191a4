"""Fix the symbolic dimensions of the graph inputs (``--input-shape``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from splitc.errors import SplitcError
from splitc.ir.graph import graph_inputs


def _fmt(shape: ir.Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) if isinstance(d, int) else (str(d.value) if d.value else "?") for d in shape.dims)


@dataclass(frozen=True)
class FixInputShapesPass(ir.passes.InPlacePass):
    """Set each named input's shape; fail naming every input that is still symbolic."""

    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    model_name: str = "model"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = {v.name: v for v in graph_inputs(model.graph)}
        unknown = set(self.shapes) - set(inputs)
        if unknown:
            raise SplitcError(
                f"{self.model_name}: --input-shape names {', '.join(sorted(unknown))}, which the model does not have;"
                f" its inputs are {', '.join(inputs)}"
            )
        modified = False
        for name, dims in self.shapes.items():
            value = inputs[name]
            old = value.shape
            if any(d <= 0 for d in dims):
                raise SplitcError(f"{self.model_name}: --input-shape {name}={'x'.join(map(str, dims))}: every dimension must be positive")
            if old is not None and old.rank() != len(dims):
                raise SplitcError(
                    f"{self.model_name}: --input-shape {name}={'x'.join(map(str, dims))} has rank {len(dims)},"
                    f" but input '{name}' is {_fmt(old)} (rank {old.rank()})"
                )
            if old is not None:
                for i, (d_old, d_new) in enumerate(zip(old.dims, dims)):
                    if isinstance(d_old, int) and d_old > 0 and d_old != d_new:
                        raise SplitcError(
                            f"{self.model_name}: --input-shape {name}: dimension {i} is fixed to {d_old} in the model, not {d_new}"
                        )
            value.shape = ir.Shape(list(dims))
            modified = True
        still = [v for v in inputs.values() if v.shape is None or not v.shape.is_static() or any(d <= 0 for d in v.shape.dims)]
        if still:
            listed = ", ".join(f"{v.name} [{_fmt(v.shape)}]" for v in still)
            example = ",".join(
                f"{v.name}=" + "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in (v.shape.dims if v.shape else [1]))
                for v in still
            )
            raise SplitcError(
                f"{self.model_name}: input(s) with symbolic dimensions: {listed}; fix them with --input-shape {example}"
                " (put the real sizes where this shows 1)"
            )
        return ir.passes.PassResult(model, modified)
