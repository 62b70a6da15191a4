"""Golden before/after graphs for one pass at a time: ONNX text in, ONNX text expected out, compared structurally.

``parse`` gives the IR of an ONNX-text model (no import pipeline); ``assert_model`` compares a model with the
expected text field by field (onnx_ir.testing.assert_onnx_proto_equal), both sides through the IR once so that
tensor literals compare by value whatever their encoding. ``imported`` runs the IMPORT stage and the bytes of
every tensor, for the tests that check a pass inside the pipeline.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper as nh
import onnx_ir as ir
import pytest
from onnx_ir.testing import assert_onnx_proto_equal

from splitc.compiler import import_model
from splitc.cost.passes.tensor_bytes import TensorBytesPass

try:
    from fixtures_text import model_proto, save
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto, save


def parse(text: str, initializers: dict[str, np.ndarray] | None = None) -> ir.Model:
    return ir.from_proto(model_proto(text, initializers, check=False))


def canonical(model: ir.Model | onnx.ModelProto) -> onnx.ModelProto:
    """Through the IR once, every tensor literal re-encoded from its values (raw or typed data compare alike)."""
    proto = ir.to_proto(ir.from_proto(model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)))
    _reencode(proto.graph)
    return proto


def _reencode(graph: onnx.GraphProto) -> None:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _reencode(sub)
    for t in tensors:
        t.CopyFrom(nh.from_array(nh.to_array(t), t.name))


def assert_model(model: ir.Model, expected: str, initializers: dict[str, np.ndarray] | None = None) -> None:
    assert_onnx_proto_equal(canonical(model), canonical(model_proto(expected, initializers, check=False)))


def imported(tmp_path, proto, shapes=None, name="m.onnx") -> ir.Model:
    """The IMPORT stage, then the bytes of every tensor (the first ANNOTATE pass)."""
    model = import_model(save(proto, tmp_path / name), shapes)
    return TensorBytesPass(name)(model).model


def by_name(model: ir.Model) -> dict[str, ir.Node]:
    return {n.name: n for n in model.graph}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg
