"""The block chain a cluster plan is made over: plain numbers, no IR (built by splitc.partition.passes.cluster).

A block is the group of nodes between two single-tensor cuts of the DAG; a plain conv chain gives one block per
conv(+activation, +pool when onnxruntime fuses it) group, a residual unit is one block. Per layer: its latency on each
profile (for the FULL layer; a tile computing r of its out_h rows costs overhead + (full - overhead) * r / out_h),
its H geometry for spatial tiles, its output channels and weight bytes for channel splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    latency_s: tuple[float, ...]  # per BlockChain.profiles, the whole layer
    overhead_s: tuple[float, ...]  # per profile: the part that does not shrink with a tile (a kernel launch)
    in_bytes: int  # its dynamic input(s)
    out_bytes: int
    weight_bytes: int = 0
    out_channels: int = 0  # Conv: C of NCHW; Gemm/MatMul: the last dimension (fc outputs)
    in_h: int = 0  # H geometry (0 when the layer has no H axis)
    out_h: int = 0
    kernel_h: int = 1
    stride_h: int = 1
    pad_top: int = 0
    pad_bottom: int = 0
    dilation: int = 1
    inputs: tuple[str, ...] = ()  # its dynamic input tensors (empty: a chain, the previous layer's output)
    outputs: tuple[str, ...] = ()  # its output tensors read by a later node (empty: a chain, one output)

    def scaled_s(self, profile: int, fraction: float) -> float:
        """Seconds to compute ``fraction`` of the layer's output (rows of a tile, channels of a split)."""
        full, fixed = self.latency_s[profile], self.overhead_s[profile]
        return fixed + (full - fixed) * fraction

    def input_rows(self, a: int, b: int) -> tuple[int, int]:
        """The input rows [lo, hi) that output rows [a, b) read (halo: the kernel's reach, stride and padding honoured)."""
        lo = a * self.stride_h - self.pad_top
        hi = (b - 1) * self.stride_h - self.pad_top + (self.kernel_h - 1) * self.dilation + 1
        return max(0, lo), min(self.in_h, hi)


@dataclass(frozen=True)
class Block:
    nodes: tuple[str, ...]  # IR node names, topological order (replicable constants are recomputed by any part)
    inputs: tuple[str, ...]  # the tensor(s) at its input cut (block 0: the graph inputs)
    outputs: tuple[str, ...]  # the tensor at its output cut (last block: the graph outputs)
    layers: tuple[Layer, ...]
    input_bytes: int
    output_bytes: int
    weight_bytes: int
    peak_bytes: int  # the most activation bytes live at once while it runs
    spatial: bool  # a DAG of H-local layers over NCHW (Conv, pools, elementwise, channel Concat/Split/Slice), one input
    channel: bool  # a Conv/Gemm/MatMul first, then per-channel ops only

    @property
    def input(self) -> str:
        (name,) = self.inputs
        return name

    @property
    def output(self) -> str:
        (name,) = self.outputs
        return name


@dataclass(frozen=True)
class BlockChain:
    profiles: tuple[str, ...]  # profile names, the index of Layer.latency_s
    blocks: tuple[Block, ...]
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # the planner asks the same ranges often

    def latency_s(self, first: int, last: int, profile: int) -> float:
        key = ("latency", first, last, profile)
        if key not in self._memo:
            self._memo[key] = sum(layer.latency_s[profile] for b in self.blocks[first:last] for layer in b.layers)
        return self._memo[key]

    def weight_bytes(self, first: int, last: int) -> int:
        return sum(b.weight_bytes for b in self.blocks[first:last])

    def peak_bytes(self, first: int, last: int) -> int:
        return max(b.peak_bytes for b in self.blocks[first:last])

    def layers(self, first: int, last: int) -> list[Layer]:
        key = ("layers", first, last)
        if key not in self._memo:
            self._memo[key] = [layer for b in self.blocks[first:last] for layer in b.layers]
        return self._memo[key]

    def tile(self, first: int, last: int, a: int, b: int, profile: int) -> Tile:
        """:func:`tile` of output rows [a, b) of blocks [first, last) (memoized)."""
        key = ("tile", first, last, a, b, profile)
        if key not in self._memo:
            self._memo[key] = tile(self.layers(first, last), a, b, profile, self.blocks[first].input_bytes)
        return self._memo[key]


@dataclass(frozen=True)
class Tile:
    """One device's share of a spatial stage: output rows [out_lo, out_hi), input rows [in_lo, in_hi)."""

    out_rows: tuple[int, int]
    in_rows: tuple[int, int]
    seconds: float  # on the profile it was priced for (before the device's cpu_share)
    in_bytes: int
    out_bytes: int
    peak_bytes: int


def tile(layers: list[Layer], a: int, b: int, profile: int, in_bytes: int | None = None) -> Tile:
    """Output rows [a, b) of the last layer's output, over a DAG of H-local layers (topological order; a chain when the
    layers name no tensors): backwards from the last layer, each tensor's rows are the union of the rows its consumers
    read (a residual skip, a SiLU's two operands: the producer computes the union once, each consumer reads its rows;
    the halo is recomputed by each tile). Each layer is priced by the rows it computes; the peak is the most
    row-scaled bytes live at once. ``in_bytes``: the stage input's bytes (default: the first layer's input bytes)."""
    ins = [layer.inputs or (f"#{k}",) for k, layer in enumerate(layers)]
    outs = [layer.outputs or (f"#{k + 1}",) for k, layer in enumerate(layers)]
    made = {t: k for k, o in enumerate(outs) for t in o}
    (x,) = {t for i in ins for t in i if t not in made}  # the stage input
    need: dict[str, tuple[int, int]] = {outs[-1][0]: (a, b)}
    rows: list[tuple[int, int] | None] = [None] * len(layers)
    for k in reversed(range(len(layers))):
        got = [need[t] for t in outs[k] if t in need]
        if not got:
            continue  # no row of it reaches the tile's output
        rows[k] = (min(r[0] for r in got), max(r[1] for r in got))
        for t in outs[k]:
            need[t] = rows[k]  # a Split computes every output's rows at once
        lo, hi = layers[k].input_rows(*rows[k])
        for t in ins[k]:
            have = need.get(t)
            need[t] = (lo, hi) if have is None else (min(have[0], lo), max(have[1], hi))
    lo, hi = need[x]
    seconds = sum(layer.scaled_s(profile, (r[1] - r[0]) / layer.out_h) for layer, r in zip(layers, rows) if r is not None)
    last = layers[-1]
    alone = [layer for layer, i in zip(layers, ins) if i == (x,)]  # a layer reading only x knows its bytes and H
    x_bytes = alone[0].in_bytes if alone or in_bytes is None else in_bytes
    size = {x: (x_bytes, (alone or [next(layer for layer, i in zip(layers, ins) if x in i)])[0].in_h)}
    size.update((t, (layer.out_bytes / len(o), layer.out_h)) for layer, o in zip(layers, outs) for t in o)
    last_read = {t: k for k, i in enumerate(ins) for t in i}
    peak = 0
    for k, r in enumerate(rows):  # the live sweep: tensors read at or after k, produced before k, and k's outputs
        if r is None:
            continue
        layer = layers[k]
        if len(ins[k]) == 1:  # a chain layer: its own bytes and H for its input (the planner's layers are consistent)
            size[ins[k][0]] = (layer.in_bytes, layer.in_h)
        live = [t for t, j in last_read.items() if j >= k and made.get(t, -1) < k and t in need] + list(outs[k])
        peak = max(peak, int(sum(size[t][0] * (need[t][1] - need[t][0]) / size[t][1] for t in live)))
    return Tile((a, b), (lo, hi), seconds, -(-x_bytes * (hi - lo) // size[x][1]),
                -(-last.out_bytes * (b - a) // last.out_h), peak)


def proportional(total: int, weights: list[float]) -> list[int]:
    """``total`` split into integers in proportion to ``weights`` (largest remainder; ties to the earlier one)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda k: (-(exact[k] - shares[k]), k))
    for k in order[: total - sum(shares)]:
        shares[k] += 1
    return shares
