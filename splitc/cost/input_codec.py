"""Compile-time sizing of the input codec: what a camera would send when a plan cuts at the input.

Every image-like graph input (``splitc.runtimes.image.image_spec``) crosses a link as a compressed image, not as
a tensor: JPEG at quality 90 unless ``--input-codec`` says otherwise (``raw`` sends the tensor through the
boundary codec as before). Its bytes are measured on calibration frames (``--calibrate DIR``: each image's centre
crop at the input's size, packed as the runtime sends it) or, without images, taken from ``DEFAULT_BPP``; its
encode/decode seconds come from each tier's ``[image]`` profile table. Every plan and baseline is priced with it,
because it lives in the cost graph (``CTensor.coder_s``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from splitc.cost.targets import DeviceProfile, load_target
from splitc.errors import SplitcError, SplitcWarning
from splitc.runtimes.image import ImageCodec, ImageSpec, Norm, fit_frame, image_spec, pack, parse_codec, parse_norm

# Mean bytes per pixel of each codec on natural photos, measured on the 13 images of ../shared/images (centre crop
# of the short side, resized bilinearly; JPEG 4:2:0 by simplejpeg, PNG level 6 and WebP by Pillow), by
# `.venv/bin/python benchmarks/input_codec_table.py`. Keys: (kind, quality) -> {(side, channels): B/px}. Between
# the measured sizes and qualities the table is interpolated (log pixels, quality) and clamped outside them.
SIDES = (224, 416, 640)
DEFAULT_BPP: dict[tuple[str, int | None], dict[int, tuple[float, float, float]]] = {
    # channels -> B/px at 224x224, 416x416, 640x640
    ("jpeg", 50): {3: (0.1406, 0.1099, 0.0898), 1: (0.1226, 0.0981, 0.0803)},
    ("jpeg", 75): {3: (0.2015, 0.1592, 0.1300), 1: (0.1775, 0.1425, 0.1163)},
    ("jpeg", 85): {3: (0.2642, 0.2109, 0.1726), 1: (0.2326, 0.1883, 0.1539)},
    ("jpeg", 90): {3: (0.3271, 0.2638, 0.2168), 1: (0.2876, 0.2352, 0.1933)},
    ("jpeg", 95): {3: (0.4584, 0.3773, 0.3142), 1: (0.4005, 0.3346, 0.2792)},
    ("jpeg", 100): {3: (0.8410, 0.7228, 0.6184), 1: (0.6591, 0.5698, 0.4797)},
    ("png", None): {3: (1.4496, 1.3117, 1.1374), 1: (0.5554, 0.5056, 0.4422)},
    ("webp", 75): {3: (0.1469, 0.1088, 0.0793), 1: (0.1310, 0.0972, 0.0701)},
    ("webp", 90): {3: (0.2633, 0.2064, 0.1576), 1: (0.2263, 0.1772, 0.1351)},
}


@dataclass(frozen=True)
class InputCodec:
    """How one image-like graph input crosses a link."""

    spec: ImageSpec
    codec: ImageCodec
    norm: Norm
    bytes: int = 0  # mean payload per frame
    bytes_source: str = ""
    explicit: bool = False  # given by --input-codec (kept even when it misses the budget)
    accuracy: dict | None = None  # the codec's own accuracy on held-out images (splitc.cost.input_accuracy)

    @property
    def compressed(self) -> bool:
        return self.codec.kind != "raw"

    def coder_s(self, targets: tuple[DeviceProfile, ...]) -> tuple[tuple[float, float], ...]:
        """Per tier (encode seconds, decode seconds) of one frame."""
        return tuple((self.spec.pixels / image_rate(t, self.codec.kind, "encode"),
                      self.spec.pixels / image_rate(t, self.codec.kind, "decode")) for t in targets)

    def record(self, targets: tuple[DeviceProfile, ...]) -> dict:
        """plan.json ``input_codec[]``: all the runtime needs to send and receive the frame."""
        if not self.compressed:
            return {"tensor": self.spec.name, "codec": "raw", "quality": None, "name": "raw", "layout": self.spec.layout,
                    "height": self.spec.height, "width": self.spec.width, "channels": self.spec.channels,
                    "dtype": self.spec.dtype, "norm": self.norm.record(), "encoded_bytes": None, "bytes_source": self.bytes_source}
        return {"tensor": self.spec.name, "codec": self.codec.kind, "quality": self.codec.quality, "name": self.codec.name,
                "layout": self.spec.layout, "height": self.spec.height, "width": self.spec.width,
                "channels": self.spec.channels, "dtype": self.spec.dtype, "norm": self.norm.record(),
                "encoded_bytes": self.bytes, "bytes_source": self.bytes_source,
                "coder_s": {t.name: {"encode_s": e, "decode_s": d} for t, (e, d) in zip(targets, self.coder_s(targets))},
                "accuracy": self.accuracy}


_FALLBACK: dict[str, DeviceProfile] = {}


def image_rate(target: DeviceProfile, kind: str, way: str) -> float:
    """Pixels/s of the image coder on ``target``; a profile without an [image] table (one written by an older
    ``splitc profile``) borrows the Raspberry Pi 4's, the slowest built-in, with a warning."""
    rate = target.image_rate(kind, way)
    if rate is not None:
        return rate
    if "rpi4" not in _FALLBACK:
        _FALLBACK["rpi4"] = load_target("rpi4")
    warnings.warn(f"profile {target.name} has no [image] table: input-image codec speeds of rpi4 assumed; rerun"
                  " 'splitc profile' to measure them", SplitcWarning, stacklevel=3)
    return _FALLBACK["rpi4"].image_rate(kind, way)


def resolve(inputs: list[dict], codec: str | None, norm: str | None) -> dict[str, InputCodec]:
    """Input name -> its InputCodec (not yet sized), for every image-like input (``raw``: the tensor crosses through the
    boundary codec, but the normalization is still recorded for ``run_image``)."""
    chosen = parse_codec(codec)
    parsed_norm = parse_norm(norm)
    images = {i["name"]: s for i in inputs if (s := image_spec(i)) is not None}
    if not images:
        if codec is not None and chosen.kind != "raw":
            shapes = ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in inputs)
            raise SplitcError(f"--input-codec {codec}: no input is an image (batch 1, 1 or 3 channels, NCHW or NHWC,"
                              f" uint8 or float): {shapes}; use --input-codec raw")
        return {}
    return {name: InputCodec(s, chosen, parsed_norm, explicit=codec is not None) for name, s in images.items()}


def default_bytes(ic: InputCodec) -> tuple[int, str]:
    """Bytes per frame from DEFAULT_BPP: interpolated in quality and log(pixels), clamped to the measured range."""
    kind, q = ic.codec.kind, ic.codec.quality
    rows = sorted((k[1], v) for k, v in DEFAULT_BPP.items() if k[0] == kind)
    if kind == "png":
        per_side = rows[0][1][ic.spec.channels]
    else:
        qs = [r[0] for r in rows]
        q = min(max(q, qs[0]), qs[-1])
        j = max(1, min(len(qs) - 1, int(np.searchsorted(qs, q))))
        (q0, a), (q1, b) = rows[j - 1], rows[j]
        w = (q - q0) / (q1 - q0)
        per_side = tuple((1 - w) * x + w * y for x, y in zip(a[ic.spec.channels], b[ic.spec.channels]))
    side = math.sqrt(ic.spec.pixels)
    x = np.log(np.clip(side, SIDES[0], SIDES[-1]))
    bpp = float(np.interp(x, np.log(SIDES), per_side))
    n = int(round(bpp * ic.spec.pixels)) + len(pack(b"", ic.codec, ic.spec.name, "0" * 16))  # + the container
    return n, (f"default {bpp:.3f} B/pixel for {ic.codec.name} ({ic.spec.channels} channel(s)), measured on natural photos"
               " (../shared/images, benchmarks/input_codec_table.py); pass --calibrate DIR to measure on your own frames")


def size(codecs: dict[str, InputCodec], frames: dict[str, list[np.ndarray]] | None = None) -> dict[str, InputCodec]:
    """Each InputCodec with its bytes per frame: measured on ``frames`` (uint8 images per input) or the default table."""
    out = {}
    for name, ic in codecs.items():
        got = (frames or {}).get(name)
        if ic.codec.kind == "raw":
            n, source = 0, "raw: the tensor crosses through the boundary codec"
        elif got:
            sizes = [len(pack(ic.codec.encode(fit_frame(f, ic.spec)), ic.codec, name, "0" * 16)) for f in got]
            n, source = int(round(float(np.mean(sizes)))), f"measured: mean of {len(sizes)} calibration frame(s)"
        else:
            n, source = default_bytes(ic)
        out[name] = replace(ic, bytes=n, bytes_source=source)
    return out
