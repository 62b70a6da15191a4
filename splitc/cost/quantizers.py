"""Boundary codecs: names, calibrated quantization parameters, and their numpy reference arithmetic.

A codec spec (``--boundary``) is one of:

- ``fp32``: tensors cross as they are (lossless);
- ``int8``: per-tensor uint8 with a per-frame range computed in the graph (DynamicQuantizeLinear), no calibration;
- ``int<b>[-channel][-static][-mse|-pct|-minmax][+lz4]`` with b in 8, 4, 2: static affine quantization with
  clip ranges calibrated on data (``-channel``: one scale and zero point per channel, axis 1; default clipping
  ``mse``: the per-(channel) range minimizing the quantization MSE on the calibration values). ``int8-static``
  is the per-tensor static 8-bit codec (plain ``int8`` stays the dynamic one). The graph emits uint8 values in
  [0, 2^b); the runtime codec bit-packs them (b < 8) and entropy-codes them with zstd (or lz4);
- ``pca<k>+<static codec>`` (``k`` components, or ``pca0.25+...`` a fraction of the channels), e.g.
  ``pca8+int8-channel-static``: a training-free Karhunen-Loeve bottleneck for 4-D NCHW tensors. The channel
  covariance of the calibration activations gives a (k, C) orthonormal basis; the head ends in a 1x1 Conv
  (weight basis, bias -basis @ mean) and the static quantizer of the k components, the tail starts with the
  dequantizer and the inverse 1x1 Conv (weight basis^T, bias mean). Other tensors fall back to the codec after ``+``;
- ``auto``: per tensor, the smallest of the candidates (measured on the calibration data) that meets
  ``--accuracy-budget`` when that tensor alone is quantized.

Numpy only: used by the compiler (calibration, selection) and the benchmark; the runtime does not need it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes import accuracy as _accuracy

CLIPS = ("mse", "pct", "minmax")
AUTO_CANDIDATES = ("int2-channel", "int4-channel", "int4", "int8-channel", "int8-static")
_PCA = re.compile(r"^pca(?P<k>[0-9]+|0?\.[0-9]+)\+(?P<rest>int.*)$")
_LEARNED = re.compile(r"^learned(?P<k>[0-9]+)\+(?P<rest>int.*)$")
_SPEC = re.compile(r"^int(?P<bits>8|4|2)(?P<channel>-channel)?(?P<static>-static)?(?:-(?P<clip>mse|pct|minmax|step(?:[0-9]*\.)?[0-9]+))?"
                   r"(?:\+(?P<entropy>zstd|lz4|ans|ctx))?$")
ANS_STEPS = (2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)  # auto's +ans candidates: uniform steps of f x the tensor's std


def auto_candidates() -> tuple[str, ...]:
    """``auto``'s candidates: with the ans coder installed, entropy-coded uniform steps (a ladder of rates; they
    dominate the clipped 2/4-bit zstd codecs) and int8-static as the fallback; without it the zstd ones."""
    from splitc.runtimes import ans

    return tuple(f"int8-step{f:g}+ans" for f in ANS_STEPS) + ("int8-static",) if ans.available() else AUTO_CANDIDATES


@dataclass(frozen=True)
class CodecSpec:
    """A parsed ``--boundary`` value."""

    name: str
    kind: str  # "fp32" | "dynamic" | "static" | "auto"
    bits: int = 8
    per_channel: bool = False
    clip: str = "mse"
    entropy: str = "zstd"
    pca: float | int | None = None  # keep this many components (int) or this fraction of the channels (float < 1)
    learned: int | None = None  # learned<k>: a trained k-channel bottleneck (splitc/cost/bottleneck.py)
    context: bool = False  # +ctx: ans with a significance context for sparse 4-D maps (splitc/runtimes/ans_context.py)

    @property
    def calibrated(self) -> bool:
        return self.kind in ("static", "auto")


def parse_codec(spec: str) -> CodecSpec:
    s = spec.strip()
    if s == "fp32":
        return CodecSpec(s, "fp32", 32)
    if s == "int8":
        return CodecSpec(s, "dynamic", 8)
    if s == "auto":
        return CodecSpec(s, "auto")
    lm = _LEARNED.match(s)
    if lm is not None:
        inner = parse_codec(lm["rest"])
        if inner.kind != "static" or inner.pca is not None or int(lm["k"]) < 1:
            raise SplitcError(f"--boundary '{spec}': learned<k> (k >= 1 channels) needs a static codec after '+',"
                              " e.g. learned8+int8-step0.5+ans")
        return CodecSpec(s, "static", inner.bits, inner.per_channel, inner.clip, inner.entropy, learned=int(lm["k"]),
                         context=inner.context)
    pm = _PCA.match(s)
    if pm is not None:
        inner = parse_codec(pm["rest"])
        if inner.kind != "static":
            raise SplitcError(f"--boundary '{spec}': pca<k> needs a static codec after '+', e.g. pca8+int8-channel-static")
        k = float(pm["k"]) if "." in pm["k"] else int(pm["k"])
        if (isinstance(k, int) and k < 1) or (isinstance(k, float) and not 0 < k <= 1):
            raise SplitcError(f"--boundary '{spec}': pca<k> keeps k >= 1 components or a fraction 0 < f <= 1 of the channels")
        return CodecSpec(s, "static", inner.bits, inner.per_channel, inner.clip, inner.entropy, k, context=inner.context)
    m = _SPEC.match(s)
    if m is None or (m["bits"] == "8" and not (m["channel"] or m["static"] or m["clip"] or m["entropy"])):
        raise SplitcError(f"--boundary '{spec}': choose fp32, int8 (dynamic), auto, or int<8|4|2>[-channel][-static]"
                          f"[-mse|-pct|-minmax|-step<f>][+zstd|+lz4|+ans|+ctx], e.g. int4-channel, int8-static-pct or int8-channel-step0.5+ans")
    if m["clip"] and m["clip"].startswith("step") and not 0 < float(m["clip"][4:]) <= 64:
        raise SplitcError(f"--boundary '{spec}': -step<f> is a step of f x the channel's standard deviation, 0 < f <= 64")
    ctx = m["entropy"] == "ctx"
    return CodecSpec(s, "static", int(m["bits"]), bool(m["channel"]), m["clip"] or "mse", "ans" if ctx else m["entropy"] or "zstd",
                     context=ctx)


@dataclass
class TensorCodec:
    """One tensor's calibrated codec: what the graph emits and what the optimizer assumes."""

    spec: CodecSpec
    scale: np.ndarray  # float32, shape () or (C,)
    zero_point: np.ndarray  # uint8, same shape
    axis: int | None  # 1 for per-channel
    measured_bytes: int | None = None  # mean payload bytes per frame on the calibration data
    error: dict = field(default_factory=dict)  # the budget's metrics with this tensor alone quantized
    basis: np.ndarray | None = None  # PCA: (k, C) float32 orthonormal rows, applied on axis 1 of a 4-D NCHW tensor
    mean: np.ndarray | None = None  # PCA: (C,) float32 channel mean
    explained: float | None = None  # PCA: fraction of the calibration variance the k components keep
    ans: dict | None = None  # +ans: the symbol tables (splitc.runtimes.ans), part of the plan
    encoder: list | None = None  # learned<k>: splitc.cost.bottleneck.Layer list ending the sending part
    decoder: list | None = None  # ... and the one starting the receiving part
    reconstruction_error: float | None = None  # learned<k>: relative MSE on the training activations
    training: str | None = None  # learned<k>: "distillation" (through the tail) or "reconstruction (why)"
    coder_factor: tuple[float, float] = (1.0, 1.0)  # +ctx: (encode, decode) time of its coder / the plain one's, measured

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def name(self) -> str:
        base = self.spec.name
        if (self.spec.pca is not None and self.basis is None) or (self.spec.learned is not None and self.encoder is None):
            base = base.split("+", 1)[1]  # fell back: not a 4-D tensor (or not trained)
        return base if base.endswith(("+zstd", "+lz4", "+ans", "+ctx")) else f"{base}+{self.spec.entropy}"

    def plan_entry(self) -> dict:
        out = {"bits": self.bits, "axis": self.axis, "clip": self.spec.clip,
               "scale": np.asarray(self.scale, np.float32).ravel().tolist(),
               "zero_point": np.asarray(self.zero_point).astype(int).ravel().tolist()}
        if self.basis is not None:  # the basis and mean live in the ONNX parts only
            out["pca"] = {"k": int(self.basis.shape[0]), "channels": int(self.basis.shape[1]),
                          "explained_variance": round(float(self.explained), 6)}
        if self.ans is not None:
            out["ans"] = self.ans
        if self.coder_factor != (1.0, 1.0):  # the context coder's measured cost over the plain one (the plan prices it)
            out["coder_factor"] = [round(float(f), 3) for f in self.coder_factor]
        if self.encoder is not None:  # the layers live in the ONNX parts only
            out["learned"] = {"k": int(self.encoder[-1].weight.shape[0]), "channels": int(self.encoder[0].weight.shape[1]),
                              "reconstruction_error": round(float(self.reconstruction_error), 6),
                              "training": self.training}
        return out

    def wire_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the symbols that cross for a tensor of ``shape`` (PCA: k channels on axis 1)."""
        if shape is not None and len(shape) == 4 and self.encoder is not None:
            return (shape[0], int(self.encoder[-1].weight.shape[0]), *shape[2:])
        if self.basis is None or shape is None or len(shape) != 4:
            return shape if shape is None else tuple(shape)
        return (shape[0], int(self.basis.shape[0]), *shape[2:])

    def broadcast_shape(self, rank: int) -> tuple[int, ...]:
        if self.axis is None:
            return ()
        return tuple(self.scale.size if i == self.axis else 1 for i in range(rank))


# --------------------------------------------------------------------------- calibration arithmetic

def channel_view(x: np.ndarray, per_channel: bool) -> np.ndarray:
    """(groups, values): one row per channel (axis 1) or a single row."""
    x = np.asarray(x, np.float32)
    if per_channel and x.ndim >= 2:
        return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    return x.reshape(1, -1)


def qparams(lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Affine (scale, zero point) for ranges [lo, hi], widened to hold 0 exactly."""
    levels = (1 << bits) - 1
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    scale = np.maximum((hi - lo) / levels, 1e-8)
    zp = np.clip(np.round(-lo / scale), 0, levels)
    return scale.astype(np.float32), zp.astype(np.uint8)


def _fake_quant(v: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int) -> np.ndarray:
    q = np.clip(np.round(v / scale) + zp, 0, (1 << bits) - 1)
    return (q - zp) * scale


def fit_ranges(values: np.ndarray, bits: int, clip: str) -> tuple[np.ndarray, np.ndarray]:
    """Clip ranges per row of ``values`` (groups, n): min/max, 0.01/99.99 percentiles, or the MSE-optimal
    shrink of the min/max range (grid search over 40 fractions)."""
    lo, hi = values.min(axis=1), values.max(axis=1)
    if clip == "minmax":
        return lo, hi
    if clip == "pct":
        q = 0.01 if bits == 8 else (0.1 if bits == 4 else 1.0)
        return np.percentile(values, q, axis=1), np.percentile(values, 100 - q, axis=1)
    best_err = np.full(values.shape[0], np.inf)
    best_lo, best_hi = lo.copy(), hi.copy()
    for frac in np.linspace(1.0, 0.05, 40):
        clo, chi = lo * frac, hi * frac
        scale, zp = qparams(clo, chi, bits)
        err = np.mean((_fake_quant(values, scale[:, None], zp[:, None].astype(np.float32), bits) - values) ** 2, axis=1)
        better = err < best_err
        best_err[better], best_lo[better], best_hi[better] = err[better], clo[better], chi[better]
    return best_lo, best_hi


def pca_k(spec: CodecSpec, channels: int) -> int:
    k = spec.pca
    if isinstance(k, float):
        k = int(round(k * channels))
    return int(min(max(1, k), channels))


def fit_pca(samples: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Karhunen-Loeve basis of axis 1 (channels as features, every other position a sample, centred on the channel
    mean): the (k, C) top eigenvectors of the channel covariance, the (C,) mean, and the explained variance."""
    x = np.concatenate([channel_view(s, True) for s in samples], axis=1).astype(np.float64)  # (C, n)
    mean = x.mean(axis=1)
    xc = x - mean[:, None]
    cov = xc @ xc.T / max(1, xc.shape[1] - 1)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, v = np.maximum(w[order], 0.0), v[:, order]
    basis = v[:, :k].T
    explained = float(w[:k].sum() / w.sum()) if w.sum() > 0 else 1.0
    return basis.astype(np.float32), mean.astype(np.float32), explained


def project(x: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (N, k, ...): basis @ (x - mean) on axis 1."""
    x = np.asarray(x, np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.tensordot(basis, x - mean.reshape(shape), axes=([1], [1])).swapaxes(0, 1).astype(np.float32)


def unproject(y: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(N, k, ...) -> (N, C, ...): basis.T @ y + mean on axis 1."""
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (np.tensordot(basis.T, y, axes=([1], [1])).swapaxes(0, 1) + mean.reshape(shape)).astype(np.float32)


def fit(spec: CodecSpec, samples: list[np.ndarray], rank: int | None = None, tail=None) -> TensorCodec:
    """Calibrate ``spec`` on activations of one tensor (a list of per-frame arrays, or subsamples that keep axis 1).
    ``rank``: the tensor's rank (default: that of the samples); PCA applies to 4-D tensors only (others fall back to
    the codec after ``+``). ``tail``: learned<k> only, (torch tail module or None, why none) from
    ``bottleneck.tail_module``: distil through the tail when there is one, else feature reconstruction."""
    rank = samples[0].ndim if rank is None else rank
    module, why = tail if tail is not None else (None, "no tail given")
    raw = samples
    basis = mean = explained = None
    learned = None
    if spec.learned is not None and rank == 4 and samples[0].ndim == 4:  # whole activations (not subsamples)
        from splitc.cost import bottleneck

        step = float(spec.clip[4:]) if spec.clip.startswith("step") else 0.5
        learned = bottleneck.fit_learned(samples, spec.learned, step=step, tail=module,
                                         **({"iters": 400} if module is not None else {}))
        samples = [bottleneck.run_layers(s, learned[0]) for s in samples]
    if spec.pca is not None and rank == 4 and samples[0].ndim >= 2 and samples[0].shape[1] > 1:
        basis, mean, explained = fit_pca(samples, pca_k(spec, samples[0].shape[1]))
        samples = [project(s, basis, mean) for s in samples]
    per_channel = spec.per_channel and samples[0].ndim >= 2
    values = np.concatenate([channel_view(s, per_channel) for s in samples], axis=1)
    if spec.clip.startswith("step"):
        scale, zp = step_params(values, spec.bits, float(spec.clip[4:]))
    else:
        lo, hi = fit_ranges(values, spec.bits, spec.clip)
        scale, zp = qparams(lo, hi, spec.bits)
    if not per_channel:
        scale, zp = scale.reshape(()), zp.reshape(())
    tc = TensorCodec(spec, scale, zp, 1 if per_channel else None, basis=basis, mean=mean, explained=explained)
    if learned is not None:
        tc.encoder, tc.decoder, tc.reconstruction_error = learned
        tc.training = "distillation" if module is not None else f"reconstruction ({why})"
    if spec.entropy == "ans":
        from splitc.runtimes import ans

        as3 = lambda a: a.reshape(a.shape[0], a.shape[1] if a.ndim >= 2 else 1, -1)  # noqa: E731
        if spec.context and rank == 4 and tc.axis is not None and all(np.ndim(s) == 4 for s in raw):  # whole maps:
            q4 = np.concatenate([quantize(np.asarray(s), tc) for s in raw], axis=0)  # the significance context
            tc.ans = ans.fit_tables(q4, 1 << spec.bits, per_channel=True, zero=tc.zero_point)
            return tc
        if tc.basis is None and tc.encoder is None:  # elementwise: one quantize of all the samples
            q = quantize(np.concatenate([as3(np.asarray(s)) for s in raw], axis=2), tc)
        else:  # PCA / learned: k channels
            q = np.concatenate([as3(quantize(s, tc)) for s in raw], axis=2)
        tc.ans = ans.fit_tables(q, 1 << spec.bits, per_channel=rank >= 2 and q.shape[1] > 1)
    return tc


def step_params(values: np.ndarray, bits: int, f: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform steps of ``f`` x each row's standard deviation over the row's whole range (0 exact), widened where
    the range needs more than 2^bits - 1 steps: with an entropy coder, rare large values cost little."""
    levels = (1 << bits) - 1
    lo = np.minimum(values.min(axis=1).astype(np.float64), 0.0)
    hi = np.maximum(values.max(axis=1).astype(np.float64), 0.0)
    step = np.maximum(np.maximum(f * values.std(axis=1).astype(np.float64), (hi - lo) / levels), 1e-8)
    zp = np.clip(np.round(-lo / step), 0, levels)
    return step.astype(np.float32), zp.astype(np.uint8)


def quantize(x: np.ndarray, tc: TensorCodec) -> np.ndarray:
    """The graph's arithmetic in numpy: uint8 symbols in [0, 2^bits)."""
    if tc.basis is not None:
        x = project(x, tc.basis, tc.mean)
    if tc.encoder is not None:
        from splitc.cost.bottleneck import run_layers

        x = run_layers(x, tc.encoder)
    shape = tc.broadcast_shape(x.ndim)
    scale = tc.scale.reshape(shape)
    zp = tc.zero_point.reshape(shape).astype(np.float32)
    y = np.asarray(np.asarray(x, np.float32) / scale)  # then in place: np.clip(np.rint(y) + zp, 0, 2^bits - 1)
    np.rint(y, out=y)
    y += zp
    np.maximum(y, 0, out=y)
    np.minimum(y, (1 << tc.bits) - 1, out=y)
    return y.astype(np.uint8)


def dequantize(q: np.ndarray, tc: TensorCodec) -> np.ndarray:
    shape = tc.broadcast_shape(q.ndim)
    y = ((q.astype(np.float32) - tc.zero_point.reshape(shape).astype(np.float32)) * tc.scale.reshape(shape)).astype(np.float32)
    if tc.decoder is not None:
        from splitc.cost.bottleneck import run_layers

        return run_layers(y, tc.decoder)
    return unproject(y, tc.basis, tc.mean) if tc.basis is not None else y


# --------------------------------------------------------------------------- accuracy budgets

BUDGET_METRICS = _accuracy.METRICS


def parse_budget(text: str | None) -> dict[str, float]:
    """``top1=0.99,cosine=0.999`` -> {"top1": 0.99, "cosine": 0.999}; ``prob=0.99``: 99% of samples keep top-1 and
    every class probability within 0.01 (splitc.runtimes.accuracy)."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        try:
            v = float(value)
        except ValueError:
            v = None
        if not sep or key not in BUDGET_METRICS or v is None or not 0 < v <= 1:
            raise SplitcError(f"--accuracy-budget '{text}': give {' and/or '.join(m + '=X' for m in BUDGET_METRICS)} with 0 < X <= 1,"
                              " e.g. top1=0.99")
        out[key] = v
    return out


def output_metrics(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict[str, float]:
    """The budget's metrics (top-1 agreement, cosine, prob) as :mod:`splitc.runtimes.accuracy` computes them for the
    held-out check and ``splitc run``, without its max abs error (a codec's error record holds only what a budget names)."""
    m = _accuracy.output_metrics(reference, got)
    return {k: m[k] for k in BUDGET_METRICS}


meets = _accuracy.meets
