"""The boundary op: quantize a crossing tensor at the end of the sending part, dequantize it at
the start of the receiving part.

``int8`` emits per-tensor asymmetric uint8 quantization with a per-frame range
(DynamicQuantizeLinear from opset 11; the same arithmetic from basic ops below that, so the
source opset is kept). The runtime codec then entropy-codes the bytes with zstd. ``fp32``
sends the tensor as it is (lossless).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}


@dataclass(frozen=True)
class WireTensor:
    """One tensor as the sending part outputs it and the receiving part takes it."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]


def wire_names(name: str) -> tuple[str, str, str]:
    return f"{name}__q", f"{name}__scale", f"{name}__zero_point"


def quantizes(value: ir.Value, boundary: str) -> bool:
    return boundary == "int8" and value.dtype in FLOAT_TYPES


def _const(graph_nodes: list[ir.Node], array: np.ndarray, name: str) -> ir.Value:
    node = ir.node("Constant", [], attributes={"value": ir.tensor(array, name=name)}, name=name)
    node.outputs[0].name = name
    graph_nodes.append(node)
    return node.outputs[0]


def quantize_nodes(x: ir.Value, opset: int) -> tuple[list[ir.Node], tuple[ir.Value, ir.Value, ir.Value]]:
    """Nodes computing (q uint8, scale float32 scalar, zero_point uint8 scalar) from ``x``."""
    q_name, s_name, z_name = wire_names(x.name)
    nodes: list[ir.Node] = []

    def op(op_type, inputs, name, **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, name=f"{x.name}__{name}")
        node.outputs[0].name = f"{x.name}__{name}"
        nodes.append(node)
        return node.outputs[0]

    src = x if x.dtype == ir.DataType.FLOAT else op("Cast", [x], "to_float", to=ir.DataType.FLOAT)
    if opset >= 11:
        node = ir.node("DynamicQuantizeLinear", [src], num_outputs=3, name=f"{x.name}__quantize")
        nodes.append(node)
        q, scale, zp = node.outputs
    else:
        zero = _const(nodes, np.array(0.0, np.float32), f"{x.name}__c0")
        half = _const(nodes, np.array(0.5, np.float32), f"{x.name}__c05")
        levels = _const(nodes, np.array(255.0, np.float32), f"{x.name}__c255")
        tiny = _const(nodes, np.array(1e-12, np.float32), f"{x.name}__ctiny")
        lo = op("Min", [op("ReduceMin", [src], "min", keepdims=0), zero], "lo")
        hi = op("Max", [op("ReduceMax", [src], "max", keepdims=0), zero], "hi")
        scale = op("Max", [op("Div", [op("Sub", [hi, lo], "range"), levels], "step"), tiny], "scale_raw")
        zpf = op("Floor", [op("Add", [op("Div", [op("Neg", [lo], "neg_lo"), scale], "zp_real"), half], "zp_half")], "zp_float")
        shifted = op("Add", [op("Add", [op("Div", [src, scale], "scaled"), half], "scaled_half"), zpf], "shifted")
        clipped = op("Clip", [op("Floor", [shifted], "rounded")], "clipped", min=0.0, max=255.0)
        q = op("Cast", [clipped], "q_cast", to=ir.DataType.UINT8)
        zp = op("Cast", [zpf], "zp_cast", to=ir.DataType.UINT8)
    for v, name in ((q, q_name), (scale, s_name), (zp, z_name)):
        v.name = name
    q.dtype, q.shape = ir.DataType.UINT8, x.shape
    scale.dtype, scale.shape = ir.DataType.FLOAT, ir.Shape([])
    zp.dtype, zp.shape = ir.DataType.UINT8, ir.Shape([])
    return nodes, (q, scale, zp)


def dequantize_nodes(q: ir.Value, scale: ir.Value, zp: ir.Value, dtype: ir.DataType, name: str, opset: int):
    """Nodes computing the float tensor ``name`` (of ``dtype``) back from its wire form."""
    nodes: list[ir.Node] = []

    def op(op_type, inputs, suffix, **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, name=f"{name}__{suffix}")
        node.outputs[0].name = f"{name}__{suffix}"
        nodes.append(node)
        return node.outputs[0]

    if opset >= 10:
        y = op("DequantizeLinear", [q, scale, zp], "dequantize")
    else:
        diff = op("Sub", [op("Cast", [q], "q_float", to=ir.DataType.FLOAT), op("Cast", [zp], "zp_float", to=ir.DataType.FLOAT)], "centered")
        y = op("Mul", [diff, scale], "dequantize")
    if dtype != ir.DataType.FLOAT:
        y = op("Cast", [y], "from_float", to=dtype)
    y.dtype, y.shape = dtype, q.shape
    return nodes, y
