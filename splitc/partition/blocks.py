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
    spatial: bool  # a chain of H-local layers (Conv, pools, per-channel elementwise) over NCHW
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
            self._memo[key] = tile(self.layers(first, last), a, b, profile)
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


def tile(layers: list[Layer], a: int, b: int, profile: int) -> Tile:
    """Output rows [a, b) of a chain of H-local layers: each layer's rows found backwards from the last (the halo is
    recomputed by each tile), its cost and its input rows."""
    rows = []
    lo, hi = a, b
    for layer in reversed(layers):
        rows.append((lo, hi))
        lo, hi = layer.input_rows(lo, hi)
    rows.reverse()
    seconds = sum(layer.scaled_s(profile, (r[1] - r[0]) / layer.out_h) for layer, r in zip(layers, rows))
    first, last = layers[0], layers[-1]
    peak = max(int(layer.in_bytes * (layer.input_rows(*r)[1] - layer.input_rows(*r)[0]) / layer.in_h
                   + layer.out_bytes * (r[1] - r[0]) / layer.out_h) for layer, r in zip(layers, rows))
    return Tile((a, b), (lo, hi), seconds, -(-first.in_bytes * (hi - lo) // first.in_h),
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
