"""A cluster of edge devices (``cluster.toml``): device groups, the network between them and the hub, an optional
server tier, the objective. Parsed and validated once; a bad field is named in a one-line error.

    objective = "latency"          # or "throughput"
    deadline_ms = 500              # throughput only: the latency bound of a frame (optional)
    [network]
    kind = "lan"                   # "lan": one shared medium; "star": a port per device on a switch
    rate = "200mbit"               # kbit/mbit/gbit (or kbps/mbps/gbps); per-device `rate` overrides it on a star
    rtt_ms = 1.0
    boundary = "fp32"              # or "int8": tensors crossing a hub<->worker link sent with the int8 boundary codec
    [[device]]
    name = "pi"                    # the group; its slots are pi/0 .. pi/<count-1>
    profile = "rpi4"               # a built-in profile or a profile .toml (relative to this file)
    count = 4
    memory_mb = 1024
    cpu_share = 1.0                # the fraction of the profile's speed this device gets
    hub = true                     # at most one group; its slot 0 is the hub (default: the first group)
    worker = true                  # hub group only: false = the hub coordinates but computes nothing
    [server]                       # optional: a server behind the hub, over a link as --link names it
    profile = "cloud"
    link = "4g"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from splitc.cost.targets import (
    DeviceProfile,
    Link,
    check_number,
    load_target,
    parse_link,
    parse_quantity,
)
from splitc.errors import SplitcError

MAX_DEVICES = 64  # all groups together: plans are made for every sub-multiset of them
MAX_GROUP = 32
SERVER = "server"
BOUNDARIES = ("fp32", "int8")  # the codec of every hub<->worker transfer ([network] boundary)
# The worker protocol's framing (splitc/runtimes/cluster_worker.py send(): u32 frame length, u32 header length, the JSON
# header; the body one splitc wire payload, whose own header names each tensor): bytes a message carries beyond the
# tensors' bytes as the evaluator counts them (raw; int8: raw/4 + 5), one tensor of a 9-character name, measured on the
# real send() and pack() by tests/test_cluster_framing.py. (request {"op":"run","file","tag","id"[,"codec"]}, answer
# {"id","ok"}) per boundary codec; int8 names three wire tensors (values, scale, zero point).
FRAMING_BYTES = {"fp32": (235.0, 184.0), "int8": (414.0, 348.0)}
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"  # a group name: it names slots and files


@dataclass(frozen=True)
class DeviceGroup:
    """``count`` interchangeable devices (same profile, port and memory): slots ``<name>/0 .. <name>/<count-1>``."""

    name: str
    profile: DeviceProfile
    count: int
    memory_bytes: int
    cpu_share: float = 1.0  # latency on this device = profile latency / cpu_share
    rate_bps: float = 100e6  # its port (star) or the shared medium (lan)
    hub: bool = False
    worker: bool = True

    def slots(self) -> tuple[str, ...]:
        return tuple(f"{self.name}/{k}" for k in range(self.count))


@dataclass(frozen=True)
class ClusterSpec:
    groups: tuple[DeviceGroup, ...]
    objective: str = "latency"  # "latency" | "throughput"
    deadline_s: float | None = None  # throughput: a frame's latency bound
    network: str = "lan"  # "lan" | "star"
    rate_bps: float = 100e6
    rtt_s: float = 1e-3
    server: DeviceProfile | None = None  # a server tier behind the hub (slot "server/0", memory unbounded)
    server_link: Link | None = None
    source: str = "cluster.toml"
    boundary: str = "fp32"  # "fp32" (exact) | "int8": every hub<->worker transfer (not the hub's own slot) as int8 + zstd

    @property
    def hub_group(self) -> DeviceGroup:
        return next(g for g in self.groups if g.hub)

    @property
    def hub(self) -> str:
        return f"{self.hub_group.name}/0"

    @property
    def profiles(self) -> tuple[DeviceProfile, ...]:
        """The distinct profiles the cluster uses (annotate the model with these as targets)."""
        seen: dict[str, DeviceProfile] = {}
        for p in [g.profile for g in self.groups] + ([self.server] if self.server else []):
            seen.setdefault(p.name, p)
        return tuple(seen.values())

    def slots(self) -> tuple[str, ...]:
        return tuple(s for g in self.groups for s in g.slots()) + ((f"{SERVER}/0",) if self.server else ())


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([kmg]?)(bit|bps)\s*", re.IGNORECASE)


def parse_rate(text, where: str) -> float:
    """``200mbit``, ``500kbit``, ``1gbit`` (or ``...bps``) -> bits per second."""
    m = _RATE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SplitcError(f"{where}: bad rate {text!r}; write a number and a unit, e.g. \"200mbit\" or \"500kbit\"")
    return float(parse_quantity(f"{m.group(1)}{m.group(2)}bps", "rate", where))


def _check_keys(table, known: set[str], where: str) -> dict:
    if not isinstance(table, dict):
        raise SplitcError(f"{where}: must be a table")
    unknown = sorted(set(table) - known)
    if unknown:
        raise SplitcError(f"{where}: unknown key '{unknown[0]}'; known: {', '.join(sorted(known))}")
    return table


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _get(table: dict, key: str, kind, where: str, default=None):
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SplitcError(f"{where}: field '{key}' must be {_KINDS[kind]}, got {value!r}")
    return value


def _profile(spec: str, base: Path, where: str) -> DeviceProfile:
    if spec.endswith(".toml") or "/" in spec:
        path = Path(spec) if Path(spec).is_absolute() else base / spec
        if not path.is_file():
            raise SplitcError(f"{where}: field 'profile': no profile file {spec!r} (paths are relative to the cluster file)")
        spec = str(path)
    try:
        return load_target(spec)
    except SplitcError as e:
        raise SplitcError(f"{where}: field 'profile': {e}") from None


def _group(t: dict, i: int, base: Path, net: dict, where: str) -> DeviceGroup:
    at = f"{where} [[device]] #{i + 1}"
    if isinstance(t, dict) and isinstance(t.get("name"), str) and re.fullmatch(_NAME, t["name"]):
        at = f"{where} device '{t['name']}'"
    _check_keys(t, {"name", "profile", "count", "memory_mb", "cpu_share", "rate", "hub", "worker"}, at)
    name = _get(t, "name", str, at)
    if name is None:
        raise SplitcError(f"{at}: missing field 'name'")
    if not re.fullmatch(_NAME, name):
        raise SplitcError(f"{at}: field 'name' {name!r}: use 1-32 letters, digits, '_', '-', '.' (it names slots {name}/0...)")
    at = f"{where} device '{name}'"
    profile = _get(t, "profile", str, at)
    if profile is None:
        raise SplitcError(f"{at}: missing field 'profile'")
    count = _get(t, "count", int, at, 1)
    if not 1 <= count <= MAX_GROUP:
        raise SplitcError(f"{at}: field 'count' must be between 1 and {MAX_GROUP}, got {count}")
    memory = _get(t, "memory_mb", float, at)
    if memory is None:
        raise SplitcError(f"{at}: missing field 'memory_mb' (the device's memory for the model, MB)")
    check_number(memory, f"{at}: field 'memory_mb'", 1e-30, 1e9)
    share = _get(t, "cpu_share", float, at, 1.0)
    check_number(share, f"{at}: field 'cpu_share'", 1e-30, 1.0)
    if share < 1e-3:
        raise SplitcError(f"{at}: field 'cpu_share' must be at least 0.001, got {share:g}")
    rate = net["rate_bps"]
    if "rate" in t:
        if net["kind"] != "star":
            raise SplitcError(f"{at}: field 'rate' needs [network] kind = \"star\" (on a lan every device shares one rate)")
        rate = parse_rate(t["rate"], f"{at}: field 'rate'")
    return DeviceGroup(name, _profile(profile, base, at), count, round(memory * 1e6), share, rate,
                       bool(_get(t, "hub", bool, at, False)), bool(_get(t, "worker", bool, at, True)))


def parse_cluster(data: dict, where: str, base: Path = Path(".")) -> ClusterSpec:
    _check_keys(data, {"objective", "deadline_ms", "network", "device", "server"}, where)
    objective = _get(data, "objective", str, where, "latency")
    if objective not in ("latency", "throughput"):
        raise SplitcError(f"{where}: field 'objective' must be \"latency\" or \"throughput\", got {objective!r}")
    deadline = _get(data, "deadline_ms", float, where)
    if deadline is not None:
        check_number(deadline, f"{where}: field 'deadline_ms'", 1e-30, 1e9)
        if objective != "throughput":
            raise SplitcError(f"{where}: field 'deadline_ms' bounds a frame's latency under objective = \"throughput\"; remove it")
    net = _check_keys(data.get("network", {}), {"kind", "rate", "rtt_ms", "boundary"}, f"{where} [network]")
    kind = _get(net, "kind", str, f"{where} [network]", "lan")
    if kind not in ("lan", "star"):
        raise SplitcError(f"{where} [network]: field 'kind' must be \"lan\" or \"star\", got {kind!r}")
    rate = parse_rate(net.get("rate", "100mbit"), f"{where} [network]: field 'rate'")
    rtt = _get(net, "rtt_ms", float, f"{where} [network]", 1.0)
    boundary = _get(net, "boundary", str, f"{where} [network]", "fp32")
    if boundary not in BOUNDARIES:
        raise SplitcError(f"{where} [network]: field 'boundary' must be \"fp32\" (exact) or \"int8\" (per-frame range + zstd), got {boundary!r}")
    check_number(rtt, f"{where} [network]: field 'rtt_ms'", 0.0, 1e6)
    devices = data.get("device")
    if not devices:
        raise SplitcError(f"{where}: no device; add a [[device]] table (name, profile, count, memory_mb)")
    if not isinstance(devices, list):
        raise SplitcError(f"{where}: field 'device' must be a list of [[device]] tables")
    groups = [_group(t, i, base, {"kind": kind, "rate_bps": rate}, where) for i, t in enumerate(devices)]
    names = [g.name for g in groups]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SplitcError(f"{where}: two [[device]] groups are named '{dup}'; give each group a name of its own")
    hubs = [g.name for g in groups if g.hub]
    if len(hubs) > 1:
        raise SplitcError(f"{where}: field 'hub': two hubs ('{hubs[0]}' and '{hubs[1]}'); set hub = true on one group only")
    if not hubs:
        groups[0] = replace(groups[0], hub=True)
    off = next((g.name for g in groups if not g.worker and not g.hub), None)
    if off:
        raise SplitcError(f"{where} device '{off}': field 'worker' = false is for the hub group only")
    if sum(g.count for g in groups) > MAX_DEVICES:
        raise SplitcError(f"{where}: {sum(g.count for g in groups)} devices; at most {MAX_DEVICES} (field 'count')")
    hub = next(g for g in groups if g.hub)
    if not hub.worker and hub.count == 1 and len(groups) == 1 and "server" not in data:
        raise SplitcError(f"{where} device '{hub.name}': field 'worker' = false leaves no device to compute")
    server = link = None
    if "server" in data:
        st = _check_keys(data["server"], {"profile", "link"}, f"{where} [server]")
        if SERVER in names:
            raise SplitcError(f"{where}: a [[device]] group is named '{SERVER}', which names the [server] tier; rename it")
        if not isinstance(st.get("profile"), str) or not isinstance(st.get("link"), str):
            raise SplitcError(f"{where} [server]: fields 'profile' and 'link' are needed (strings: a profile, a link as --link)")
        server = _profile(st["profile"], base, f"{where} [server]")
        try:
            link = parse_link(st["link"])
        except SplitcError as e:
            raise SplitcError(f"{where} [server]: field 'link': {e}") from None
    return ClusterSpec(tuple(groups), objective, deadline / 1e3 if deadline is not None else None, kind, rate, rtt / 1e3,
                       server, link, where, boundary)


def load_cluster(path: str | Path) -> ClusterSpec:
    path = Path(path)
    if not path.is_file():
        raise SplitcError(f"--cluster '{path}': no such file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SplitcError(f"{path}: not valid TOML ({e})") from None
    return parse_cluster(data, str(path), path.parent)
