"""Device profiles and network links: the numbers the cost model runs on.

Built-in profiles are data files in ``splitc/profiles/*.toml`` that state their sources.
A profile is validated on load; a bad field is named in a one-line error.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
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
class ClassFit:
    """A fitted per-kernel latency model for one op class (a ``[fit.<class>]`` table of a profile).

    latency = overhead_s + s_per_flop * FLOPs + s_per_byte * bytes moved; for a Conv with a 1x1 kernel,
    ``s_per_flop_1x1`` replaces ``s_per_flop`` when the profile fitted the two kernel sizes apart.
    """

    overhead_s: float = 0.0
    s_per_flop: float = 0.0
    s_per_byte: float = 0.0
    s_per_flop_1x1: float | None = None
    samples: int = 0  # measured kernels (fused groups) it was fitted on

    FIELDS = ("overhead_s", "s_per_flop", "s_per_byte", "s_per_flop_1x1", "samples")

    def latency(self, flops: float, bytes_moved: float, kernel: int = 0) -> float:
        per_flop = self.s_per_flop_1x1 if kernel == 1 and self.s_per_flop_1x1 is not None else self.s_per_flop
        return self.overhead_s + flops * per_flop + bytes_moved * self.s_per_byte


@dataclass(frozen=True)
class DeviceProfile:
    """A device model. Analytical: latency = overhead + max(flops / rate, bytes / bandwidth). A profile
    measured by ``splitc profile`` adds fitted per-class models (``fits``); a class without one falls back
    to the analytical fields."""

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
    fits: tuple[tuple[str, ClassFit], ...] = ()  # op class -> fitted model (measured profiles)
    measured: dict | None = field(default=None, compare=False, hash=False)  # the [measured] table, as read
    # [image]: input-image codec speeds, pixels per second: "jpeg_encode", "jpeg_decode", "png_encode", ...
    image_px_per_s: tuple[tuple[str, float], ...] = ()
    # [codec] cluster_*: a cluster plan's int8 link codec (splitc/runtimes/cluster_codec.py, numpy + zstd on a dense
    # frame), of raw bytes; None (an older profile): the cluster planner uses encode/decode_bytes_per_s
    cluster_encode_bytes_per_s: float | None = None
    cluster_decode_bytes_per_s: float | None = None

    def image_rate(self, kind: str, way: str) -> float | None:
        """Pixels/s of the ``kind`` (jpeg, png, webp) image coder, ``way`` encode or decode; None if not in the profile."""
        return dict(self.image_px_per_s).get(f"{kind}_{way}")

    def rate(self, op_class: str) -> float:
        return dict(self.flops_per_s)[op_class]

    def fit(self, op_class: str) -> ClassFit | None:
        return dict(self.fits).get(op_class)

    def latency(self, flops: float, bytes_moved: float, op_class: str, kernel: int = 0) -> float:
        """Seconds for one node; ``kernel`` is a Conv's spatial kernel size in elements (1 for 1x1), else 0."""
        fitted = self.fit(op_class)
        if fitted is not None:
            return fitted.latency(flops, bytes_moved, kernel)
        return self.op_overhead_s + max(flops / self.rate(op_class), bytes_moved / self.memory_bytes_per_s)


@dataclass(frozen=True)
class RadioModel:
    """Linear radio power while transferring: P = alpha x throughput + beta (JointDNN's model)."""

    alpha_up_w_per_mbps: float
    alpha_down_w_per_mbps: float
    beta_w: float
    source: str = ""

    def power_w(self, bps: float, direction: str) -> float:
        alpha = self.alpha_up_w_per_mbps if direction == "up" else self.alpha_down_w_per_mbps
        return alpha * bps / 1e6 + self.beta_w


# What a real device sends beyond the payload, measured on the emulated link (benchmarks/serve_latency.py wire, the veth
# pair's byte and packet counters with `splitc serve` behind tc tbf; bottlenet payloads of 4.8 KB and 16.6 KB up, 20
# frames each): every packet carries 66 B of headers (Ethernet 14 + IPv4 20 + TCP with timestamps 32: the slope of bytes
# over packets between the two payloads, 65.6 B); the rest is a constant ~475 B a message: the HTTP request line and
# headers and the OIP JSON header of the binary data extension (~367 B), the acknowledgements of the answer and the
# last, partly filled segment. (payload + 475) x (1 + 66/1448) gives 5497 and 17835 B, as measured.
MESSAGE_BYTES = 475.0
SEGMENT_HEADER_BYTES = 66.0
MSS_BYTES = 1448.0  # TCP payload per segment: Ethernet MTU 1500 - IPv4 20 - TCP 32 (with timestamps)


@dataclass(frozen=True)
class Link:
    """A network link between two adjacent tiers. Rates in bits per second.

    What crosses it is priced as it goes on the wire: each message (one request up, one answer down per direction
    used in a frame) adds ``message_bytes`` of framing, and every ``mss_bytes`` of it carries ``segment_header_bytes``
    of packet headers."""

    name: str
    up_bps: float
    down_bps: float
    rtt_s: float
    source: str = ""
    radio: RadioModel | None = None
    message_bytes: float = MESSAGE_BYTES
    segment_header_bytes: float = SEGMENT_HEADER_BYTES
    mss_bytes: float = MSS_BYTES

    def wire_bytes(self, payload, messages: float = 1):
        """Bytes on the wire for ``payload`` bytes sent in ``messages`` messages, headers of every segment included."""
        return (payload + messages * self.message_bytes) * (1.0 + self.segment_header_bytes / self.mss_bytes)

    def transfer_s(self, nbytes, direction: str, messages: float = 1):
        """Seconds on the wire for ``nbytes`` of payload in ``messages`` messages (0: a part of a message whose
        framing is priced once, by ``message_s``)."""
        rate = self.up_bps if direction == "up" else self.down_bps
        return self.wire_bytes(nbytes, messages) * 8.0 / rate

    def message_s(self, direction: str) -> float:
        """Seconds the framing of one message takes on the wire (paid once per direction used in a frame)."""
        return self.transfer_s(0.0, direction)

    def scaled(self, up_bps: float) -> "Link":
        """The same link at another uplink rate, the downlink scaled in proportion."""
        from dataclasses import replace

        return replace(self, name=f"{self.name}@{up_bps / 1e6:g}Mbps", up_bps=up_bps, down_bps=self.down_bps * up_bps / self.up_bps)


def _profile_dir():
    return resources.files("splitc") / "profiles"


def builtin_target_names() -> list[str]:
    return sorted(p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".toml") and p.name != "links.toml")


MAX_NUMBER = 1e18  # above any rate, size, power or time a profile or link states; beyond it sums stop being exact
TINY = 1e-30  # below any non-zero cost coefficient; denormals (below 2.2e-308) would overflow what they divide


def check_number(value: float, what: str, lo: float = 0.0, hi: float = MAX_NUMBER) -> float:
    """``value`` if it is finite, in [lo, hi] and (if not zero) not vanishingly small; else a one-line error."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise SplitcError(f"{what} must be a finite number, got {value!r}")
    if value < 0 <= lo:
        raise SplitcError(f"{what} must not be negative, got {value!r}")
    if value <= 0 < lo:
        raise SplitcError(f"{what} must be positive, got {value!r}")
    if not lo <= value <= hi:
        raise SplitcError(f"{what} must be between {lo:g} and {hi:g}, got {value:g}" if isinstance(value, float)
                          else f"{what} must be between {lo:g} and {hi:g}, got {value}")
    if value != 0 and abs(value) < TINY:
        raise SplitcError(f"{what} is vanishingly small ({value:g}); the smallest meaningful non-zero value is {TINY:g}")
    return value


def _need(table: dict, key: str, where: str, kind=(int, float), lo: float = 0.0, hi: float = MAX_NUMBER):
    if key not in table:
        raise SplitcError(f"{where}: missing field '{key}'")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SplitcError(f"{where}: field '{key}' must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
    if isinstance(value, (int, float)):
        check_number(value, f"{where}: field '{key}'", lo, hi)
    return value


def parse_profile(data: dict, where: str) -> DeviceProfile:
    known = {"name", "description", "sources", "compute", "codec", "power", "fit", "measured", "image"}
    unknown_tables = set(data) - known
    if unknown_tables:
        raise SplitcError(f"{where}: unknown field(s) {sorted(unknown_tables)}; known: {sorted(known)}")
    if not isinstance(data.get("name"), str) or not data.get("name"):
        raise SplitcError(f"{where}: field 'name' must be a non-empty string" if "name" in data else f"{where}: missing field 'name'")
    if not re.fullmatch(r"[^/\\\x00-\x1f\x7f]{1,64}", data["name"]) or data["name"].strip(".") == "":
        raise SplitcError(f"{where}: field 'name' {data['name']!r} cannot name files (stage<i>_<name>.onnx): use at most 64"
                          " characters without '/', '\\' or control characters, not only dots")
    sources = data.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise SplitcError(f"{where}: field 'sources' must be a list of strings")
    if not isinstance(data.get("description", ""), str):
        raise SplitcError(f"{where}: field 'description' must be a string")
    compute = data.get("compute")
    if not isinstance(compute, dict):
        raise SplitcError(f"{where}: missing table [compute]")
    rates = []
    for cls in OP_CLASSES:
        rate = _need(compute, cls, f"{where} [compute]", lo=1.0)
        if rate <= 0:
            raise SplitcError(f"{where} [compute]: field '{cls}' must be positive")
        rates.append((cls, float(rate)))
    unknown = set(compute) - set(OP_CLASSES) - {"memory_bytes_per_s", "op_overhead_s"}
    if unknown:
        raise SplitcError(f"{where} [compute]: unknown field(s) {sorted(unknown)}; known: {list(OP_CLASSES)}")
    codec = data.get("codec", {})
    power = data.get("power", {})
    for table, value in (("codec", codec), ("power", power)):
        if not isinstance(value, dict):
            raise SplitcError(f"{where}: [{table}] must be a table")
    bw = float(_need(compute, "memory_bytes_per_s", f"{where} [compute]", lo=1.0))
    if bw <= 0:
        raise SplitcError(f"{where} [compute]: field 'memory_bytes_per_s' must be positive")
    for key in ("encode_bytes_per_s", "decode_bytes_per_s"):
        if _need(codec, key, f"{where} [codec]", lo=1.0) <= 0:
            raise SplitcError(f"{where} [codec]: field '{key}' must be positive")
    cluster_keys = ("cluster_encode_bytes_per_s", "cluster_decode_bytes_per_s")
    if set(codec) - {"encode_bytes_per_s", "decode_bytes_per_s", *cluster_keys}:
        raise SplitcError(f"{where} [codec]: unknown field(s) {sorted(set(codec) - {'encode_bytes_per_s', 'decode_bytes_per_s', *cluster_keys})};"
                          f" known: encode_bytes_per_s, decode_bytes_per_s, {', '.join(cluster_keys)}")
    cluster_rates = {key: float(_need(codec, key, f"{where} [codec]", lo=1.0)) for key in cluster_keys if key in codec}
    for key in ("busy_w", "idle_w"):
        if key in power:
            _need(power, key, f"{where} [power]", hi=1e6)
    if not 0 <= float(power.get("idle_w", 0.0)) <= float(power.get("busy_w", 0.0)):
        raise SplitcError(f"{where} [power]: need 0 <= idle_w <= busy_w (got idle_w {power.get('idle_w', 0.0)},"
                          f" busy_w {power.get('busy_w', 0.0)}); a device draws at least its idle power when busy")
    fit_table = data.get("fit", {})
    if not isinstance(fit_table, dict):
        raise SplitcError(f"{where}: [fit] must be a table of [fit.<op class>] tables")
    fits = []
    for cls, table in fit_table.items():
        at = f"{where} [fit.{cls}]"
        if cls not in OP_CLASSES:
            raise SplitcError(f"{at}: unknown op class '{cls}'; known: {list(OP_CLASSES)}")
        if not isinstance(table, dict):
            raise SplitcError(f"{at}: must be a table")
        extra = set(table) - set(ClassFit.FIELDS)
        if extra:
            raise SplitcError(f"{at}: unknown field(s) {sorted(extra)}; known: {list(ClassFit.FIELDS)}")
        values = {key: _need(table, key, at, hi=3600.0) for key in ("overhead_s", "s_per_flop", "s_per_byte")}
        if "s_per_flop_1x1" in table:
            if cls != "conv":
                raise SplitcError(f"{at}: field 's_per_flop_1x1' is only for [fit.conv]")
            values["s_per_flop_1x1"] = _need(table, "s_per_flop_1x1", at, hi=3600.0)
        if "samples" in table:
            values["samples"] = int(_need(table, "samples", at, int))
        fits.append((cls, ClassFit(**{k: (v if k == "samples" else float(v)) for k, v in values.items()})))
    measured = data.get("measured")
    if measured is not None and not isinstance(measured, dict):
        raise SplitcError(f"{where}: [measured] must be a table")
    image = data.get("image", {})
    if not isinstance(image, dict):
        raise SplitcError(f"{where}: [image] must be a table")
    image_keys = {f"{k}_{w}_px_per_s" for k in ("jpeg", "png", "webp") for w in ("encode", "decode")}
    if set(image) - image_keys:
        raise SplitcError(f"{where} [image]: unknown field(s) {sorted(set(image) - image_keys)}; known: {sorted(image_keys)}")
    for key in image:
        if not 0 < _need(image, key, f"{where} [image]") < float("inf"):
            raise SplitcError(f"{where} [image]: field '{key}' must be a positive finite number")
    return DeviceProfile(
        name=data["name"],
        description=str(data.get("description", "")),
        sources=tuple(sources),
        flops_per_s=tuple(rates),
        memory_bytes_per_s=bw,
        op_overhead_s=float(_need(compute, "op_overhead_s", f"{where} [compute]", hi=3600.0)),
        encode_bytes_per_s=float(codec["encode_bytes_per_s"]),
        decode_bytes_per_s=float(codec["decode_bytes_per_s"]),
        busy_power_w=float(power.get("busy_w", 0.0)),
        idle_power_w=float(power.get("idle_w", 0.0)),
        fits=tuple(fits),
        measured=measured,
        image_px_per_s=tuple(sorted((k.removesuffix("_px_per_s"), float(v)) for k, v in image.items())),
        **cluster_rates,
    )


def check_tier_names(profiles) -> None:
    """Tiers name stages, files and plan entries: two with one name (a profile file called 'cloud' beside the built-in
    'cloud') would overwrite each other."""
    seen: dict[str, int] = {}
    for i, p in enumerate(profiles):
        if p.name in seen:
            raise SplitcError(f"--target: tiers {seen[p.name] + 1} and {i + 1} are both named '{p.name}'; give each profile"
                              " a name of its own (the 'name' field of its .toml)")
        seen[p.name] = i


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
    links = {}
    for name, t in data.items():
        radio = None
        if "radio" in t:
            r = t["radio"]
            radio = RadioModel(r["alpha_up_mw_per_mbps"] / 1e3, r["alpha_down_mw_per_mbps"] / 1e3, r["beta_mw"] / 1e3, r.get("source", ""))
        links[name] = Link(name, float(t["up_bps"]), float(t["down_bps"]), float(t["rtt_s"]), str(t.get("source", "")), radio)
    return links


_RATE_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _quantity(text: str, units: dict[str, float], what: str, spec: str, lo: float, hi: float) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        raise SplitcError(f"link '{spec}': cannot read {what} '{text}'; write it like {next(iter(units))} units {sorted(units)}")
    return check_number(float(m.group(1)) * units[unit], f"link '{spec}': {what} '{text}' (in {next(iter(units))})", lo, hi)


_UNITS = {
    "time": ({"s": 1.0, "ms": 1e-3, "us": 1e-6}, "100ms"),
    "energy": ({"j": 1.0, "mj": 1e-3, "uj": 1e-6}, "2J"),
    "bytes": ({"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}, "512MB"),
    "rate": ({"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}, "10Mbps"),
}


# sane ranges of what a user writes, in base units: (lowest non-zero, highest)
LIMITS = {"time": (0.0, 1e6), "energy": (0.0, 1e9), "bytes": (1.0, MAX_NUMBER), "rate": (1.0, 1e15)}
_BASE = {"time": "s", "energy": "J", "bytes": "bytes", "rate": "bits/s"}


def parse_quantity(text: str | None, kind: str, flag: str):
    """``100ms`` -> 0.1 (seconds), ``2J``, ``512MB`` -> bytes, ``10Mbps`` -> bits/s; None stays None."""
    if text is None:
        return None
    units, example = _UNITS[kind]
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        raise SplitcError(f"{flag} '{text}': write a number with a unit ({', '.join(units)}), e.g. {example}")
    value = check_number(float(m.group(1)) * units[unit], f"{flag} '{text}' (in {_BASE[kind]})", 0.0, LIMITS[kind][1])
    if value < LIMITS[kind][0] or value == 0:
        raise SplitcError(f"{flag} '{text}': must be positive" + (f" and at least {LIMITS[kind][0]:g} {_BASE[kind]}"
                                                                   if LIMITS[kind][0] > 0 else ""))
    return int(value) if kind == "bytes" else value


def parse_seconds(value: float | None, flag: str) -> float | None:
    """A number of seconds given as a plain number (``--time-limit 30``): finite, positive, at most LIMITS["time"]."""
    if value is None:
        return None
    check_number(value, f"{flag} {value!r} (seconds)", 0.0, LIMITS["time"][1])
    if value <= 0:
        raise SplitcError(f"{flag} {value:g}: must be a positive number of seconds")
    return float(value)


def parse_range(text: str | None) -> tuple[float, float] | None:
    """``0.5:200Mbps`` -> (0.5e6, 200e6) bits/s (the unit of the upper end applies to both if the lower has none)."""
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    if not sep:
        raise SplitcError(f"--sweep-bandwidth '{text}': write LO:HI with a unit, e.g. 0.5:200Mbps")
    unit = re.sub(r"^[0-9.e+-]+", "", hi.strip())
    lo_v = parse_quantity(lo if re.search(r"[a-zA-Z]$", lo.strip()) else lo + unit, "rate", "--sweep-bandwidth")
    hi_v = parse_quantity(hi, "rate", "--sweep-bandwidth")
    if lo_v >= hi_v:
        raise SplitcError(f"--sweep-bandwidth '{text}': the lower end must be below the upper")
    return lo_v, hi_v


def parse_link(spec: str) -> Link:
    """``4g`` or ``up=10Mbps,down=50Mbps,rtt=40ms[,radio=4g]`` (radio: whose power model to use for energy)."""
    links = builtin_links()
    if spec in links:
        return links[spec]
    if "=" not in spec:
        raise SplitcError(f"unknown link '{spec}'; built-in links: {', '.join(links)}, or up=10Mbps,down=50Mbps,rtt=40ms")
    fields = {}
    for part in spec.split(","):
        key, _, val = part.partition("=")
        fields[key.strip().lower()] = val.strip()
    missing = {"up", "down", "rtt"} - set(fields)
    extra = set(fields) - {"up", "down", "rtt", "radio"}
    if missing or extra:
        raise SplitcError(f"link '{spec}': needs up=, down= and rtt= (and optionally radio=3g|4g|wifi); missing {sorted(missing)}, unknown {sorted(extra)}")
    up = _quantity(fields["up"], _RATE_UNITS, "up", spec, *LIMITS["rate"])
    down = _quantity(fields["down"], _RATE_UNITS, "down", spec, *LIMITS["rate"])
    if up <= 0 or down <= 0:
        raise SplitcError(f"link '{spec}': rates must be positive")
    radio = None
    if "radio" in fields:
        if fields["radio"] not in links:
            raise SplitcError(f"link '{spec}': radio '{fields['radio']}' is not one of {', '.join(links)}")
        radio = links[fields["radio"]].radio
    return Link(spec, up, down, _quantity(fields["rtt"], _TIME_UNITS, "rtt", spec, 0.0, LIMITS["time"][1]), "custom", radio)


def parse_links(spec: str, count: int) -> tuple[Link, ...]:
    """``count`` links for a chain of ``count + 1`` tiers: one spec for all, or one per pair.

    Per pair: ``wifi;4g`` or, for built-in names only, ``wifi,4g``.
    """
    if ";" in spec:
        parts = [p.strip() for p in spec.split(";")]
    elif "=" not in spec and "," in spec:
        parts = [p.strip() for p in spec.split(",")]
    else:
        parts = [spec.strip()]
    if len(parts) == 1:
        parts = parts * count
    if len(parts) != count:
        raise SplitcError(f"--link '{spec}': {count + 1} tiers need {count} link(s) (one per adjacent pair), got {len(parts)}")
    return tuple(parse_link(p) for p in parts)
