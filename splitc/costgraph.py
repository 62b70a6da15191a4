"""The plain cost graph the optimizer sees, and the one evaluator every plan is priced by.

No IR here: nodes carry a latency per tier, tensors carry a producer, consumers and sizes.
Tier 0 is the device, where graph inputs originate and where outputs must end.
Node indices are a topological order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitc.targets import Link


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
    encoded_bytes: int
    codec: str = "raw"


@dataclass(frozen=True)
class CostGraph:
    tiers: tuple[str, ...]
    nodes: tuple[CNode, ...]
    tensors: tuple[CTensor, ...]
    link: Link  # between tier 0 (device) and tier 1
    encode_bytes_per_s: tuple[float, ...]  # codec throughput per tier, of raw bytes
    decode_bytes_per_s: tuple[float, ...]
    tied: tuple[tuple[int, int], ...] = ()  # node pairs that must share a tier (a fused kernel)

    def __post_init__(self):
        if len(self.tiers) != 2:
            raise ValueError("this cost graph models two tiers (device, server)")

    def send_parts(self, t: CTensor, src: int, dst: int) -> tuple[float, float, float]:
        """(encode, wire, decode) seconds to move tensor ``t`` from tier ``src`` to ``dst``."""
        direction = "up" if dst > src else "down"
        return (
            t.raw_bytes / self.encode_bytes_per_s[src],
            self.link.transfer_s(t.encoded_bytes, direction),
            t.raw_bytes / self.decode_bytes_per_s[dst],
        )

    def send_s(self, t: CTensor, src: int, dst: int) -> float:
        return sum(self.send_parts(t, src, dst))

    def edges(self) -> list[tuple[int, int]]:
        return sorted({(t.producer, c) for t in self.tensors if t.producer is not None for c in t.consumers})


@dataclass(frozen=True)
class Breakdown:
    total_s: float
    compute_s: tuple[float, ...]
    transfer_s: float  # encode + wire + decode of every crossing tensor
    rtt_s: float
    feasible: bool


def evaluate(cg: CostGraph, placement) -> Breakdown:
    totals = evaluate_many(cg, np.asarray(placement, dtype=np.int8)[None, :])
    return Breakdown(
        float(totals["total"][0]),
        tuple(float(c[0]) for c in totals["compute"]),
        float(totals["transfer"][0]),
        float(totals["rtt"][0]),
        bool(totals["feasible"][0]),
    )


def evaluate_many(cg: CostGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Price many placements at once. ``x``: (k, n) array of tier indices (0 device, 1 server).

    A tensor crosses up when it is produced on the device (or is an input) and read on the
    server; it crosses down when produced on the server and read on the device or is a graph
    output. It is sent once however many consumers it has. Each direction used pays the RTT.
    Feasible: data only flows forward (no device node reads a server tensor), and tied nodes
    (an activation fused into its Conv) share a tier.
    """
    x = x.astype(bool)
    k = x.shape[0]
    lat = np.array([n.latency_s for n in cg.nodes], dtype=float).reshape(len(cg.nodes), len(cg.tiers))
    on_server = x.astype(float)
    compute = [(1.0 - on_server) @ lat[:, 0], on_server @ lat[:, 1]]
    transfer = np.zeros(k)
    any_up = np.zeros(k, dtype=bool)
    any_down = np.zeros(k, dtype=bool)
    feasible = np.ones(k, dtype=bool)
    for t in cg.tensors:
        cons = list(t.consumers)
        p_server = x[:, t.producer] if t.producer is not None else np.zeros(k, dtype=bool)
        read_server = x[:, cons].any(axis=1) if cons else np.zeros(k, dtype=bool)
        read_device = (~x[:, cons]).any(axis=1) if cons else np.zeros(k, dtype=bool)
        up = ~p_server & read_server
        down = p_server & (read_device | t.is_output)
        feasible &= ~(p_server & read_device)
        transfer += up * cg.send_s(t, 0, 1) + down * cg.send_s(t, 1, 0)
        any_up |= up
        any_down |= down
    for a, b in cg.tied:
        feasible &= x[:, a] == x[:, b]
    rtt = any_up * cg.link.rtt_s + any_down * cg.link.rtt_s
    total = compute[0] + compute[1] + transfer + rtt
    return {"total": total, "compute": compute, "transfer": transfer, "rtt": rtt, "feasible": feasible}
