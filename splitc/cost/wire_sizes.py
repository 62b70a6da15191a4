"""Measured wire sizes: what each tensor's payload really weighs, zstd included, on calibration data.

Without data the cost model estimates a crossing tensor at raw/4 (+5) bytes for ``int8`` and raw bytes for
``fp32`` and for results coming back, which ignores the entropy coder: a post-ReLU map or a mostly-zero
segmentation output codes to a fraction of that. With ``--calibrate`` the model is run on the first frames and
every tensor that may cross is coded as the runtime codes it (``splitc.runtimes.wire.encode``: int8 with the
per-frame range of DynamicQuantizeLinear, or the tensor as it is, zstd level 3, the v-current header and plan
fingerprint included); the mean payload replaces the estimate (``splitc.partition.passes.partition._measured``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from splitc.frontend.passes.replicable import is_replicable
from splitc.ir.graph import graph_inputs
from splitc.runtimes.wire import encode

FRAMES = 4  # calibration frames coded per tensor
CHUNK_BYTES = 256 << 20  # tensors fetched per model run, at most (bounds memory on large models)


@dataclass(frozen=True)
class WireSize:
    """Mean payload bytes of one tensor per frame, by boundary codec name."""

    int8: int | None  # "int8-dynamic+zstd" (float tensors of an int8 plan only)
    raw: int | None  # "raw+zstd": the tensor as it is (results, and every tensor of other plans)
    frames: int

    def payload(self, codec: str) -> int | None:
        return {"int8-dynamic+zstd": self.int8, "raw+zstd": self.raw}.get(codec)


def dynamic_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX DynamicQuantizeLinear in numpy: (q uint8, scale float32, zero point uint8)."""
    x = np.asarray(x, np.float32)
    lo, hi = min(0.0, float(x.min(initial=0.0))), max(0.0, float(x.max(initial=0.0)))
    scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return q, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


def crossing_candidates(model: ir.Model) -> list[ir.Value]:
    """Every tensor the cost graph may send: graph inputs and outputs of nodes that are not recomputed."""
    return [v for v in list(graph_inputs(model.graph)) + [o for n in model.graph if not is_replicable(n) for o in n.outputs]
            if v.name and v.shape is not None and v.shape.is_static() and v.dtype is not None]


def measure(model: ir.Model, samples: list[dict], frames: int = FRAMES, boundary: str = "int8") -> dict[str, WireSize]:
    """Tensor name -> its measured payloads on the first ``frames`` samples: with ``boundary`` int8, float tensors as
    int8 (results as they are, since they come back losslessly); fp32: every tensor as it is; a calibrated codec
    (which measures its own payloads, splitc.cost.calibrate): the results only."""
    from splitc.runtimes.ort import session

    values = crossing_candidates(model)
    if boundary not in ("int8", "fp32"):  # calibrated codecs measure their own payloads: only the results here
        values = [v for v in values if v.name in {o.name for o in model.graph.outputs}]
    if not values or not samples:
        return {}
    feeds = samples[:frames]
    inputs = {v.name for v in graph_inputs(model.graph)}
    results = {v.name for v in model.graph.outputs}
    proto = ir.to_proto(model)
    have = {o.name for o in proto.graph.output}
    for v in values:
        if v.name not in have and v.name not in inputs:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(v.name, v.dtype.value, None))
    sess = session(proto.SerializeToString(), "all", spinning=False)  # coding runs between the runs
    sizes: dict[str, list[tuple[int | None, int]]] = {v.name: [] for v in values}
    fetch = [v for v in values if v.name not in inputs]
    for chunk in _chunks(fetch):
        names = [v.name for v in chunk]
        for f in feeds:
            for name, x in zip(names, sess.run(names, f)):
                sizes[name].append(_payloads(name, x, boundary == "int8", name in results))
    for name in inputs & set(sizes):
        for f in feeds:
            sizes[name].append(_payloads(name, f[name], boundary == "int8", name in results))
    return {n: WireSize(_mean([a for a, _ in s]), _mean([b for _, b in s]), len(s)) for n, s in sizes.items() if s}


def _mean(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else int(round(float(np.mean(values))))


def _payloads(name: str, x: np.ndarray, int8: bool, result: bool) -> tuple[int | None, int | None]:
    """(int8 payload, as-is payload) of one frame; each None where the plan cannot send the tensor that way."""
    x = np.asarray(x)
    fp = "0" * 16
    quantizable = int8 and x.dtype in (np.float32, np.float16, np.float64)
    raw = len(encode({name: x}, plan=fp)) if result or not quantizable else None
    if not quantizable:
        return None, raw
    q, s, z = dynamic_int8(x)
    return len(encode({f"{name}__q": q, f"{name}__scale": s, f"{name}__zero_point": z}, plan=fp)), raw


def chunked(items: list, size_of, limit: int = CHUNK_BYTES) -> list[list]:
    """``items`` in order, grouped so that each group's ``size_of`` adds up to at most ``limit`` (an item larger
    than ``limit`` makes a group of its own): the tensors one model run may fetch."""
    out, cur, total = [], [], 0
    for item in items:
        n = size_of(item)
        if cur and total + n > limit:
            out.append(cur)
            cur, total = [], 0
        cur.append(item)
        total += n
    return out + ([cur] if cur else [])


def _chunks(values: list[ir.Value]) -> list[list[ir.Value]]:
    return chunked(values, lambda v: int(np.prod(v.shape.numpy())) * max(1, v.dtype.itemsize))
