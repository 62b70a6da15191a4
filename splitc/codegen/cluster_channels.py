"""Channel parts of a cluster plan (issue 14): one Conv/Gemm/MatMul computing output channels [c0, c1) (weights and
bias sliced), with the per-channel ops after it (BatchNormalization, bias Add, Mul, activations, pools) sliced
consistently; nodes before it run whole. The hub concatenates the parts' outputs on the channel axis (1 for Conv and
Gemm, the last for MatMul: :func:`channel_axis`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from splitc.codegen.cluster_parts import PER_CHANNEL, Source, _attr, _copy, reads
from splitc.errors import SplitcError

__all__ = ["channel_anchor", "channel_axis", "channel_part"]

ANCHORS = ("Conv", "Gemm", "MatMul")
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}  # channel axis 1


def _const_input(src: Source, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
    value = src.const(node.input[index]) if len(node.input) > index and node.input[index] else None
    if value is None:
        raise SplitcError(f"node '{node.name}' ({node.op_type}): its {what} '{node.input[index]}' is not a constant; "
                          "a channel split slices constant weights only")
    return value


def channel_part(src: Source, names: Sequence[str], channels: tuple[int, int],
                 outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """Output channels [c0, c1) of the one Conv/Gemm/MatMul among ``names``: its weights (and bias) sliced, the
    per-channel ops after it sliced alike; nodes before it run whole. The part's outputs keep their names."""
    nodes = src.closure(names)
    anchor = channel_anchor(src, names)
    rank = len(src.shape(anchor.output[0]))
    axis, size = channel_axis(src, anchor)
    c0, c1 = channels
    if not 0 <= c0 < c1 <= size:
        raise SplitcError(f"node '{anchor.name}': channels [{c0}, {c1}) are not inside its {size} output channels")
    tag = f"__ch{c0}_{c1}"
    extra: list[onnx.TensorProto] = []

    def sliced(node: onnx.NodeProto, index: int, array: np.ndarray, at: int) -> None:
        name = node.input[index] + tag
        if name not in {t.name for t in extra}:
            extra.append(numpy_helper.from_array(np.ascontiguousarray(np.take(array, range(c0, c1), axis=at)), name))
        node.input[index] = name

    out_nodes, split = [], set()
    for n in nodes:
        n = _copy(n)
        if n.name == anchor.name:
            _slice_anchor(src, n, sliced, c0, c1)
            split.update(n.output)
        elif any(i in split for i in n.input):
            _slice_follower(src, n, split, sliced, axis, rank, size)
            split.update(o for o in n.output if o)
        out_nodes.append(n)
    ins, outs = src.boundary(nodes)
    outs = list(outputs) if outputs is not None else outs
    bad = [o for o in outs if o not in split]
    if bad or not outs:
        raise SplitcError(f"node '{anchor.name}': the channel split's outputs {bad or outs} do not come from its "
                          "sliced channels")
    out_vis = []
    for o in outs:
        shape = list(src.shape(o))
        shape[axis] = c1 - c0
        out_vis.append(src.value_info(o, shape))
    part = src.model_of(out_nodes, [src.value_info(i) for i in ins], out_vis, extra, name=f"ch{c0}_{c1}")
    del part.graph.value_info[:]  # the sliced tensors' shapes changed; onnxruntime infers them
    return part


def channel_axis(src: Source, anchor: onnx.NodeProto) -> tuple[int, int]:
    """(the axis a Conv/Gemm/MatMul's output channels are on, their number): 1 for Conv and Gemm, the last for
    MatMul."""
    shape = src.shape(anchor.output[0])
    axis = len(shape) - 1 if anchor.op_type == "MatMul" else 1
    return axis, shape[axis]


def channel_anchor(src: Source, names: Sequence[str]) -> onnx.NodeProto:
    """The one Conv/Gemm/MatMul reading a dynamic tensor among ``names``."""
    anchors = [n for n in src.closure(names) if n.op_type in ANCHORS and any(i in src.dynamic for i in reads(n))]
    if len(anchors) != 1:
        raise SplitcError(f"model '{src.model.graph.name}': a channel split needs exactly one Conv/Gemm/MatMul in its "
                          f"nodes, found {len(anchors)} ({', '.join(n.name for n in anchors) or 'none'})")
    return anchors[0]


def _slice_anchor(src: Source, n: onnx.NodeProto, sliced, c0: int, c1: int) -> None:
    if n.op_type == "Conv":
        if _attr(n, "group", 1) != 1:
            raise SplitcError(f"node '{n.name}' (grouped Conv, group {_attr(n, 'group')}): a channel split handles "
                              "group 1 only; plan it as a spatial or single stage")
        sliced(n, 1, _const_input(src, n, 1, "weight"), 0)
        if len(n.input) > 2 and n.input[2]:
            sliced(n, 2, _const_input(src, n, 2, "bias"), 0)
    elif n.op_type == "Gemm":
        w = _const_input(src, n, 1, "weight")
        sliced(n, 1, w, 0 if _attr(n, "transB", 0) else 1)
        if len(n.input) > 2 and n.input[2]:
            c = _const_input(src, n, 2, "bias")
            if c.ndim >= 1 and c.shape[-1] > 1:
                sliced(n, 2, c, c.ndim - 1)
    else:  # MatMul
        w = _const_input(src, n, 1, "weight")
        if w.ndim < 2:
            raise SplitcError(f"node '{n.name}' (MatMul with a 1-D weight): its output has no channel axis to split")
        sliced(n, 1, w, w.ndim - 1)


def _slice_follower(src: Source, n: onnx.NodeProto, split: set, sliced, axis: int, rank: int, size: int) -> None:
    """A node after the anchor reading its channels: per-channel ops only; their constants sliced on the axis."""
    where = f"node '{n.name}' ({n.op_type}) after the channel-split"
    if n.op_type in POOLS or n.op_type == "BatchNormalization":
        if axis != 1:
            raise SplitcError(f"{where} works on axis 1, not the split axis {axis}")
    elif n.op_type not in PER_CHANNEL:
        raise SplitcError(f"{where} mixes channels; end the channel stage before it")
    for j, name in enumerate(n.input):
        if not name or name in split:
            continue
        if name in src.dynamic:
            raise SplitcError(f"{where} also reads '{name}', which is not split by channel")
        value = src.const(name)
        if value is None:
            raise SplitcError(f"{where} reads '{name}', which is not a constant")
        if n.op_type == "BatchNormalization":
            sliced(n, j, value, 0)
            continue
        at = axis - (rank - value.ndim)
        if at >= 0 and value.shape[at] == size and size > 1:
            sliced(n, j, value, at)
        elif at >= 0 and value.shape[at] != 1:
            raise SplitcError(f"{where}: constant '{name}' {list(value.shape)} does not broadcast per channel")
