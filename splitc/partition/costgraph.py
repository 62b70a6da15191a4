"""The plain cost graph the optimizer sees, and the one evaluator every plan is priced by.

No IR here: nodes carry a latency per tier, tensors a producer, consumers and sizes, weights
their readers. Tiers form a chain (device, edge, ..., cloud) with a link between each adjacent
pair. Tier 0 is the device: graph inputs originate there and outputs must end there. Node
indices are a topological order.

Transfers are store-and-forward: a tensor crossing link l (between tiers l and l+1) is encoded
on the sending tier, sent at the link's rate and decoded on the receiving tier, once per link
and direction however many consumers it has. Each direction of a link that is used pays half its
RTT (the one-way delay): a request/response exchange (device -> server -> device) pays one RTT.
On the wire a tensor's bytes carry packet headers, and each direction used is one message whose
framing is sent once (``Link.wire_bytes``).

Device energy per frame: busy power while the device computes or codes, idle power for the rest of
the frame (waiting for the wire and the server), plus the radio's power while it sends or receives.
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
    # per tier (encode_s, decode_s) of the tensor's own coder (an image input sent as JPEG: seconds from the
    # tier's [image] rates), in place of raw_bytes / the tier's tensor-codec rate
    coder_s: tuple[tuple[float, float], ...] | None = None
    # (encode, decode) time of the tensor's coder over the tier's tensor-codec rate, e.g. a context-coded map's
    coder_factor: tuple[float, float] = (1.0, 1.0)

    def coder_parts(self, src: int, dst: int, encode_bytes_per_s, decode_bytes_per_s) -> tuple[float, float]:
        """(encode seconds on tier ``src``, decode seconds on tier ``dst``)."""
        if self.coder_s is not None:
            return self.coder_s[src][0], self.coder_s[dst][1]
        return (self.raw_bytes / encode_bytes_per_s[src] * self.coder_factor[0],
                self.raw_bytes / decode_bytes_per_s[dst] * self.coder_factor[1])


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
    idle_power_w: tuple[float, ...] = ()  # per tier; the device draws it while it waits within a frame

    def __post_init__(self):
        if isinstance(self.links, Link):
            object.__setattr__(self, "links", (self.links,))
        if len(self.tiers) < 2 or len(self.links) != len(self.tiers) - 1:
            raise ValueError(f"{len(self.tiers)} tiers need {len(self.tiers) - 1} links, got {len(self.links)}")
        if not self.busy_power_w:
            object.__setattr__(self, "busy_power_w", (0.0,) * len(self.tiers))
        if not self.idle_power_w:
            object.__setattr__(self, "idle_power_w", (0.0,) * len(self.tiers))
        if not 0.0 <= self.idle_power_w[0] <= self.busy_power_w[0]:  # coarsening's pull-up rule relies on it
            raise ValueError(f"device idle power {self.idle_power_w[0]} W must lie in [0, busy power {self.busy_power_w[0]} W]")

    @property
    def k(self) -> int:
        return len(self.tiers)

    def hop_parts(self, t: CTensor, link: int, up: bool) -> tuple[float, float, float]:
        """(encode, wire, decode) seconds for ``t`` crossing ``link`` up (toward the cloud) or down."""
        src, dst = (link, link + 1) if up else (link + 1, link)
        enc, dec = t.coder_parts(src, dst, self.encode_bytes_per_s, self.decode_bytes_per_s)
        return (
            enc,
            self.links[link].transfer_s(t.encoded_bytes if up or t.encoded_down_bytes is None else t.encoded_down_bytes,
                                        "up" if up else "down", messages=0),
            dec,
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
    transfer_s: float  # encode + wire + decode of every crossing, and the framing of every message (direction used)
    rtt_s: float
    feasible: bool  # data-flow direction and fused groups respected (constraints are checked apart)
    energy_j: float = 0.0  # device energy per frame: busy x device time + idle x the rest of the frame + radio energy
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


def _structure(cg: CostGraph) -> dict:
    """The graph's topology as flat arrays (consumers and weight readers as CSR segments), cached on ``cg``."""
    cached = cg.__dict__.get("_structure")
    if cached is not None:
        return cached
    ts, ws = cg.tensors, cg.weights
    counts = np.array([len(t.consumers) for t in ts], dtype=np.int64)
    reader_counts = np.array([len(w.readers) for w in ws], dtype=np.int64)
    s = {
        "producer": np.array([-1 if t.producer is None else t.producer for t in ts], dtype=np.int64),
        "consumers": np.fromiter((c for t in ts for c in t.consumers), dtype=np.int64, count=int(counts.sum())),
        "counts": counts,
        "is_output": np.array([t.is_output for t in ts], dtype=bool),
        "raw": np.array([t.raw_bytes for t in ts], dtype=float),
        "up_bytes": np.array([t.encoded_bytes for t in ts], dtype=float),
        "down_bytes": np.array([t.encoded_bytes if t.encoded_down_bytes is None else t.encoded_down_bytes for t in ts],
                               dtype=float),
        "readers": np.fromiter((r for w in ws for r in w.readers), dtype=np.int64, count=int(reader_counts.sum())),
        "reader_counts": reader_counts,
        "weight_bytes": np.array([w.bytes for w in ws], dtype=float),
    }
    object.__setattr__(cg, "_structure", s)  # not a field: equality, hashing and replace() ignore it
    return s


def _hop_vectors(cg: CostGraph, link: int, up: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hop_parts`` of every tensor at once: (encode, wire, decode) seconds, each of shape (tensors,)."""
    s = _structure(cg)
    src, dst = (link, link + 1) if up else (link + 1, link)
    wire = cg.links[link].transfer_s(s["up_bytes"] if up else s["down_bytes"], "up" if up else "down", messages=0)
    enc, dec = s["raw"] / cg.encode_bytes_per_s[src], s["raw"] / cg.decode_bytes_per_s[dst]
    for i, t in enumerate(cg.tensors):  # tensors with their own coder (image inputs, context-coded maps): a few at most
        if t.coder_s is not None or t.coder_factor != (1.0, 1.0):
            enc[i], dec[i] = t.coder_parts(src, dst, cg.encode_bytes_per_s, cg.decode_bytes_per_s)
    return enc, np.asarray(wire, dtype=float), dec


def _segment_reduce(ufunc, values: np.ndarray, counts: np.ndarray, empty) -> np.ndarray:
    """``ufunc`` over consecutive segments (of the given lengths) of ``values`` along axis 0; ``empty`` where empty."""
    out = np.full((len(counts),) + values.shape[1:], empty, dtype=values.dtype)
    nonempty = counts > 0
    if nonempty.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out[nonempty] = ufunc.reduceat(values, starts[nonempty], axis=0)
    return out


def evaluate_many(cg: CostGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Price many placements at once. ``x``: (m, n) array of tier indices (0 = device).

    Feasible: without ``allow_return``, no node reads a tensor from a tier above it; tied nodes
    share a tier. Metrics: latency (sequential), device energy, pipelined period, device memory.
    Time and memory are linear in m x (nodes + tensors + edges).
    """
    x = np.asarray(x, dtype=np.int64)
    m, n, k = x.shape[0], x.shape[1], cg.k
    s = _structure(cg)
    lat = np.array([nd.latency_s for nd in cg.nodes], dtype=float).reshape(n, k)
    compute = [(x == tier).astype(float) @ lat[:, tier] for tier in range(k)]
    xt = x.T  # (n, m)
    src = np.where(s["producer"][:, None] >= 0, xt[np.maximum(s["producer"], 0)], 0)  # (tensors, m); inputs on tier 0
    reads = xt[s["consumers"]]
    hi = _segment_reduce(np.maximum, reads, s["counts"], -1)
    lo = _segment_reduce(np.minimum, reads, s["counts"], k + 1)
    feasible = np.ones(m, dtype=bool)
    if not cg.allow_return:
        feasible &= ~(lo < src).any(axis=0)  # a reader below its producer: data would flow back
    lo = np.where(s["is_output"][:, None], 0, lo)  # results end on the device
    masks = [(((src <= l) & (hi >= l + 1)).T.astype(float), ((src >= l + 1) & (lo <= l)).T.astype(float))
             for l in range(k - 1)]  # per link: (m, tensors) up and down crossings
    for a, b in cg.tied:
        feasible &= x[:, a] == x[:, b]
    r = _combine(cg, compute, _crossings(cg, masks, lambda mask, vec: mask @ vec, m), feasible)
    r["memory"] = _device_memory(cg, x)
    return r


def evaluate_cuts(cg: CostGraph) -> dict[str, np.ndarray]:
    """``evaluate_many`` of the n + 1 single cuts along the topological order, without their (n + 1) x n matrix.

    Row c puts nodes [0, c) on the device and [c, n) on the last tier (c = 0: all on the last tier, c = n: device
    only). Each tensor crosses, and each infeasibility holds, for an interval of c, so every sum is a difference
    array: time and memory O(nodes + tensors + edges). Same keys as ``evaluate_many`` but "memory".
    """
    n, k = len(cg.nodes), cg.k
    s = _structure(cg)
    lat = np.array([nd.latency_s for nd in cg.nodes], dtype=float).reshape(n, k)
    compute = [np.zeros(n + 1) for _ in range(k)]
    compute[0] = np.concatenate([[0.0], np.cumsum(lat[:, 0])])
    compute[-1] = np.concatenate([np.cumsum(lat[::-1, -1])[::-1], [0.0]])
    p = s["producer"]
    cmax = _segment_reduce(np.maximum, s["consumers"], s["counts"], -1)
    cmin = _segment_reduce(np.minimum, s["consumers"], s["counts"], n + 1)
    up = (p + 1, cmax)  # producer (or input) on the device, a reader on the last tier
    down = (np.where(s["is_output"], 0, cmin + 1), p)  # producer on the last tier, a reader (or the result) on the device

    def dot(interval, vec):
        lo, hi = interval
        ok = lo <= hi
        diff = np.bincount(lo[ok], vec[ok], n + 2) - np.bincount(hi[ok] + 1, vec[ok], n + 2)
        return np.cumsum(diff)[: n + 1]

    bad = np.zeros(n + 1)
    if not cg.allow_return:
        bad += dot((cmin + 1, p), np.ones(len(p)))
    if cg.tied:
        pairs = np.array(cg.tied, dtype=np.int64).reshape(-1, 2)
        bad += dot((pairs.min(axis=1) + 1, pairs.max(axis=1)), np.ones(len(pairs)))
    return _combine(cg, compute, _crossings(cg, [(up, down)] * (k - 1), dot, n + 1), bad < 0.5)


def _crossings(cg: CostGraph, masks, dot, m: int) -> dict:
    """Sums over the tensors crossing each link (``masks[link]`` = (up, down), ``dot(mask, per-tensor vector)``)."""
    ones = np.ones(len(cg.tensors))
    transfer = np.zeros(m)
    codec = [np.zeros(m) for _ in range(cg.k)]
    out = {key: [] for key in ("wire_up", "wire_down", "bytes_up", "bytes_down", "used_up", "used_down")}
    for link, pair in enumerate(masks):
        for mask, up, d in zip(pair, (True, False), ("up", "down")):
            enc, wire, dec = _hop_vectors(cg, link, up)
            src, dst = (link, link + 1) if up else (link + 1, link)
            transfer = transfer + dot(mask, enc + wire + dec)
            codec[src] = codec[src] + dot(mask, enc)
            codec[dst] = codec[dst] + dot(mask, dec)
            out[f"wire_{d}"].append(dot(mask, wire))
            out[f"bytes_{d}"].append(np.rint(dot(mask, _structure(cg)[f"{d}_bytes"])).astype(np.int64))
            out[f"used_{d}"].append(dot(mask, ones) > 0.5)
    return {"transfer": transfer, "codec": codec, **out}


def _combine(cg: CostGraph, compute: list, c: dict, feasible: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics from compute per tier and the crossing sums: latency, RTT, device energy, pipelined period."""
    k = cg.k
    # half an RTT per direction used: the one-way delay each way
    rtt = sum((c["used_up"][l].astype(float) + c["used_down"][l]) * (cg.links[l].rtt_s / 2) for l in range(k - 1))
    # each direction used is one message: its framing (HTTP + OIP header, packet headers) is on the wire once
    framing = [(c["used_up"][l] * cg.links[l].message_s("up"), c["used_down"][l] * cg.links[l].message_s("down"))
               for l in range(k - 1)]
    c = {**c, "transfer": c["transfer"] + sum(u + d for u, d in framing),
         "wire_up": [w + f[0] for w, f in zip(c["wire_up"], framing)], "wire_down": [w + f[1] for w, f in zip(c["wire_down"], framing)]}
    total = sum(compute) + c["transfer"] + rtt
    radio = cg.links[0].radio
    busy = compute[0] + c["codec"][0]
    energy = cg.busy_power_w[0] * busy + cg.idle_power_w[0] * (total - busy)  # idle while the frame waits
    if radio is not None:
        energy = energy + c["wire_up"][0] * radio.power_w(cg.links[0].up_bps, "up") \
            + c["wire_down"][0] * radio.power_w(cg.links[0].down_bps, "down")
    period = np.max(np.stack([compute[t] + c["codec"][t] for t in range(k)]
                             + [np.maximum(c["wire_up"][l], c["wire_down"][l]) for l in range(k - 1)]), axis=0)
    return {"total": total, "compute": compute, "transfer": c["transfer"], "rtt": rtt, "feasible": feasible,
            "energy": energy, "period": period, "bytes_up": c["bytes_up"], "bytes_down": c["bytes_down"]}


def _device_memory(cg: CostGraph, x: np.ndarray) -> np.ndarray:
    """Weights any device node reads + the peak, over the topological schedule, of live tensors held on the device."""
    m, n = x.shape
    s = _structure(cg)
    on_device = (x == 0).T  # (n, m)
    weights = np.zeros(m)
    if cg.weights:
        weights = s["weight_bytes"] @ _segment_reduce(np.maximum, on_device[s["readers"]], s["reader_counts"], False)
    if not cg.tensors or not n:
        return weights.astype(np.int64)
    held = np.where(s["producer"][:, None] >= 0, on_device[np.maximum(s["producer"], 0)], True)  # (tensors, m)
    starts, ends = _live_intervals(cg)
    contrib = held * s["raw"][:, None]
    diff = np.zeros((n + 1, m))
    np.add.at(diff, starts, contrib)
    np.add.at(diff, ends + 1, -contrib)
    return (weights + np.cumsum(diff[:n], axis=0).max(axis=0)).astype(np.int64)
