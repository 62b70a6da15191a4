"""Device profiles and network links: the numbers the cost model runs on.

Built-in profiles are data files in ``splitc/profiles/*.toml`` that state their sources.
A profile is validated on load; a bad field is named in a one-line error.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from splitc.errors import SplitcError

OP_CLASSES = (
    "conv",  # dense Conv / ConvTranspose
    "depthwise",  # grouped Conv with group > 1
    "matmul",  # MatMul, Gemm, attention products
    "pool",  # pooling windows
    "norm",  # BatchNorm / LayerNorm / InstanceNorm / LRN
    "elementwise",  # arithmetic and activations
    "reduce",  # reductions, softmax
    "resize",  # Resize / Upsample
    "data",  # layout and indexing: Reshape, Transpose, Concat, Slice, Gather ...
    "other",  # ops with no cost rule
)


@dataclass(frozen=True)
class DeviceProfile:
    """An analytical device model: latency = overhead + max(flops / rate, bytes / bandwidth)."""

    name: str
    description: str
    sources: tuple[str, ...]
    flops_per_s: tuple[tuple[str, float], ...]  # op class -> effective FLOP/s
    memory_bytes_per_s: float
    op_overhead_s: float
    encode_bytes_per_s: float  # boundary codec throughput (quantize + entropy code), of raw bytes
    decode_bytes_per_s: float
    busy_power_w: float = 0.0
    idle_power_w: float = 0.0

    def rate(self, op_class: str) -> float:
        return dict(self.flops_per_s)[op_class]

    def latency(self, flops: float, bytes_moved: float, op_class: str) -> float:
        return self.op_overhead_s + max(flops / self.rate(op_class), bytes_moved / self.memory_bytes_per_s)


@dataclass(frozen=True)
class Link:
    """A network link between two adjacent tiers. Rates in bits per second."""

    name: str
    up_bps: float
    down_bps: float
    rtt_s: float
    source: str = ""

    def transfer_s(self, nbytes: float, direction: str) -> float:
        rate = self.up_bps if direction == "up" else self.down_bps
        return nbytes * 8.0 / rate


def _profile_dir():
    return resources.files("splitc") / "profiles"


def builtin_target_names() -> list[str]:
    return sorted(p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".toml") and p.name != "links.toml")


def _need(table: dict, key: str, where: str, kind=(int, float)):
    if key not in table:
        raise SplitcError(f"{where}: missing field '{key}'")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SplitcError(f"{where}: field '{key}' must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
    if isinstance(value, (int, float)) and value < 0:
        raise SplitcError(f"{where}: field '{key}' must not be negative, got {value!r}")
    return value


def parse_profile(data: dict, where: str) -> DeviceProfile:
    compute = data.get("compute")
    if not isinstance(compute, dict):
        raise SplitcError(f"{where}: missing table [compute]")
    rates = []
    for cls in OP_CLASSES:
        rate = _need(compute, cls, f"{where} [compute]")
        if rate <= 0:
            raise SplitcError(f"{where} [compute]: field '{cls}' must be positive")
        rates.append((cls, float(rate)))
    unknown = set(compute) - set(OP_CLASSES) - {"memory_bytes_per_s", "op_overhead_s"}
    if unknown:
        raise SplitcError(f"{where} [compute]: unknown field(s) {sorted(unknown)}; known: {list(OP_CLASSES)}")
    codec = data.get("codec", {})
    power = data.get("power", {})
    bw = float(_need(compute, "memory_bytes_per_s", f"{where} [compute]"))
    if bw <= 0:
        raise SplitcError(f"{where} [compute]: field 'memory_bytes_per_s' must be positive")
    return DeviceProfile(
        name=str(_need(data, "name", where, str)),
        description=str(data.get("description", "")),
        sources=tuple(data.get("sources", ())),
        flops_per_s=tuple(rates),
        memory_bytes_per_s=bw,
        op_overhead_s=float(_need(compute, "op_overhead_s", f"{where} [compute]")),
        encode_bytes_per_s=float(_need(codec, "encode_bytes_per_s", f"{where} [codec]")),
        decode_bytes_per_s=float(_need(codec, "decode_bytes_per_s", f"{where} [codec]")),
        busy_power_w=float(power.get("busy_w", 0.0)),
        idle_power_w=float(power.get("idle_w", 0.0)),
    )


def load_target(spec: str) -> DeviceProfile:
    """A built-in name (``rpi4``) or a path to a profile TOML file."""
    if spec.endswith(".toml") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise SplitcError(f"target profile '{spec}' not found")
        text, where = path.read_text(), str(path)
    else:
        res = _profile_dir() / f"{spec}.toml"
        if not res.is_file():
            raise SplitcError(
                f"unknown target '{spec}'; built-in targets: {', '.join(builtin_target_names())} (or a profile .toml path)"
            )
        text, where = res.read_text(), f"built-in profile {spec}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SplitcError(f"{where}: not valid TOML ({e})") from None
    return parse_profile(data, where)


def builtin_links() -> dict[str, Link]:
    data = tomllib.loads((_profile_dir() / "links.toml").read_text())
    return {
        name: Link(name, float(t["up_bps"]), float(t["down_bps"]), float(t["rtt_s"]), str(t.get("source", "")))
        for name, t in data.items()
    }


_RATE_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _quantity(text: str, units: dict[str, float], what: str, spec: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        raise SplitcError(f"link '{spec}': cannot read {what} '{text}'; write it like {next(iter(units))} units {sorted(units)}")
    return float(m.group(1)) * units[unit]


def parse_link(spec: str) -> Link:
    """``4g`` or ``up=10Mbps,down=50Mbps,rtt=40ms``."""
    links = builtin_links()
    if spec in links:
        return links[spec]
    if "=" not in spec:
        raise SplitcError(f"unknown link '{spec}'; built-in links: {', '.join(links)}, or up=10Mbps,down=50Mbps,rtt=40ms")
    fields = {}
    for part in spec.split(","):
        key, _, val = part.partition("=")
        fields[key.strip().lower()] = val
    missing = {"up", "down", "rtt"} - set(fields)
    extra = set(fields) - {"up", "down", "rtt"}
    if missing or extra:
        raise SplitcError(f"link '{spec}': needs exactly up=, down= and rtt= (missing {sorted(missing)}, unknown {sorted(extra)})")
    up = _quantity(fields["up"], _RATE_UNITS, "up", spec)
    down = _quantity(fields["down"], _RATE_UNITS, "down", spec)
    if up <= 0 or down <= 0:
        raise SplitcError(f"link '{spec}': rates must be positive")
    return Link(spec, up, down, _quantity(fields["rtt"], _TIME_UNITS, "rtt", spec), "custom")
