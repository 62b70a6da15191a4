"""Fused-layer spatial tiles (issue 14; DeepThings, the containerized fused-layer partitions): a part that computes
output rows [o0, o1) (axis 2, NCHW) of a group of spatially local layers from the input rows it needs.

The rows each layer needs are found backwards from the stage output (:func:`window_rows`: kernel, stride,
padding, dilation; ``ceil_mode``), so a tile always starts on its layer's stride grid; the halo is the redundant
rows two neighbouring tiles both read. Each window op (Conv, MaxPool, AveragePool) of the tile keeps its original
H padding only where the tile reaches the image border (fewer rows where only part of the padding is inside
the tile's window) and none inside: the tile's rows there are real rows. W is untouched. With
``count_include_pad`` the padded rows an AveragePool counts are the same ones as in the full image, so every
tile is exact, not approximate. Where a tensor feeds consumers needing different rows (a residual branch), its
producer computes their union and a Slice gives each consumer its rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitc.codegen.cluster_parts import PER_CHANNEL, Source, _attr, _copy, reads
from splitc.errors import SplitcError

__all__ = ["Window", "tile_part", "window_rows"]

WINDOWS = ("Conv", "MaxPool", "AveragePool")
H_LOCAL = PER_CHANNEL | {"Concat", "Sum", "Mean", "Cast", "LRN", "Split", "Slice"}  # row r out reads row r in
OFF_H = ("Concat", "Split")  # H-local unless their axis is H


@dataclass(frozen=True)
class Window:
    """A window op along H: kernel, stride, dilation, padding before/after, ceil_mode."""

    k: int
    s: int = 1
    d: int = 1
    p0: int = 0
    p1: int = 0
    ceil: bool = False

    def out_size(self, n: int, p0: int, p1: int, ceil: bool) -> int:
        span = n + p0 + p1 - self.d * (self.k - 1) - 1
        return (math.ceil(span / self.s) if ceil else span // self.s) + 1


@dataclass(frozen=True)
class Rows:
    """The input rows [lo, hi) an output row range needs, and the tile's H padding."""

    lo: int
    hi: int
    pad_top: int
    pad_bottom: int


def window_rows(w: Window, h_in: int, lo: int, hi: int) -> Rows:
    """Input rows for output rows [lo, hi) of a window op on ``h_in`` rows: window ``o`` starts at virtual row
    ``o*s - p0`` and spans ``d*(k-1)+1`` rows; what falls outside [0, h_in) is padding (only at the borders)."""
    start = lo * w.s - w.p0
    end = (hi - 1) * w.s - w.p0 + w.d * (w.k - 1) + 1
    rows_lo, rows_hi = max(0, start), min(h_in, end)
    pad_top = rows_lo - start
    # at the bottom border in ceil mode the last window may run past the padding, as in the full op; elsewhere the
    # rows span whole windows exactly, so ceil_mode (which the W axis needs unchanged) counts the same
    pad_bottom = 0 if end <= h_in else min(end - h_in, w.p1)
    got = w.out_size(rows_hi - rows_lo, pad_top, pad_bottom, w.ceil)
    if got != hi - lo or pad_top > w.p0 or rows_lo >= rows_hi:
        raise SplitcError(f"output rows [{lo}, {hi}) of a {w} on {h_in} rows have no exact tile (got {got} rows)")
    return Rows(rows_lo, rows_hi, pad_top, pad_bottom)


def _window(src: Source, n: onnx.NodeProto) -> tuple[Window, list[int]]:
    """The H window of a Conv/MaxPool/AveragePool and its explicit pads (all spatial axes, auto_pad resolved)."""
    shape = src.shape(n.input[0])
    spatial = shape[2:]
    nsp = len(spatial)
    if n.op_type == "Conv":
        kernel = _attr(n, "kernel_shape") or list(src.shape(n.input[1])[2:])
    else:
        kernel = _attr(n, "kernel_shape")
        if len([o for o in n.output if o]) > 1:
            raise SplitcError(f"node '{n.name}' ({n.op_type}) with Indices: a spatial tile cannot renumber them")
    strides = _attr(n, "strides") or [1] * nsp
    dil = _attr(n, "dilations") or [1] * nsp
    pads = list(_attr(n, "pads") or [0] * (2 * nsp))
    auto = _attr(n, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nsp):
            total = max(0, (math.ceil(spatial[i] / strides[i]) - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1 - spatial[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nsp] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    ceil = bool(_attr(n, "ceil_mode", 0))
    return Window(kernel[0], strides[0], dil[0], pads[0], pads[nsp], ceil), pads


def _union(a: tuple[int, int] | None, b: tuple[int, int]) -> tuple[int, int]:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def tile_part(src: Source, names: Sequence[str], rows: tuple[int, int],
              output: str | None = None) -> tuple[onnx.ModelProto, tuple[int, int]]:
    """The tile computing rows [o0, o1) of the stage output from the stage input's rows (returned): the part's one
    input and one output keep the stage tensors' names."""
    nodes = src.closure(names)
    ins, outs = src.boundary(nodes)
    output = output if output is not None else (outs[0] if len(outs) == 1 else None)
    if len(ins) != 1 or output is None:
        raise SplitcError(f"model '{src.model.graph.name}': a spatial stage needs one input and one output tensor, "
                          f"not {ins} -> {outs}")
    for n in nodes:
        if n.op_type not in WINDOWS and n.op_type not in H_LOCAL and any(i in src.dynamic for i in reads(n)):
            raise SplitcError(f"node '{n.name}' ({n.op_type}) is not spatially local on H; a spatial stage takes "
                              "Conv, pools, batch norms and elementwise ops only")
    h_out = src.shape(output)[2] if len(src.shape(output)) >= 3 else 0
    if not 0 <= rows[0] < rows[1] <= h_out:
        raise SplitcError(f"tensor '{output}': rows [{rows[0]}, {rows[1]}) are not inside its {h_out} rows")
    need: dict[str, tuple[int, int]] = {output: tuple(rows)}
    plan: dict[str, tuple[list[tuple[int, tuple[int, int]]], Rows | None, list[int] | None]] = {}
    for n in reversed([n for n in nodes if any(i in src.dynamic for i in reads(n))]):
        got = [need[o] for o in n.output if o in need]
        if not got:
            continue
        if len(got) > 1 and n.op_type != "Split" or len([o for o in n.output if o]) > 1 and n.op_type not in WINDOWS + ("Split",):
            raise SplitcError(f"node '{n.name}' ({n.op_type}) has several outputs; a spatial tile handles one")
        lo, hi = min(r[0] for r in got), max(r[1] for r in got)
        for o in n.output:  # a Split computes the union of its outputs' rows; each consumer crops its own
            if o in need:
                need[o] = (lo, hi)
        dyn = [(j, i) for j, i in enumerate(n.input) if i in src.dynamic]
        if n.op_type in WINDOWS:
            if [j for j, _ in dyn] != [0]:
                raise SplitcError(f"node '{n.name}' ({n.op_type}): its weights are computed from the input; not tileable")
            win, pads = _window(src, n)
            r = window_rows(win, src.shape(n.input[0])[2], lo, hi)
            plan[n.name] = ([(0, (r.lo, r.hi))], r, pads)
        elif n.op_type in H_LOCAL and not (n.op_type in OFF_H and _attr(n, "axis", 0) % len(src.shape(n.output[0])) == 2) \
                and not (n.op_type == "Slice" and _slices_h(src, n)):
            _check_h_local(src, n, dyn)
            plan[n.name] = ([(j, (lo, hi)) for j, _ in dyn], None, None)
        else:
            raise SplitcError(f"node '{n.name}' ({n.op_type}) is not spatially local on H; a spatial stage takes "
                              "Conv, pools, batch norms and elementwise ops only")
        for j, r in plan[n.name][0]:
            need[n.input[j]] = _union(need.get(n.input[j]), r)
    if ins[0] not in need:
        raise SplitcError(f"tensor '{output}' does not depend on the stage input '{ins[0]}'")
    return _build(src, nodes, plan, need, ins[0], output), need[ins[0]]


def _slices_h(src: Source, n: onnx.NodeProto) -> bool:
    """A Slice that may cut H: its axes (absent: the leading ones, one per start) unknown or naming axis 2."""
    rank = len(src.shape(n.input[0]))
    if len(n.input) > 3 and n.input[3]:
        axes = src.const(n.input[3])
    else:
        starts = src.const(n.input[1]) if len(n.input) > 1 else None
        axes = None if starts is None else np.arange(starts.size)
    return axes is None or any(int(a) % rank == 2 for a in axes.reshape(-1))


def _check_h_local(src: Source, n: onnx.NodeProto, dyn: list[tuple[int, str]]) -> None:
    """Row r of the output reads row r of every input: dynamic inputs have the output's H, constants no H extent."""
    rank = len(src.shape(n.output[0]))
    h = src.shape(n.output[0])[2] if rank >= 3 else 0
    for name in n.input:
        if not name or n.op_type == "BatchNormalization" and name != n.input[0]:
            continue
        value = None if name in src.dynamic else src.const(name)
        shape = value.shape if value is not None else src.shape(name)
        if name in src.dynamic and (len(shape) != rank or shape[2] != h):
            raise SplitcError(f"node '{n.name}' ({n.op_type}) broadcasts '{name}' {list(shape)} along H; not tileable")
        at = 2 - (rank - len(shape))
        if name not in src.dynamic and at >= 0 and shape[at] != 1:
            raise SplitcError(f"node '{n.name}' ({n.op_type}): constant '{name}' {list(shape)} varies along H; not tileable")


def _build(src: Source, nodes, plan, need, x: str, output: str) -> onnx.ModelProto:
    extra: list[onnx.TensorProto] = []
    out_nodes = []
    for n in nodes:
        if n.name not in plan and any(i in src.dynamic for i in reads(n)):
            continue  # its rows are not needed by this tile
        n = _copy(n)
        if n.name in plan:
            wants, r, pads = plan[n.name]
            for j, (lo, hi) in wants:
                have = need[n.input[j]]
                if have != (lo, hi):  # the producer computed more rows (for another consumer): crop
                    name = f"{n.input[j]}__rows{lo}_{hi}"
                    if name not in {o for m in out_nodes for o in m.output}:
                        args = [numpy_helper.from_array(np.array([v], np.int64), f"{name}__{k}")
                                for k, v in (("start", lo - have[0]), ("end", hi - have[0]), ("axis", 2))]
                        extra.extend(args)
                        out_nodes.append(helper.make_node("Slice", [n.input[j], *(a.name for a in args)], [name],
                                                          name=f"{name}__slice"))
                    n.input[j] = name
            if r is not None:
                nsp = len(pads) // 2
                pads = list(pads)
                pads[0], pads[nsp] = r.pad_top, r.pad_bottom
                keep = [a for a in n.attribute if a.name not in ("pads", "auto_pad")]
                del n.attribute[:]
                n.attribute.extend(keep)
                n.attribute.append(helper.make_attribute("pads", pads))
        out_nodes.append(n)
    shape_in, shape_out = list(src.shape(x)), list(src.shape(output))
    shape_in[2] = need[x][1] - need[x][0]
    shape_out[2] = need[output][1] - need[output][0]
    lo, hi = need[output]
    part = src.model_of(out_nodes, [src.value_info(x, shape_in)], [src.value_info(output, shape_out)], extra,
                        name=f"rows{lo}_{hi}")
    del part.graph.value_info[:]  # every tensor has fewer rows now; onnxruntime infers them
    return part
