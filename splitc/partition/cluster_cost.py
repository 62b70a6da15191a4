"""The price of a cluster plan: the one evaluator the planner (splitc.partition.cluster) and the brute force
(splitc.partition.cluster_brute) share. Pure: a BlockChain and a ClusterSpec in, numbers out.

Execution model (docs: /README.md "Clusters"): every stage's input leaves the hub, its outputs come back to it.
A transfer of b bytes between the hub and device d takes b*8/rate + rtt/2 (nothing for the hub itself); on a LAN all
transfers share one medium, on a star the hub's port sends and receives at once (full duplex), the server tier has a
link of its own. A stage's latency is simulated: the hub sends each device its input in the stage's slot order, each
device computes once its input arrived, outputs return in the order they are ready. Throughput: period = max over
resources (each device's busy seconds per frame, each link direction's busy seconds per frame).
Memory of a slot: the weights of all its parts + the largest activation peak of its parts; the devices of one unit in
a stage are all charged its largest part (tiles and channel shares differ by a halo row or a channel), so which of
several interchangeable devices runs which part never changes a price.
Bytes on a link: every part a device runs is one request (its inputs) and one answer (its outputs) of the worker
protocol, each priced as Link.wire_bytes prices a 2-tier message: payload + the protocol's framing
(splitc.cost.cluster.FRAMING_BYTES, as message_bytes), with segment_header_bytes of TCP/IP headers per mss_bytes.
Boundary codec ([network] boundary = "int8"): every transfer between the hub and another device carries the 2-tier
planner's int8 estimate, raw/4 + 5 bytes a tensor (uint8 values + scale + zero point, before zstd), and costs
coding time at the profiles' [codec] cluster_encode/decode_bytes_per_s (the cluster codec's own rates; a profile
without them: encode/decode_bytes_per_s), of raw bytes, slowed by cpu_share: the hub encodes a part's input
before sending it and decodes its outputs after they arrive, on one CPU (resource "hub-codec", serial within a stage,
summed over stages for throughput); the device decodes its input and encodes its outputs inside its part's seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from splitc.cost.cluster import FRAMING_BYTES, SERVER, ClusterSpec
from splitc.cost.targets import DeviceProfile, Link
from splitc.errors import SplitcError
from splitc.partition.blocks import BlockChain, proportional

STRATEGIES = ("single", "data", "spatial", "channel")


@dataclass(frozen=True)
class ClusterStage:
    first: int  # block range [first, last)
    last: int
    strategy: str  # single | data | spatial | channel
    slots: tuple[str, ...]
    shares: tuple[int, ...]  # spatial: output rows per slot; channel: output channels; data: frames per round; single: (1,)


@dataclass(frozen=True)
class ClusterPlan:
    devices: tuple[str, ...]  # the slots this plan may use (its sub-multiset of the cluster)
    stages: tuple[ClusterStage, ...]
    latency_s: float
    period_s: float
    memory_bytes: tuple[tuple[str, int], ...]  # per used slot
    objective: str = "latency"
    exact: bool = True  # False: the memory-constrained search was too large; best plan with each slot in one stage

    @property
    def fps(self) -> float:
        return 1.0 / self.period_s if self.period_s > 0 else float("inf")


@dataclass(frozen=True)
class Unit:
    """Interchangeable devices: slots ``group/first`` .. ``group/first+count-1`` (the hub is a unit of its own)."""

    group: str
    first: int
    count: int
    profile: int  # index into BlockChain.profiles
    speed: float  # cpu_share
    memory: float  # bytes
    send_s: float  # seconds per byte, hub -> device
    recv_s: float  # device -> hub
    delay_s: float  # one way (rtt / 2)
    res_send: str  # the link resource a send / a receive occupies
    res_recv: str
    hub: bool = False
    # int8 boundary (0 with fp32 and on the hub's own slot): seconds per raw byte to decode the input / encode the
    # outputs on this device, and to encode its input / decode its outputs at the hub
    dec_s: float = 0.0
    enc_s: float = 0.0
    hub_enc_s: float = 0.0
    hub_dec_s: float = 0.0
    # the request (hub -> device) and answer (device -> hub) links: the worker protocol's framing and packet headers
    up: Link | None = None
    down: Link | None = None

    def wire(self, raw: int, way: str) -> float:
        """Bytes on this device's link for ``raw`` bytes of tensors sent ``way`` ("up": one request, "down": one
        answer): the payload (int8: raw/4 + 5), the message's framing, and every segment's headers."""
        payload = raw // 4 + 5 if self.hub_enc_s > 0 else raw
        link = self.up if way == "up" else self.down
        return link.wire_bytes(payload) if link is not None else payload

    def slot(self, k: int) -> str:
        return f"{self.group}/{self.first + k}"


def resources(spec: ClusterSpec) -> tuple[str, ...]:
    return ((("lan",) if spec.network == "lan" else ("send", "recv")) + (("wan-up", "wan-down") if spec.server else ())
            + (("hub-codec",) if spec.boundary == "int8" else ()))


def codec_rates(profile: DeviceProfile) -> tuple[float, float]:
    """(encode, decode) bytes/s of the cluster's int8 link codec on ``profile``: its [codec] cluster_* rates, or (a
    profile without them) the 2-tier boundary codec's."""
    return (profile.cluster_encode_bytes_per_s or profile.encode_bytes_per_s,
            profile.cluster_decode_bytes_per_s or profile.decode_bytes_per_s)


def _coding(spec: ClusterSpec, profile, share: float) -> dict:
    """A non-hub unit's int8 coding seconds per raw byte (empty with fp32)."""
    if spec.boundary != "int8":
        return {}
    hub = spec.hub_group
    (enc, dec), (hub_enc, hub_dec) = codec_rates(profile), codec_rates(hub.profile)
    return {"dec_s": 1.0 / (dec * share), "enc_s": 1.0 / (enc * share),
            "hub_enc_s": 1.0 / (hub_enc * hub.cpu_share), "hub_dec_s": 1.0 / (hub_dec * hub.cpu_share)}


def _links(spec: ClusterSpec, base: Link) -> dict:
    """A non-hub unit's request and answer links: ``base`` with the worker protocol's framing per message."""
    request, answer = FRAMING_BYTES[spec.boundary]
    return {"up": replace(base, message_bytes=request), "down": replace(base, message_bytes=answer)}


def units(chain: BlockChain, spec: ClusterSpec, counts: tuple[int, ...]) -> tuple[Unit, ...]:
    """The units of the sub-multiset ``counts`` (devices per spec group, then the server: 0 or 1)."""
    def profile(name: str) -> int:
        if name not in chain.profiles:
            raise SplitcError(f"profile '{name}' has no latencies in the model; annotate it with the cluster's profiles")
        return chain.profiles.index(name)

    hub_rate = spec.hub_group.rate_bps
    out = []
    for g, n in zip(spec.groups, counts):
        rate = spec.rate_bps if spec.network == "lan" else min(hub_rate, g.rate_bps)
        per_byte = 8.0 / rate
        send, recv = ("lan", "lan") if spec.network == "lan" else ("send", "recv")
        common = {"profile": profile(g.profile.name), "speed": g.cpu_share, "memory": float(g.memory_bytes)}
        first = 0
        if g.hub:
            if n >= 1 and g.worker:
                out.append(Unit(g.name, 0, 1, send_s=0.0, recv_s=0.0, delay_s=0.0, res_send="", res_recv="", hub=True, **common))
            first, n = 1, n - 1
        if n > 0:
            out.append(Unit(g.name, first, n, send_s=per_byte, recv_s=per_byte, delay_s=spec.rtt_s / 2, res_send=send,
                            res_recv=recv, **common, **_coding(spec, g.profile, g.cpu_share),
                            **_links(spec, Link(g.name, rate, rate, spec.rtt_s))))
    if spec.server and len(counts) > len(spec.groups) and counts[-1]:
        link = spec.server_link
        out.append(Unit(SERVER, 0, 1, profile(spec.server.name), 1.0, float("inf"), 8.0 / link.up_bps, 8.0 / link.down_bps,
                        link.rtt_s / 2, "wan-up", "wan-down", **_coding(spec, spec.server, 1.0), **_links(spec, link)))
    return tuple(out)


@dataclass(frozen=True)
class Part:
    seconds: float  # compute on its device
    in_bytes: int
    out_bytes: int
    frac: float  # share of the frames it sees (data parallel), else 1
    share: int


@dataclass(frozen=True)
class StageCost:
    parts: tuple[Part, ...]
    latency_s: float
    busy_s: float  # the busiest device's seconds per frame
    links: tuple[float, ...]  # busy seconds per frame of each resource (order of resources())
    memory: tuple[tuple[int, int], ...]  # per part: (weight bytes, activation peak), the unit's largest


def allowed(chain: BlockChain, first: int, last: int, strategy: str, k: int, objective: str) -> bool:
    if strategy == "single":
        return k == 1
    if k < 2:
        return False
    if strategy == "data":
        return objective == "throughput"
    if strategy == "spatial":
        return all(b.spatial for b in chain.blocks[first:last])
    return last == first + 1 and chain.blocks[first].channel


def _parts(chain: BlockChain, first: int, last: int, strategy: str, us: list[Unit]):
    """Parts with (weights, peak) each, or None when a device would get nothing to do."""
    blocks = chain.blocks[first:last]
    full = [chain.latency_s(first, last, u.profile) / u.speed for u in us]
    speed = [1.0 / max(s, 1e-12) for s in full]
    w, peak = chain.weight_bytes(first, last), chain.peak_bytes(first, last)
    inb, outb = blocks[0].input_bytes, blocks[-1].output_bytes
    if strategy == "single":
        return [(Part(full[0], inb, outb, 1.0, 1), w, peak)]
    if strategy == "data":
        shares = proportional(10 * len(us), speed)  # frames per round of the weighted round-robin
        if min(shares) == 0:
            return None
        shares = [s // math.gcd(*shares) for s in shares]
        return [(Part(full[k], inb, outb, s / sum(shares), s), w, peak) for k, s in enumerate(shares)]
    layers = chain.layers(first, last)
    if strategy == "spatial":
        rows = proportional(layers[-1].out_h, speed)
        if min(rows) == 0:
            return None
        out, a = [], 0
        for u, r in zip(us, rows):
            t = chain.tile(first, last, a, a + r, u.profile)
            out.append((Part(t.seconds / u.speed, t.in_bytes, t.out_bytes, 1.0, r), w, t.peak_bytes))
            a += r
        return out
    c_total = layers[0].out_channels
    chans = proportional(c_total, speed)
    if min(chans) == 0:
        return None
    out = []
    for u, c in zip(us, chans):
        f = c / c_total
        seconds = sum(layer.scaled_s(u.profile, f) for layer in layers) / u.speed
        ob = -(-outb * c // c_total)
        out.append((Part(seconds, inb, ob, 1.0, c), -(-w * c // c_total),
                    max(layer.in_bytes + -(-layer.out_bytes * c // c_total) for layer in layers)))
    return out


def stage_cost(chain: BlockChain, spec: ClusterSpec, us: tuple[Unit, ...], first: int, last: int, strategy: str,
               devs: tuple[int, ...]) -> StageCost | None:
    """Price blocks [first, last) run with ``strategy`` on devices ``devs`` (unit indices, ascending, one per device)."""
    dev_units = [us[d] for d in devs]
    priced = _parts(chain, first, last, strategy, dev_units)
    if priced is None:
        return None
    # the device's own decoding of its input and encoding of its outputs (int8 boundary) are part of its seconds
    parts = tuple(replace(p, seconds=p.seconds + p.in_bytes * u.dec_s + p.out_bytes * u.enc_s)
                  for u, (p, _, _) in zip(dev_units, priced))
    worst: dict[int, tuple[int, int]] = {}
    for d, (_, w, pk) in zip(devs, priced):
        ow, op = worst.get(d, (0, 0))
        worst[d] = (max(ow, w), max(op, pk))
    names = resources(spec)
    links = [0.0] * len(names)
    for u, p in zip(dev_units, parts):
        if not u.hub:
            links[names.index(u.res_send)] += u.wire(p.in_bytes, "up") * u.send_s * p.frac
            links[names.index(u.res_recv)] += u.wire(p.out_bytes, "down") * u.recv_s * p.frac
            if u.hub_enc_s:
                links[names.index("hub-codec")] += (p.in_bytes * u.hub_enc_s + p.out_bytes * u.hub_dec_s) * p.frac
    if strategy == "data":
        latency = max(p.in_bytes * u.hub_enc_s + u.wire(p.in_bytes, "up") * u.send_s + p.seconds + u.wire(p.out_bytes, "down") * u.recv_s
                      + p.out_bytes * u.hub_dec_s + 2 * u.delay_s for u, p in zip(dev_units, parts))
    else:
        latency = _simulate(dev_units, parts)
    return StageCost(parts, latency, max(p.seconds * p.frac for p in parts), tuple(links),
                     tuple(worst[d] for d in devs))


def _simulate(dev_units: list[Unit], parts: tuple[Part, ...]) -> float:
    free: dict[str, float] = {}
    finish = []
    hub_cpu = 0.0  # the hub's coding (int8 boundary): inputs encoded in slot order, outputs decoded as they arrive
    for u, p in zip(dev_units, parts):
        ready = 0.0
        if not u.hub:
            hub_cpu += p.in_bytes * u.hub_enc_s
            end = max(free.get(u.res_send, 0.0), hub_cpu) + u.wire(p.in_bytes, "up") * u.send_s
            free[u.res_send] = end
            ready = end + u.delay_s
        finish.append(ready + p.seconds)
    done = 0.0
    for k in sorted(range(len(parts)), key=lambda k: (finish[k], k)):
        u, p = dev_units[k], parts[k]
        if u.hub:
            done = max(done, finish[k])
            continue
        end = max(finish[k], free.get(u.res_recv, 0.0)) + u.wire(p.out_bytes, "down") * u.recv_s
        free[u.res_recv] = end
        hub_cpu = max(hub_cpu, end + u.delay_s) + p.out_bytes * u.hub_dec_s
        done = max(done, hub_cpu)
    return done


def slot_units(us: tuple[Unit, ...]) -> dict[str, tuple[int, int]]:
    """slot name -> (unit index, index inside the unit)."""
    return {u.slot(k): (i, k) for i, u in enumerate(us) for k in range(u.count)}


def evaluate(chain: BlockChain, spec: ClusterSpec, counts: tuple[int, ...],
             stages: list[tuple[int, int, str, tuple[str, ...]]], exact: bool = True) -> ClusterPlan | None:
    """The plan of ``stages`` (first, last, strategy, slots) priced; None when it breaks a rule of the objective
    (memory, each slot in one stage and the deadline under throughput, data parallel only under throughput)."""
    us = units(chain, spec, counts)
    where = slot_units(us)
    names = resources(spec)
    latency, busy, links = 0.0, {}, [0.0] * len(names)
    weights: dict[str, int] = {}
    peaks: dict[str, int] = {}
    out = []
    seen: set[str] = set()
    if not stages:
        return None
    for n, (first, last, strategy, slots) in enumerate(stages):
        if first != (stages[n - 1][1] if n else 0) or last <= first or not all(s in where for s in slots) \
                or len(set(slots)) != len(slots) or not allowed(chain, first, last, strategy, len(slots), spec.objective):
            return None
        if spec.objective == "throughput" and seen & set(slots):
            return None
        seen |= set(slots)
        ordered = tuple(sorted(slots, key=lambda s: where[s]))
        sc = stage_cost(chain, spec, us, first, last, strategy, tuple(where[s][0] for s in ordered))
        if sc is None:
            return None
        latency += sc.latency_s
        links = [a + b for a, b in zip(links, sc.links)]
        for s, p, (w, pk) in zip(ordered, sc.parts, sc.memory):
            busy[s] = busy.get(s, 0.0) + p.seconds * p.frac
            weights[s] = weights.get(s, 0) + w
            peaks[s] = max(peaks.get(s, 0), pk)
        out.append(ClusterStage(first, last, strategy, ordered, tuple(p.share for p in sc.parts)))
    if stages[-1][1] != len(chain.blocks):
        return None
    memory = {s: weights[s] + peaks[s] for s in weights}
    if any(memory[s] > us[where[s][0]].memory for s in memory):
        return None
    if spec.objective == "throughput" and spec.deadline_s is not None and latency > spec.deadline_s:
        return None
    period = max(list(busy.values()) + links)
    devices = tuple(u.slot(k) for u in us for k in range(u.count))
    return ClusterPlan(devices, tuple(out), latency, period, tuple(sorted(memory.items(), key=lambda kv: where[kv[0]])),
                       spec.objective, exact)
