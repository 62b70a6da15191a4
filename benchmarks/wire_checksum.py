"""What the wire payload's crc32 costs: encode and decode MB/s with the checksum vs the same code without it.

    .venv/bin/python benchmarks/wire_checksum.py [--repeats 301]

Tensors: a natural photo (../shared/images, 224x224 RGB) as uint8 symbols (1x3x224x224, what an int8 boundary
sends; zstd codes it to ~60% of its size), the same photo as fp32 (1x3x224x224, sent raw+zstd), and a post-ReLU
int8 feature map built from the photo (1x32x28x28: every other channel zero, sparse layout). "Without" replaces
zlib.crc32 inside splitc.runtimes.wire by a function returning the expected value, so the only difference is the
checksum. Runs interleave with/without; the figure is the median of ``--repeats`` timings of each, one core.
MB/s = MB of tensor bytes (before coding) per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitc.runtimes import wire  # noqa: E402


class _NoCrc:
    """zlib as wire.py sees it, minus the checksum: crc32 returns the value the decoder compares with."""

    def __getattr__(self, name):
        return getattr(zlib, name)

    @staticmethod
    def crc32(data, value=0):
        return 0


def tensors() -> dict[str, dict[str, np.ndarray]]:
    photo = np.asarray(Image.open(REPO.parent / "shared" / "images" / "astronaut.png").convert("RGB").resize((224, 224)))
    chw = photo.transpose(2, 0, 1)[None].copy()
    small = np.asarray(Image.fromarray(photo).resize((28, 28)), np.float32).transpose(2, 0, 1)
    feat = np.maximum(np.concatenate([small - small.mean()] * 11)[:32], 0)[None]
    feat[:, ::2] = 0
    q = np.clip(np.round(feat / max(feat.max(), 1e-6) * 255), 0, 255).astype(np.uint8)
    return {"uint8 1x3x224x224 (photo)": {"x__q": chw, "x__scale": np.float32(0.02), "x__zero_point": np.uint8(128)},
            "fp32 1x3x224x224 (photo)": {"x": chw.astype(np.float32) / 255},
            "uint8 1x32x28x28 (post-ReLU)": {"f__q": q, "f__scale": np.float32(0.1), "f__zero_point": np.uint8(0)}}


def time_it(fn, repeats: int, modes) -> dict[str, float]:
    """Median seconds per call of ``fn`` under each mode, the modes interleaved call by call."""
    samples = {m: [] for m in modes}
    for _ in range(repeats):
        for mode, enter in modes.items():
            wire.zlib = enter
            t = time.perf_counter()
            fn()
            samples[mode].append(time.perf_counter() - t)
    wire.zlib = zlib
    return {m: float(np.median(v)) for m, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=301)
    args = ap.parse_args()
    modes = {"with crc32": zlib, "without": _NoCrc()}
    rows = []
    for label, ts in tensors().items():
        raw = sum(np.asarray(v).nbytes for v in ts.values())
        expected = {k: (np.asarray(v).dtype.name, np.shape(v)) for k, v in ts.items()}
        payload = wire.encode(ts)
        enc = time_it(lambda: wire.encode(ts), args.repeats, modes)
        wire.zlib = _NoCrc()
        unchecked = wire.encode(ts)  # crc field 0: what the no-checksum decoder accepts
        wire.zlib = zlib
        dec = time_it(lambda: wire.decode(payload if wire.zlib is zlib else unchecked, expected), args.repeats, modes)
        row = {"tensor": label, "raw_bytes": raw, "payload_bytes": len(payload)}
        for what, t in (("encode", enc), ("decode", dec)):
            for mode in modes:
                row[f"{what} MB/s {mode}"] = round(raw / t[mode] / 1e6, 1)
            row[f"{what} cost"] = f"{(t['with crc32'] / t['without'] - 1) * 100:+.1f}%"
        rows.append(row)
    print(json.dumps({"repeats": args.repeats, "zlib": zlib.ZLIB_RUNTIME_VERSION, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
