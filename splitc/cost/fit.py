"""Fit per-op-class latency models to measured kernels, and write them as a device profile.

The data are the groups of :mod:`splitc.tools.profiler`: a set of ONNX nodes and the measured seconds of the
onnxruntime kernels that compute exactly them. Each costed node (not replicable, not fused into a Conv/Gemm
by splitc's convention) contributes, for its op class ``c``::

    overhead_s[c] + s_per_flop[c] * FLOPs + s_per_byte[c] * bytes moved

(for dense Conv with a 1x1 kernel ``s_per_flop_1x1`` replaces ``s_per_flop`` when the data holds enough
convolutions of both kinds to tell them apart). A group's prediction is the sum over its nodes, so a fused
group is fitted as a unit. All classes are fitted together by non-negative least squares, each group weighted
by 1/sqrt(seconds) (between absolute error, which only sees the big kernels, and relative error, which only
sees the many small ones). A class with few distinct samples cannot pin all three coefficients, so every
class is pulled gently (ridge) toward a pooled model fitted to all groups at once; where a class has data
the data wins.

Classes with fewer than ``MIN_SAMPLES`` groups get no ``[fit.<class>]`` table: they fall back to the
profile's analytical fields, which are themselves set from the fit (pooled overhead and bandwidth; the
compute rate of the closest fitted class).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from splitc.cost.targets import OP_CLASSES, ClassFit, DeviceProfile

MIN_SAMPLES = 3  # groups a class needs for its own [fit.<class>] table
MIN_KERNEL_SPLIT = 4  # dense convs of each kind (1x1 and k x k) needed to fit their FLOP rates apart
RIDGE = 0.3  # strength of the pull toward the pooled model, in pseudo-observations per coefficient

# the fitted class whose FLOP rate stands in for a class without data (analytical fallback)
_RATE_FROM = {"matmul": ("conv",), "depthwise": ("conv",), "conv": ("matmul",)}


@dataclass(frozen=True)
class NodeFeatures:
    """What the latency of one costed node is predicted from."""

    op_class: str
    flops: float
    bytes: float
    kernel: int = 0  # spatial kernel elements of a Conv (k*k; 1 for 1x1), 0 for other ops


def conv_kernel(node) -> int:
    """Spatial kernel elements of a Conv-like node (9 for 3x3), 0 for other ops or an unknown weight shape."""
    from splitc.ir import metadata as ann

    if node.op_type not in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        return 0
    idx = 3 if node.op_type == "QLinearConv" else 1
    w = node.inputs[idx] if len(node.inputs) > idx else None
    info = w.meta.get(ann.TENSOR) if w is not None else None
    if info is None or len(info.shape) <= 2:
        return 0
    return math.prod(info.shape[2:])


def node_features(node) -> NodeFeatures | None:
    """The features of an annotated node; None for nodes that cost nothing (replicable, fused into a kernel)."""
    from splitc.ir import metadata as ann

    cost = node.meta.get(ann.COST)
    if not isinstance(cost, ann.NodeCost) or cost.rule == "replicable" or cost.rule.startswith("fused_into:"):
        return None
    return NodeFeatures(cost.op_class, float(cost.flops), float(cost.bytes_moved), conv_kernel(node))


def predict(profile: DeviceProfile, f: NodeFeatures) -> float:
    return profile.latency(f.flops, f.bytes, f.op_class, f.kernel)


# --------------------------------------------------------------------------------------------- NNLS


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method)."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    tol = 1e-12 * max(1.0, float(np.abs(a).max(initial=0.0)) * float(np.abs(b).max(initial=0.0))) * max(m, n)
    for _ in range(max_iter or 5 * n + 10):
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            bad = passive & (z <= 0)
            alpha = float(np.min(x[bad] / (x[bad] - z[bad])))
            x = x + alpha * (z - x)
            passive &= x > 0
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


# --------------------------------------------------------------------------------------------- fitting

_COEFS = ("overhead_s", "s_per_flop", "s_per_byte", "s_per_flop_1x1")


def _vector(f: NodeFeatures, split_conv: bool) -> dict[str, float]:
    v = {"overhead_s": 1.0, "s_per_byte": f.bytes}
    if split_conv and f.op_class == "conv" and f.kernel == 1:
        v["s_per_flop_1x1"] = f.flops
    else:
        v["s_per_flop"] = f.flops
    return v


@dataclass
class FitResult:
    fits: dict[str, ClassFit]
    pooled: ClassFit  # one model for every class: the prior, and the analytical fallback's numbers
    samples: dict[str, int]  # groups per class
    split_conv: bool
    dropped_s: float = 0.0  # measured seconds in groups with no costed node (nothing to fit them to)
    notes: list[str] = field(default_factory=list)

    def latency(self, f: NodeFeatures) -> float:
        model = self.fits.get(f.op_class, self.pooled)
        return model.latency(f.flops, f.bytes, f.kernel)


def _solve(rows, cols, weights, prior_rows=()):
    index = {c: i for i, c in enumerate(cols)}
    a = np.zeros((len(rows) + len(prior_rows), len(cols)))
    b = np.zeros(len(rows) + len(prior_rows))
    for r, ((t, feats), w) in enumerate(zip(rows, weights)):
        for key, value in feats.items():
            a[r, index[key]] += value * w
        b[r] = t * w
    for r, (key, coef, target) in enumerate(prior_rows, start=len(rows)):
        a[r, index[key]] = coef
        b[r] = target
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    x = nnls(a / scale, b) / scale
    return dict(zip(cols, x))


def fit_groups(rows: list[tuple[float, list[NodeFeatures]]], ridge: float = RIDGE) -> FitResult:
    """Fit per-class models to (measured seconds, features of the group's costed nodes) rows."""
    dropped = sum(t for t, fs in rows if not fs)
    rows = [(t, fs) for t, fs in rows if fs and t > 0]
    if not rows:
        raise ValueError("no measured kernel covers a costed node: nothing to fit")
    kinds = Counter("1x1" if f.kernel == 1 else "kxk" for _, fs in rows for f in fs if f.op_class == "conv")
    split_conv = kinds["1x1"] >= MIN_KERNEL_SPLIT and kinds["kxk"] >= MIN_KERNEL_SPLIT
    samples = Counter(c for _, fs in rows for c in {f.op_class for f in fs})
    fitted = [c for c in OP_CLASSES if samples[c] >= MIN_SAMPLES]
    weights = [1.0 / math.sqrt(t) for t, _ in rows]

    # the pooled model: every node of every class shares one set of coefficients
    pooled_rows = []
    for t, fs in rows:
        acc: dict[str, float] = {}
        for f in fs:
            for k, v in _vector(f, False).items():
                acc[k] = acc.get(k, 0.0) + v
        pooled_rows.append((t, acc))
    p = _solve(pooled_rows, ["overhead_s", "s_per_flop", "s_per_byte"], weights)
    pooled = ClassFit(p["overhead_s"], p["s_per_flop"], p["s_per_byte"], None, len(rows))

    # per class, jointly; nodes of classes without a table are predicted by the pooled model and subtracted
    class_rows, cols = [], set()
    for t, fs in rows:
        acc = {}
        rest = 0.0
        for f in fs:
            if f.op_class not in fitted:
                rest += pooled.latency(f.flops, f.bytes, f.kernel)
                continue
            for k, v in _vector(f, split_conv).items():
                acc[(f.op_class, k)] = acc.get((f.op_class, k), 0.0) + v
                cols.add((f.op_class, k))
        class_rows.append((t - rest, acc))
    keep = [i for i, (_, acc) in enumerate(class_rows) if acc]
    class_rows = [class_rows[i] for i in keep]
    class_weights = [weights[i] for i in keep]
    cols = sorted(cols)
    prior_rows = []
    # a pseudo-observation per coefficient: moving it from the pooled value by d changes a typical node of the
    # class by d * (typical feature), weighed like a measured group of that node's typical time
    typical_t = {c: statistics.median(max(pooled.latency(f.flops, f.bytes, f.kernel), 1e-7)
                                      for _, fs in rows for f in fs if f.op_class == c) for c in fitted}
    for cls, key in cols:
        feats = [_vector(f, split_conv).get(key) for _, fs in rows for f in fs if f.op_class == cls]
        typical = statistics.median(v for v in feats if v is not None) if any(v is not None for v in feats) else 0.0
        prior_value = p["s_per_flop"] if key == "s_per_flop_1x1" else p[key]
        coef = math.sqrt(ridge) * typical / math.sqrt(typical_t[cls])
        if coef > 0:
            prior_rows.append(((cls, key), coef, coef * prior_value))
    x = _solve(class_rows, cols, class_weights, prior_rows) if class_rows else {}
    fits = {}
    for cls in fitted:
        get = lambda k: float(x.get((cls, k), 0.0))  # noqa: E731
        fits[cls] = ClassFit(get("overhead_s"), get("s_per_flop"), get("s_per_byte"),
                             get("s_per_flop_1x1") if split_conv and cls == "conv" else None, samples[cls])
    notes = []
    missing = [c for c in OP_CLASSES if 0 < samples[c] < MIN_SAMPLES]
    if missing:
        notes.append(f"too few samples for their own fit (pooled/analytical fallback): {', '.join(missing)}")
    return FitResult(fits, pooled, dict(samples), split_conv, dropped, notes)


# --------------------------------------------------------------------------------------------- the profile


def analytical_fields(result: FitResult) -> tuple[dict[str, float], float, float]:
    """(FLOP/s per class, memory bytes/s, per-op overhead) for the analytical fallback, from the fit."""
    pooled = result.pooled

    def rate_of(model: ClassFit | None) -> float | None:
        if model is None or model.s_per_flop <= 0:
            return None
        return 1.0 / model.s_per_flop

    pooled_rate = rate_of(pooled) or 1e12
    rates = {}
    for cls in OP_CLASSES:
        rate = rate_of(result.fits.get(cls))
        for other in _RATE_FROM.get(cls, ()):
            rate = rate or rate_of(result.fits.get(other))
        rates[cls] = rate or pooled_rate
    memory = 1.0 / pooled.s_per_byte if pooled.s_per_byte > 0 else 1e12
    return rates, memory, pooled.overhead_s


def build_profile(name: str, result: FitResult, *, description: str = "", sources: tuple[str, ...] = (),
                  encode_bytes_per_s: float = 1e9, decode_bytes_per_s: float = 1e9,
                  measured: dict | None = None, cluster_encode_bytes_per_s: float | None = None,
                  cluster_decode_bytes_per_s: float | None = None) -> DeviceProfile:
    rates, memory, overhead = analytical_fields(result)
    return DeviceProfile(
        name=name, description=description, sources=tuple(sources),
        flops_per_s=tuple((c, float(rates[c])) for c in OP_CLASSES),
        memory_bytes_per_s=float(memory), op_overhead_s=float(overhead),
        encode_bytes_per_s=float(encode_bytes_per_s), decode_bytes_per_s=float(decode_bytes_per_s),
        fits=tuple((c, result.fits[c]) for c in OP_CLASSES if c in result.fits),
        measured=measured,
        cluster_encode_bytes_per_s=cluster_encode_bytes_per_s, cluster_decode_bytes_per_s=cluster_decode_bytes_per_s,
    )


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0:
            return "0.0"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def profile_to_toml(profile: DeviceProfile, header: str = "") -> str:
    """The profile as a TOML file that :func:`splitc.cost.targets.parse_profile` reads back to the same profile."""
    out = []
    for line in header.splitlines():
        out.append(f"# {line}".rstrip())
    out.append(f"name = {_toml_value(profile.name)}")
    out.append(f"description = {_toml_value(profile.description)}")
    out.append("sources = [")
    out.extend(f"  {_toml_value(s)}," for s in profile.sources)
    out.append("]")
    out.append("")
    out.append("# Analytical fallback for op classes without a [fit.<class>] table:")
    out.append("# latency = op_overhead_s + max(FLOPs / rate, bytes / memory_bytes_per_s), fitted to the same measurements.")
    out.append("[compute]")
    for cls, rate in profile.flops_per_s:
        out.append(f"{cls} = {_toml_value(rate)}")
    out.append(f"memory_bytes_per_s = {_toml_value(profile.memory_bytes_per_s)}")
    out.append(f"op_overhead_s = {_toml_value(profile.op_overhead_s)}")
    out.append("")
    out.append("[codec]")
    out.append(f"encode_bytes_per_s = {_toml_value(profile.encode_bytes_per_s)}")
    out.append(f"decode_bytes_per_s = {_toml_value(profile.decode_bytes_per_s)}")
    for key in ("cluster_encode_bytes_per_s", "cluster_decode_bytes_per_s"):  # a cluster plan's int8 link codec
        if getattr(profile, key) is not None:
            out.append(f"{key} = {_toml_value(getattr(profile, key))}")
    if profile.image_px_per_s:  # input-image codecs, pixels/s (splitc/tools/profiler.py measure_image_codecs)
        out.append("")
        out.append("[image]")
        out.extend(f"{key}_px_per_s = {_toml_value(rate)}" for key, rate in profile.image_px_per_s)
    if profile.busy_power_w or profile.idle_power_w:
        out.append("")
        out.append("[power]")
        out.append(f"busy_w = {_toml_value(profile.busy_power_w)}")
        out.append(f"idle_w = {_toml_value(profile.idle_power_w)}")
    if profile.fits:
        out.append("")
        out.append("# Fitted per-kernel models: latency = overhead_s + s_per_flop * FLOPs + s_per_byte * bytes moved")
        out.append("# (dense Conv 1x1: s_per_flop_1x1 instead of s_per_flop, when present). samples: measured kernels.")
    for cls, f in profile.fits:
        out.append(f"[fit.{cls}]")
        out.append(f"overhead_s = {_toml_value(f.overhead_s)}")
        out.append(f"s_per_flop = {_toml_value(f.s_per_flop)}")
        if f.s_per_flop_1x1 is not None:
            out.append(f"s_per_flop_1x1 = {_toml_value(f.s_per_flop_1x1)}")
        out.append(f"s_per_byte = {_toml_value(f.s_per_byte)}")
        out.append(f"samples = {f.samples}")
    if profile.measured:
        out.append("")
        out.append("# How it was measured (informational).")
        out.extend(_toml_table("measured", profile.measured))
    return "\n".join(out) + "\n"


def _toml_table(name: str, table: dict) -> list[str]:
    lines = [f"[{name}]"]
    subs = []
    for k, v in table.items():
        if isinstance(v, dict):
            subs.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in subs:
        lines.extend(_toml_table(f"{name}.{_toml_key(k)}", v))
    return lines


def _toml_key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)
