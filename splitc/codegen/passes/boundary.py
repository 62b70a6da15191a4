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
    bits: int = 8  # < 8: uint8 symbols in [0, 2^bits) that the runtime codec bit-packs


def wire_names(name: str) -> tuple[str, str, str]:
    return f"{name}__q", f"{name}__scale", f"{name}__zero_point"


def quantizes(value: ir.Value, boundary: str) -> bool:
    return boundary == "int8" and value.dtype in FLOAT_TYPES


def _const(graph_nodes: list[ir.Node], array: np.ndarray, name: str) -> ir.Value:
    node = ir.node("Constant", [], attributes={"value": ir.tensor(array, name=name)}, name=name)
    node.outputs[0].name = name
    graph_nodes.append(node)
    return node.outputs[0]


def _emitter(nodes: list[ir.Node], prefix: str):
    """``op(op_type, inputs, suffix, **attrs)``: append a node named ``<prefix>__<suffix>`` (its output too) and return that output."""

    def op(op_type, inputs, suffix, **attrs):
        node = ir.node(op_type, inputs, attributes=attrs or None, name=f"{prefix}__{suffix}")
        node.outputs[0].name = f"{prefix}__{suffix}"
        nodes.append(node)
        return node.outputs[0]

    return op


def quantize_nodes(x: ir.Value, opset: int) -> tuple[list[ir.Node], tuple[ir.Value, ir.Value, ir.Value]]:
    """Nodes computing (q uint8, scale float32 scalar, zero_point uint8 scalar) from ``x``."""
    q_name, s_name, z_name = wire_names(x.name)
    nodes: list[ir.Node] = []

    op = _emitter(nodes, x.name)

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

    op = _emitter(nodes, name)

    if opset >= 10:
        y = op("DequantizeLinear", [q, scale, zp], "dequantize")
    else:
        diff = op("Sub", [op("Cast", [q], "q_float", to=ir.DataType.FLOAT), op("Cast", [zp], "zp_float", to=ir.DataType.FLOAT)], "centered")
        y = op("Mul", [diff, scale], "dequantize")
    if dtype != ir.DataType.FLOAT:
        y = op("Cast", [y], "from_float", to=dtype)
    y.dtype, y.shape = dtype, q.shape
    return nodes, y


# --------------------------------------------------------------------------- static (calibrated) quantization

def static_wire_name(name: str) -> str:
    return f"{name}__q"


def _bcast_const(nodes: list[ir.Node], array: np.ndarray, name: str, rank: int, axis: int | None, dtype) -> ir.Value:
    shape = tuple(array.size if i == axis else 1 for i in range(rank)) if axis is not None else ()
    return _const(nodes, np.asarray(array, dtype).reshape(shape), name)


def _layers(nodes: list[ir.Node], op, src: ir.Value, layers, prefix: str) -> ir.Value:
    """splitc.cost.bottleneck.Layer list -> Conv ('same' padding, stride 1) and Relu nodes."""
    for i, layer in enumerate(layers):
        if layer.op == "Relu":
            src = op("Relu", [src], f"{prefix.rsplit('__', 1)[1]}{i}_relu")
            continue
        w = _const(nodes, np.asarray(layer.weight, np.float32), f"{prefix}{i}_w")
        b = _const(nodes, np.asarray(layer.bias, np.float32), f"{prefix}{i}_b")
        src = op("Conv", [src, w, b], f"{prefix.rsplit('__', 1)[1]}{i}_conv", kernel_shape=list(layer.weight.shape[2:]),
                 pads=[layer.pad] * 4)
    return src


def static_quantize_nodes(x: ir.Value, tc, opset: int) -> tuple[list[ir.Node], ir.Value]:
    """Nodes computing uint8 symbols in [0, 2^bits) from ``x`` with the calibrated constants of ``tc``
    (splitc.cost.quantizers.TensorCodec): QuantizeLinear where the opset has it (per-channel ``axis`` from 13), after a
    Min that clips to the top of the b-bit range; below that, the same arithmetic from basic ops."""
    nodes: list[ir.Node] = []

    op = _emitter(nodes, x.name)

    rank = len(x.shape)
    levels = (1 << tc.bits) - 1
    src = x if x.dtype == ir.DataType.FLOAT else op("Cast", [x], "to_float", to=ir.DataType.FLOAT)
    if getattr(tc, "basis", None) is not None:  # PCA bottleneck: 1x1 Conv onto the k components
        basis = np.asarray(tc.basis, np.float32)
        w = _const(nodes, basis[:, :, None, None], f"{x.name}__pca_w")
        b = _const(nodes, (-(basis.astype(np.float64) @ tc.mean.astype(np.float64))).astype(np.float32), f"{x.name}__pca_b")
        src = op("Conv", [src, w, b], "pca_project", kernel_shape=[1, 1])
    if getattr(tc, "encoder", None) is not None:  # learned bottleneck: the trained encoder's Conv nodes
        src = _layers(nodes, op, src, tc.encoder, f"{x.name}__enc")
    per_channel = tc.axis is not None
    if opset >= 13 or (opset >= 10 and not per_channel):
        if tc.bits < 8:  # QuantizeLinear saturates at 0 and 255: clip the top to the b-bit range first
            hi = (levels - tc.zero_point.astype(np.float64)) * tc.scale.astype(np.float64)
            src = op("Min", [src, _bcast_const(nodes, hi, f"{x.name}__qhi", rank, tc.axis, np.float32)], "clip_hi")
        scale = _const(nodes, np.asarray(tc.scale, np.float32).reshape(-1 if per_channel else ()), f"{x.name}__qscale")
        zp = _const(nodes, np.asarray(tc.zero_point, np.uint8).reshape(-1 if per_channel else ()), f"{x.name}__qzp")
        q = op("QuantizeLinear", [src, scale, zp], "quantize", **({"axis": tc.axis} if per_channel else {}))
    else:
        if opset < 8 and per_channel:
            from splitc.errors import SplitcError

            raise SplitcError(f"per-channel quantization needs opset >= 8 (broadcasting); this model is opset {opset}")
        inv = _bcast_const(nodes, 1.0 / tc.scale.astype(np.float64), f"{x.name}__qinv", rank, tc.axis, np.float32)
        zph = _bcast_const(nodes, tc.zero_point.astype(np.float64) + 0.5, f"{x.name}__qzph", rank, tc.axis, np.float32)
        lo = _const(nodes, np.array(0.0, np.float32), f"{x.name}__qlo")
        top = _const(nodes, np.array(float(levels), np.float32), f"{x.name}__qtop")
        y = op("Floor", [op("Add", [op("Mul", [src, inv], "scaled"), zph], "shifted")], "rounded")
        y = op("Min", [op("Max", [y, lo], "clip_lo"), top], "clipped")
        q = op("Cast", [y], "q_cast", to=ir.DataType.UINT8)
    q.name = static_wire_name(x.name)
    wire_shape = x.shape
    if getattr(tc, "basis", None) is not None and x.shape is not None:
        wire_shape = ir.Shape([x.shape[0], int(tc.basis.shape[0]), *list(x.shape)[2:]])
    if getattr(tc, "encoder", None) is not None and x.shape is not None:
        wire_shape = ir.Shape([x.shape[0], int(tc.encoder[-1].weight.shape[0]), *list(x.shape)[2:]])
    q.dtype, q.shape = ir.DataType.UINT8, wire_shape
    return nodes, q


def static_dequantize_nodes(q: ir.Value, tc, dtype: ir.DataType, name: str, opset: int) -> tuple[list[ir.Node], ir.Value]:
    """Nodes computing the float tensor ``name`` back from its symbols with the plan's constants."""
    nodes: list[ir.Node] = []

    op = _emitter(nodes, name)

    rank = len(q.shape)
    per_channel = tc.axis is not None
    if opset >= 13 or (opset >= 10 and not per_channel):
        scale = _const(nodes, np.asarray(tc.scale, np.float32).reshape(-1 if per_channel else ()), f"{name}__dqscale")
        zp = _const(nodes, np.asarray(tc.zero_point, np.uint8).reshape(-1 if per_channel else ()), f"{name}__dqzp")
        y = op("DequantizeLinear", [q, scale, zp], "dequantize", **({"axis": tc.axis} if per_channel else {}))
    else:
        scale = _bcast_const(nodes, tc.scale, f"{name}__dqscale", rank, tc.axis, np.float32)
        zp = _bcast_const(nodes, tc.zero_point, f"{name}__dqzp", rank, tc.axis, np.float32)
        y = op("Mul", [op("Sub", [op("Cast", [q], "q_float", to=ir.DataType.FLOAT), zp], "centered"), scale], "dequantize")
    shape = q.shape
    if getattr(tc, "basis", None) is not None:  # PCA bottleneck: inverse 1x1 Conv back to the C channels
        basis = np.asarray(tc.basis, np.float32)
        w = _const(nodes, np.ascontiguousarray(basis.T)[:, :, None, None], f"{name}__pca_winv")
        b = _const(nodes, np.asarray(tc.mean, np.float32), f"{name}__pca_mean")
        y = op("Conv", [y, w, b], "pca_unproject", kernel_shape=[1, 1])
        if q.shape is not None:
            shape = ir.Shape([q.shape[0], int(basis.shape[1]), *list(q.shape)[2:]])
    if getattr(tc, "decoder", None) is not None:  # learned bottleneck: the trained decoder's Conv/Relu nodes
        y = _layers(nodes, op, y, tc.decoder, f"{name}__dec")
        if q.shape is not None:
            shape = ir.Shape([q.shape[0], int(tc.decoder[-1].weight.shape[0]), *list(q.shape)[2:]])
    if dtype != ir.DataType.FLOAT:
        y = op("Cast", [y], "from_float", to=dtype)
    y.dtype, y.shape = dtype, shape
    return nodes, y
