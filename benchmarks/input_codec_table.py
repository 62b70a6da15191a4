"""The numbers behind splitc/cost/input_codec.py: bytes per pixel of each input codec on natural images, and the
codecs' encode/decode speed on this machine (the cloud profile's [image] table).

    .venv/bin/python benchmarks/input_codec_table.py [--images ../shared/images]

Every image of the folder, centre crop of the short side resized (bilinear) to each size; sizes in B/pixel (mean over
images) per codec and size; speeds in Mpixel/s with splitc.runtimes.image's coders, one core: per image the median of 5
timings (each of 20 codings for JPEG, 3 for PNG/WebP), then the median over the images. A line per codec goes to
stderr as it finishes (the whole run takes ~2 min on one core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from splitc.runtimes.image import ImageCodec, ImageSpec, fit_frame, list_images, read_image

CODECS = [ImageCodec("jpeg", q) for q in (50, 75, 85, 90, 95, 100)] + [ImageCodec("png")] + [ImageCodec("webp", q) for q in (75, 90)]
SIZES = (224, 416, 640)
SPEED_SIZES = (224, 416)  # the input sizes of the bundled classifiers and detectors


def _median_s(fn, arg, n: int) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "shared" / "images"))
    ap.add_argument("--jpeg-libraries", action="store_true", help="only compare simplejpeg with Pillow for JPEG q90 4:2:0")
    args = ap.parse_args()
    if args.jpeg_libraries:
        compare_jpeg_libraries(args.images)
        return
    frames = [read_image(p) for p in list_images(args.images)]
    print(f"{len(frames)} images from {args.images}")
    print("| codec | " + " | ".join(f"{s}x{s} B/px (RGB)" for s in SIZES) + " | " + " | ".join(f"{s}x{s} B/px (gray)" for s in SIZES) + " |")
    print("|---|" + "---|" * (2 * len(SIZES)))
    for codec in CODECS:
        row = []
        for channels in (3, 1):
            for s in SIZES:
                spec = ImageSpec("x", "NCHW", s, s, channels, "float")
                row.append(np.mean([len(codec.encode(fit_frame(f, spec))) / (s * s) for f in frames]))
        print(f"| {codec.name} | " + " | ".join(f"{v:.4f}" for v in row) + " |", flush=True)
        print(f"sizes: {codec.name} done", file=sys.stderr, flush=True)
    print("\n| codec | size | encode Mpx/s | decode Mpx/s |\n|---|---|---|---|", flush=True)
    for codec in (ImageCodec("jpeg", 90), ImageCodec("png"), ImageCodec("webp", 90), ImageCodec("webp", 80)):
        n = 20 if codec.kind == "jpeg" else 3
        for s in SPEED_SIZES:
            spec = ImageSpec("x", "NCHW", s, s, 3, "float")
            px = [fit_frame(f, spec) for f in frames]
            enc = np.median([_median_s(codec.encode, p, n) for p in px])
            data = [codec.encode(p) for p in px]
            dec = np.median([_median_s(lambda d: codec.decode(d, spec), d, n) for d in data])
            print(f"| {codec.name} | {s}x{s} | {s * s / enc / 1e6:.1f} | {s * s / dec / 1e6:.1f} |", flush=True)
        print(f"speed: {codec.name} done", file=sys.stderr, flush=True)


def compare_jpeg_libraries(images: str) -> None:
    """simplejpeg vs Pillow, both libjpeg-turbo, JPEG q90 4:2:0: median microseconds per frame (4 images, 5 x 20 runs)."""
    import io

    import simplejpeg
    from PIL import Image

    def pil_enc(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=90, subsampling="4:2:0")
        return buf.getvalue()

    coders = {"simplejpeg": (lambda a: simplejpeg.encode_jpeg(a, quality=90, colorspace="RGB", colorsubsampling="420"),
                             lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB")),
              "Pillow": (pil_enc, lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")))}
    frames = [read_image(p) for p in list_images(images)[:4]]
    print("| library | size | encode us | decode us |\n|---|---|---|---|")
    for s in (224, 640):
        spec = ImageSpec("x", "NCHW", s, s, 3, "float")
        px = [fit_frame(f, spec) for f in frames]
        for name, (enc, dec) in coders.items():
            e = np.median([_median_s(enc, p, 20) for p in px])
            d = np.median([_median_s(dec, enc(p), 20) for p in px])
            print(f"| {name} | {s}x{s} | {e * 1e6:.0f} | {d * 1e6:.0f} |")


if __name__ == "__main__":
    main()
