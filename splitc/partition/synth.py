"""Synthetic cost graphs of any size, shaped like CNN backbones, for scale benchmarks and tests.

A stage-wise network: chains of blocks whose tensors shrink with depth (strided stages), with
residual skips, occasional multi-branch (inception-style) blocks joined by a concat, and a few
early exits as extra outputs. Latencies follow a device that is ~30x slower than the server.
"""

from __future__ import annotations

import numpy as np

from splitc.partition.costgraph import CNode, CostGraph, CTensor, CWeight
from splitc.cost.targets import Link


def synthetic_dag(n: int, seed: int = 0, link: Link | None = None, tiers: int = 2) -> CostGraph:
    rng = np.random.default_rng(seed)
    link = link or Link("synthetic", 20e6, 50e6, 0.02)
    nodes: list[CNode] = []
    consumers: dict[int, list[int]] = {}
    sizes: list[int] = []
    input_consumers: list[int] = []
    stages = max(1, int(np.log2(max(n, 2)) // 2))
    prev, skip = None, None
    for i in range(n):
        depth = i / max(n - 1, 1)
        stage = min(int(depth * stages), stages - 1)
        size = int(602112 * (1.6 if i < n * 0.05 else 1.0) / (2 ** stage) * rng.uniform(0.5, 1.5))
        flops = float(rng.lognormal(17, 1))
        device = 25e-6 + flops / 30e9
        lat = tuple(device / (1 + 29 * t / max(tiers - 1, 1)) for t in range(tiers))
        nodes.append(CNode(f"n{i}", "Synthetic", lat))
        sizes.append(size)
        if prev is None:
            input_consumers.append(i)
        else:
            consumers.setdefault(prev, []).append(i)
        r = rng.random()
        if skip is not None and r < 0.15 and skip != prev:
            consumers.setdefault(skip, []).append(i)  # residual join
        if r < 0.08 and i + 3 < n:
            consumers.setdefault(i, []).append(i + 2)  # a branch skipping one node (inception-style)
        if rng.random() < 0.1:
            skip = i
        prev = i
    tensors = [CTensor("input", None, tuple(input_consumers), False, 602112, 150533, "int8")]
    exits = set(rng.choice(np.arange(n // 2, n), size=min(3, max(n // 2, 1)), replace=False).tolist()) | {n - 1}
    for i in range(n):
        cons = tuple(sorted(set(c for c in consumers.get(i, []) if c > i)))
        is_out = i in exits or not cons
        out_bytes = sizes[i] if not is_out else 4000
        tensors.append(CTensor(f"t{i}", i, cons, is_out, out_bytes, out_bytes // 4 + 5 if cons else out_bytes, "int8",
                               out_bytes if is_out else None))
    weights = tuple(CWeight(f"w{i}", int(rng.integers(1_000, 2_000_000)), (i,)) for i in range(0, n, 2))
    return CostGraph(
        tuple(f"tier{t}" for t in range(tiers)),
        tuple(nodes),
        tuple(tensors),
        tuple([link] * (tiers - 1)),
        tuple([250e6] + [2e9] * (tiers - 1)),
        tuple([400e6] + [3e9] * (tiers - 1)),
        (),
        weights,
        tuple([6.4] + [70.0] * (tiers - 1)),
    )
