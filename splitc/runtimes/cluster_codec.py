"""The boundary codec of a cluster plan's hub<->worker transfers (plan.json: each part's ``codec``).

``fp32``: tensors as they are (splitc/runtimes/wire.py, entropy "raw"): exact. ``int8``: every float32 tensor with the
2-tier split's int8 boundary, a per-frame range as ONNX DynamicQuantizeLinear computes it (the range widened to hold
0, scale = (max - min) / 255, zero point rounded half to even), here in numpy because the same part also runs on the
hub's own slot, where nothing is coded. On the wire (one wire.py payload): ``NAME`` the uint8 values, zstd-coded,
``NAME|scale`` (float32) and ``NAME|zero_point`` (uint8); tensors of other dtypes travel raw. The receiver expects
exactly those tensors (the part's specs decide, never the payload), and refuses a scale that is not finite and > 0.
A tensor holding inf or NaN cannot be sent as int8: a one-line CodecError names it.
"""

from __future__ import annotations

import math

import numpy as np

from splitc.runtimes.wire import CodecError, decode, encode

CODECS = ("fp32", "int8")
SCALE, ZERO = "|scale", "|zero_point"


def check(codec) -> str:
    if codec not in CODECS:
        raise CodecError(f"boundary codec {str(codec)[:40]!r} is not one of {', '.join(CODECS)}")
    return codec


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(uint8 values, scale, zero point) of ``x`` as DynamicQuantizeLinear computes them."""
    x = np.asarray(x, dtype=np.float32)
    lo = min(0.0, float(x.min())) if x.size else 0.0
    hi = max(0.0, float(x.max())) if x.size else 0.0
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CodecError("holds inf or NaN values, which the int8 boundary cannot carry; use boundary = \"fp32\"")
    scale = np.float32((hi - lo) / 255.0) or np.float32(1.0)  # an all-zero tensor: any scale
    zero = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)
    return q, scale, zero


def dequantize(q: np.ndarray, scale, zero) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)


def pack(tensors: dict[str, np.ndarray], codec: str, frame: int = 0) -> bytes:
    """One wire payload of ``tensors`` under ``codec``."""
    if check(codec) == "fp32":
        return encode(tensors, entropy="raw", frame=frame)
    out, entropy = {}, {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype != np.float32:
            out[name], entropy[name] = arr, "raw"
            continue
        try:
            q, scale, zero = quantize(arr)
        except CodecError as e:
            raise CodecError(f"tensor '{name}' {e}") from None
        out[name], out[name + SCALE], out[name + ZERO] = q, np.asarray(scale), np.asarray(zero)
        entropy[name], entropy[name + SCALE], entropy[name + ZERO] = "zstd", "raw", "raw"
    return encode(out, entropy=entropy, frame=frame)


def unpack(payload: bytes, expected: dict[str, tuple], codec: str) -> dict[str, np.ndarray]:
    """The tensors of ``payload``; ``expected``: name -> (dtype, shape) as the part's specs (or the plan) give them."""
    if check(codec) == "fp32":
        return decode(payload, expected)
    wire: dict[str, tuple] = {}
    for name, (dtype, shape) in expected.items():
        if dtype == "float32":
            wire[name], wire[name + SCALE], wire[name + ZERO] = ("uint8", shape), ("float32", ()), ("uint8", ())
        else:
            wire[name] = (dtype, shape)
    got = decode(payload, wire)
    out = {}
    for name, (dtype, _) in expected.items():
        if dtype != "float32":
            out[name] = got[name]
            continue
        scale = float(got[name + SCALE])
        if not (math.isfinite(scale) and 0 < scale <= 3.4e38 / 256):
            raise CodecError(f"tensor '{name}': int8 scale {scale!r} is not a finite positive number")
        out[name] = dequantize(got[name], scale, got[name + ZERO])
    return out
