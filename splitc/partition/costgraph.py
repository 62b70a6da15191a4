"""The plain cost graph the optimizer sees, and the one evaluator every plan is priced by.

No IR here: nodes carry a latency per tier, tensors a producer, consumers and sizes, weights
their readers. Tiers form a chain (device, edge, ..., cloud) with a link between each adjacent
pair. Tier 0 is the device: graph inputs originate there and outputs must end there. Node
indices are a topological order.

Transfers are store-and-forward: a tensor crossing link l (between tiers l and l+1) is encoded
on the sending tier, sent at the link's rate and decoded on the receiving tier, once per link
and direction however many consumers it has. Each direction of a link that is used pays its RTT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitc.cost.targets import Link


@dataclass(frozen=True)
class CNode:
    name: str
    op_type: str
    latency_s: tuple[float, ...]  # per tier


@dataclass(frozen=True)
class CTensor:
    name: str
    producer: int | None  # node index; None: a graph input (on tier 0)
    consumers: tuple[int, ...]
    is_output: bool
    raw_bytes: int
    encoded_bytes: int  # on the wire going up (and down, unless encoded_down_bytes says otherwise)
    codec: str = "raw"
    encoded_down_bytes: int | None = None  # e.g. results come back losslessly


@dataclass(frozen=True)
class CWeight:
    """Weights (initializers, or tensors computed from them) that a tier holds if any reader runs there."""

    name: str
    bytes: int
    readers: tuple[int, ...]


@dataclass(frozen=True)
class CostGraph:
    tiers: tuple[str, ...]
    nodes: tuple[CNode, ...]
    tensors: tuple[CTensor, ...]
    links: tuple[Link, ...]  # links[l] joins tiers l and l+1 (a single Link is accepted for two tiers)
    encode_bytes_per_s: tuple[float, ...]  # codec throughput per tier, of raw bytes
    decode_bytes_per_s: tuple[float, ...]
    tied: tuple[tuple[int, int], ...] = ()  # node pairs that must share a tier (a fused kernel)
    weights: tuple[CWeight, ...] = ()
    busy_power_w: tuple[float, ...] = ()  # per tier; the device's is used for energy
    allow_return: bool = False  # may tensors flow back toward the device?

    def __post_init__(self):
        if isinstance(self.links, Link):
            object.__setattr__(self, "links", (self.links,))
        if len(self.tiers) < 2 or len(self.links) != len(self.tiers) - 1:
            raise ValueError(f"{len(self.tiers)} tiers need {len(self.tiers) - 1} links, got {len(self.links)}")
        if not self.busy_power_w:
            object.__setattr__(self, "busy_power_w", (0.0,) * len(self.tiers))

    @property
    def k(self) -> int:
        return len(self.tiers)

    def hop_parts(self, t: CTensor, link: int, up: bool) -> tuple[float, float, float]:
        """(encode, wire, decode) seconds for ``t`` crossing ``link`` up (toward the cloud) or down."""
        src, dst = (link, link + 1) if up else (link + 1, link)
        return (
            t.raw_bytes / self.encode_bytes_per_s[src],
            self.links[link].transfer_s(t.encoded_bytes if up or t.encoded_down_bytes is None else t.encoded_down_bytes,
                                        "up" if up else "down"),
            t.raw_bytes / self.decode_bytes_per_s[dst],
        )

    def send_parts(self, t: CTensor, src: int, dst: int) -> tuple[float, float, float]:
        """(encode, wire, decode) seconds to move ``t`` from tier ``src`` to ``dst``, hop by hop."""
        up = dst > src
        hops = range(src, dst) if up else range(dst, src)
        parts = [self.hop_parts(t, link, up) for link in hops]
        return tuple(float(sum(p[i] for p in parts)) for i in range(3))

    def send_s(self, t: CTensor, src: int, dst: int) -> float:
        return sum(self.send_parts(t, src, dst))

    def edges(self) -> list[tuple[int, int]]:
        return sorted({(t.producer, c) for t in self.tensors if t.producer is not None for c in t.consumers})

    def with_links(self, links: tuple[Link, ...]) -> "CostGraph":
        from dataclasses import replace

        return replace(self, links=tuple(links))


@dataclass(frozen=True)
class Breakdown:
    total_s: float  # sequential end-to-end latency of one frame
    compute_s: tuple[float, ...]  # per tier
    transfer_s: float  # encode + wire + decode of every crossing
    rtt_s: float
    feasible: bool  # data-flow direction and fused groups respected (constraints are checked apart)
    energy_j: float = 0.0  # device energy per frame: busy power x device time + radio energy
    period_s: float = 0.0  # pipelined: 1 / frames per second = the busiest tier or link
    device_memory_bytes: int = 0  # weights + peak live activations on the device
    link_bytes: tuple[tuple[int, int], ...] = ()  # per link: (bytes up, bytes down)

    @property
    def cloud_s(self) -> float:
        return self.compute_s[-1]

    def metric(self, name: str) -> float:
        return {"latency": self.total_s, "energy": self.energy_j, "throughput": self.period_s,
                "device_memory": float(self.device_memory_bytes), "cloud_time": self.cloud_s}[name]


def evaluate(cg: CostGraph, placement) -> Breakdown:
    r = evaluate_many(cg, np.asarray(placement, dtype=np.int64)[None, :])
    return Breakdown(
        float(r["total"][0]),
        tuple(float(c[0]) for c in r["compute"]),
        float(r["transfer"][0]),
        float(r["rtt"][0]),
        bool(r["feasible"][0]),
        float(r["energy"][0]),
        float(r["period"][0]),
        int(r["memory"][0]),
        tuple((int(u[0]), int(d[0])) for u, d in zip(r["bytes_up"], r["bytes_down"])),
    )


def _live_intervals(cg: CostGraph) -> tuple[np.ndarray, np.ndarray]:
    """[start, end] node steps during which each tensor is held, in the topological schedule."""
    n = len(cg.nodes)
    starts = np.array([t.producer if t.producer is not None else 0 for t in cg.tensors], dtype=np.int64)
    ends = np.array([n - 1 if t.is_output else max(t.consumers, default=s) for t, s in zip(cg.tensors, starts)], dtype=np.int64)
    return starts, ends


def evaluate_many(cg: CostGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Price many placements at once. ``x``: (m, n) array of tier indices (0 = device).

    Feasible: without ``allow_return``, no node reads a tensor from a tier above it; tied nodes
    share a tier. Metrics: latency (sequential), device energy, pipelined period, device memory.
    """
    x = np.asarray(x, dtype=np.int64)
    m, n, k = x.shape[0], x.shape[1], cg.k
    lat = np.array([nd.latency_s for nd in cg.nodes], dtype=float).reshape(n, k)
    onehot = np.stack([(x == tier).astype(float) for tier in range(k)])  # (k, m, n)
    compute = [onehot[tier] @ lat[:, tier] for tier in range(k)]
    codec = [np.zeros(m) for _ in range(k)]
    wire_up = [np.zeros(m) for _ in range(k - 1)]
    wire_down = [np.zeros(m) for _ in range(k - 1)]
    bytes_up = [np.zeros(m, dtype=np.int64) for _ in range(k - 1)]
    bytes_down = [np.zeros(m, dtype=np.int64) for _ in range(k - 1)]
    used_up = [np.zeros(m, dtype=bool) for _ in range(k - 1)]
    used_down = [np.zeros(m, dtype=bool) for _ in range(k - 1)]
    transfer = np.zeros(m)
    feasible = np.ones(m, dtype=bool)
    big = k + 1
    for t in cg.tensors:
        src = x[:, t.producer] if t.producer is not None else np.zeros(m, dtype=np.int64)
        cons = x[:, list(t.consumers)] if t.consumers else np.empty((m, 0), dtype=np.int64)
        hi = cons.max(axis=1) if t.consumers else np.full(m, -1)
        lo = cons.min(axis=1) if t.consumers else np.full(m, big)
        if not cg.allow_return:
            feasible &= ~(lo < src)  # a reader below its producer: data would flow back
        if t.is_output:
            lo = np.zeros(m, dtype=np.int64)  # results end on the device
        for link in range(k - 1):
            up = (src <= link) & (hi >= link + 1)
            down = (src >= link + 1) & (lo <= link)
            if up.any():
                enc, wire, dec = cg.hop_parts(t, link, True)
                transfer += up * (enc + wire + dec)
                codec[link] += up * enc
                codec[link + 1] += up * dec
                wire_up[link] += up * wire
                bytes_up[link] += up * t.encoded_bytes
                used_up[link] |= up
            if down.any():
                enc, wire, dec = cg.hop_parts(t, link, False)
                transfer += down * (enc + wire + dec)
                codec[link + 1] += down * enc
                codec[link] += down * dec
                wire_down[link] += down * wire
                bytes_down[link] += down * (t.encoded_bytes if t.encoded_down_bytes is None else t.encoded_down_bytes)
                used_down[link] |= down
    for a, b in cg.tied:
        feasible &= x[:, a] == x[:, b]
    rtt = sum((used_up[l].astype(float) + used_down[l]) * cg.links[l].rtt_s for l in range(k - 1))
    rtt = rtt if k > 1 else np.zeros(m)
    total = sum(compute) + transfer + rtt
    radio = cg.links[0].radio
    energy = cg.busy_power_w[0] * (compute[0] + codec[0])
    if radio is not None:
        energy = energy + wire_up[0] * radio.power_w(cg.links[0].up_bps, "up") + wire_down[0] * radio.power_w(cg.links[0].down_bps, "down")
    period = np.max(np.stack([compute[t] + codec[t] for t in range(k)] + [np.maximum(wire_up[l], wire_down[l]) for l in range(k - 1)]), axis=0)
    memory = _device_memory(cg, x)
    return {"total": total, "compute": compute, "transfer": transfer, "rtt": rtt, "feasible": feasible, "energy": energy,
            "period": period, "memory": memory, "bytes_up": bytes_up, "bytes_down": bytes_down}


def _device_memory(cg: CostGraph, x: np.ndarray) -> np.ndarray:
    """Weights any device node reads + the peak, over the topological schedule, of live tensors held on the device."""
    m, n = x.shape
    on_device = x == 0
    weights = np.zeros(m)
    for w in cg.weights:
        weights += on_device[:, list(w.readers)].any(axis=1) * w.bytes
    if not cg.tensors or not n:
        return weights.astype(np.int64)
    held = np.stack([on_device[:, t.producer] if t.producer is not None else np.ones(m, dtype=bool) for t in cg.tensors], axis=1)
    starts, ends = _live_intervals(cg)
    contrib = (held * np.array([t.raw_bytes for t in cg.tensors], dtype=float)).T  # (T, m)
    diff = np.zeros((n + 1, m))
    np.add.at(diff, starts, contrib)
    np.add.at(diff, ends + 1, -contrib)
    return (weights + np.cumsum(diff[:n], axis=0).max(axis=0)).astype(np.int64)
