"""Annotate every node with its FLOPs, the bytes it moves and its op class.

One FLOP is one multiply or one add (a multiply-accumulate is 2). Ops with no rule fall back
to one FLOP per output element in class ``other``, with one warning per op type. Activations
and batch norms that onnxruntime fuses into the preceding Conv/Gemm are costed as part of it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import onnx_ir as ir

from splitc.ir import metadata as ann
from splitc.errors import warn
from splitc.frontend.passes.replicable import is_replicable

_UNARY = {
    "Relu": 1, "LeakyRelu": 2, "Clip": 2, "Neg": 1, "Abs": 1, "Floor": 1, "Ceil": 1, "Round": 1, "Sign": 1,
    "Reciprocal": 1, "Sqrt": 1, "Exp": 4, "Log": 4, "Sigmoid": 4, "Tanh": 4, "Erf": 4, "Gelu": 8, "Elu": 4,
    "Selu": 4, "Celu": 4, "Softplus": 4, "Softsign": 3, "HardSigmoid": 3, "HardSwish": 4, "Mish": 8, "PRelu": 2,
    "ThresholdedRelu": 1, "Not": 1, "IsNaN": 1, "IsInf": 1, "Sin": 4, "Cos": 4, "Cast": 1, "Swish": 5,
    "QuantizeLinear": 3, "DequantizeLinear": 2, "DynamicQuantizeLinear": 5, "Shrink": 2, "BitShift": 1,
}
_BINARY = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "And", "Or", "Xor", "Where", "Mod", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
}
_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "ConstantOfShape",
          "Shape", "Size", "Optional", "OptionalGetElement"}
_DATA = {
    "Transpose", "Concat", "Slice", "Split", "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements",
    "Scatter", "Pad", "Tile", "Expand", "DepthToSpace", "SpaceToDepth", "TopK", "NonZero", "Compress", "Range",
    "OneHot", "Trilu", "EyeLike", "ReverseSequence", "NonMaxSuppression", "Unique", "SplitToSequence",
    "SequenceAt", "SequenceConstruct", "ConcatFromSequence", "GridSample", "RoiAlign", "Col2Im", "CenterCropPad",
}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "CumSum"}
_NORM = {"BatchNormalization": 2, "LayerNormalization": 8, "InstanceNormalization": 7, "GroupNormalization": 8,
         "LpNormalization": 3, "MeanVarianceNormalization": 7, "SkipLayerNormalization": 9,
         "SimplifiedLayerNormalization": 6, "RMSNormalization": 6}
_POOL = {"MaxPool", "AveragePool", "LpPool", "MaxRoiPool"}
_FUSABLE_AFTER_CONV = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh"}


def _info(v: ir.Value | None) -> ann.TensorInfo | None:
    return None if v is None else v.meta.get(ann.TENSOR)


def _elems(v: ir.Value | None) -> int:
    info = _info(v)
    return math.prod(info.shape) if info is not None else 0


def _dims(v: ir.Value | None) -> tuple[int, ...]:
    info = _info(v)
    return info.shape if info is not None else ()


def _ints(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return attr.as_ints() if attr is not None else default


def flops_rule(node: ir.Node) -> tuple[float, str, str] | None:
    """(flops, op class, rule name), or None when the op has no rule."""
    op, ins, out = node.op_type, node.inputs, node.outputs[0] if node.outputs else None
    n_out = _elems(out)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = _dims(ins[3] if op == "QLinearConv" else ins[1])
        if len(w) < 2:
            return None
        per_out = w[1] * math.prod(w[2:])
        group = node.attributes.get("group")
        kind = "depthwise" if w[1] == 1 and group is not None and group.as_int() > 1 else "conv"
        return 2.0 * n_out * per_out + (n_out if len(ins) > 2 and ins[2] is not None else 0), kind, "conv"
    if op == "ConvTranspose":
        w, x = _dims(ins[1]), _dims(ins[0])
        if len(w) < 2 or len(x) < 2:
            return None
        return 2.0 * math.prod(x) * w[1] * math.prod(w[2:]), "conv", "conv_transpose"
    if op == "Gemm":
        a = _dims(ins[0])
        trans_a = node.attributes.get("transA")
        k = a[0] if trans_a is not None and trans_a.as_int() else a[-1]
        return 2.0 * n_out * k + (n_out if len(ins) > 2 and ins[2] is not None else 0), "matmul", "gemm"
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        a = _dims(ins[0])
        return 2.0 * n_out * (a[-1] if a else 1), "matmul", "matmul"
    if op in ("LSTM", "GRU", "RNN"):
        x, w = _dims(ins[0]), _dims(ins[1])  # x: [seq, batch, in], w: [dirs, gates*H, in]
        r = _dims(ins[2])
        if len(x) < 3 or len(w) < 3 or len(r) < 3:
            return None
        return 2.0 * x[0] * x[1] * w[0] * w[1] * (w[2] + r[2]), "matmul", "recurrent"
    if op in _POOL:
        return float(n_out * math.prod(_ints(node, "kernel_shape", [1]))), "pool", "pool"
    if op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        return float(_elems(ins[0])), "pool", "global_pool"
    if op in _NORM:
        return float(_NORM[op] * _elems(ins[0])), "norm", "norm"
    if op == "LRN":
        size = node.attributes.get("size")
        return float((2 * (size.as_int() if size is not None else 5) + 4) * n_out), "norm", "lrn"
    if op in _BINARY:
        return float(n_out * max(1, len([i for i in ins if i is not None]) - 1)), "elementwise", "elementwise"
    if op in _UNARY:
        return float(n_out * _UNARY[op]), "elementwise", "elementwise"
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        return 5.0 * n_out, "reduce", "softmax"
    if op in _REDUCE:
        return float(_elems(ins[0])), "reduce", "reduce"
    if op in ("Resize", "Upsample"):
        mode = node.attributes.get("mode")
        per = {"nearest": 1, "linear": 4, "bilinear": 4, "cubic": 16}.get(mode.as_string() if mode else "nearest", 4)
        return float(n_out * per), "resize", "resize"
    if op in _VIEWS:
        return 0.0, "data", "view"
    if op in _DATA:
        return 0.0, "data", "data_movement"
    if op == "Einsum":
        return 2.0 * max(n_out, max((_elems(i) for i in ins), default=0)), "matmul", "einsum_estimate"
    return None


def _fused_into(node: ir.Node) -> ir.Node | None:
    """The Conv/Gemm that onnxruntime fuses this activation or batch norm into, if any."""
    if node.op_type not in _FUSABLE_AFTER_CONV or not node.inputs or node.inputs[0] is None:
        return None
    src = node.inputs[0].producer()
    while src is not None and src.op_type in _FUSABLE_AFTER_CONV and len(src.outputs[0].consumers()) == 1:
        src = src.inputs[0].producer() if src.inputs[0] is not None else None
    if src is None or src.op_type not in ("Conv", "Gemm"):
        return None
    if len(node.inputs[0].consumers()) != 1 or node.inputs[0].is_graph_output():
        return None
    return src


@dataclass(frozen=True)
class FlopsPass(ir.passes.InPlacePass):
    warn_unknown: bool = True

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        unknown: Counter[str] = Counter()
        for node in model.graph:
            if is_replicable(node):
                node.meta[ann.COST] = ann.NodeCost(0.0, 0, "data", "replicable")
                continue
            rule = flops_rule(node)
            if rule is None:
                unknown[node.op_type if not node.domain else f"{node.domain}.{node.op_type}"] += 1
                flops, op_class, name = float(sum(_elems(o) for o in node.outputs)), "other", "default"
            else:
                flops, op_class, name = rule
            io = [v for v in node.inputs if v is not None] + list(node.outputs)
            moved = 0 if name == "view" else sum(_info(v).bytes for v in io if _info(v) is not None)
            fused = _fused_into(node)
            if fused is not None:
                name = f"fused_into:{fused.name}"
                moved = 0
            node.meta[ann.COST] = ann.NodeCost(flops, moved, op_class, name)
        if self.warn_unknown:
            for op, count in sorted(unknown.items()):
                warn(f"no cost rule for op '{op}' ({count} node{'s' if count > 1 else ''}); costed as 1 FLOP per output element, class 'other'")
        return ir.passes.PassResult(model, False)
