"""Image inputs as a camera sends them: 8-bit frames, JPEG/PNG/WebP on the wire, normalized where they are used.

An input is *image-like* when it is 4-D with batch 1 and 1 or 3 channels (NCHW or NHWC) and its dtype is uint8
or float (a float tensor made from 8-bit pixels by a normalization, ``Norm``). Such an input crosses a link as a
compressed image (``ImageCodec``) in a small container (``pack`` / ``unpack``): the receiver decodes the pixels
and normalizes them itself.

Codecs: JPEG through simplejpeg (libjpeg-turbo's TurboJPEG API; measured here 1.4-1.7x faster to encode and
2.8-3.8x faster to decode than Pillow at the same 4:2:0 subsampling, 224x224 and 640x640 frames), Pillow when
simplejpeg is missing; PNG and WebP through Pillow. Install with ``pip install 'splitc[image]'``.
Runtime module: numpy and those optional libraries only.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.jsonguard import JSONLimitError, loads as bounded_loads

KINDS = ("jpeg", "png", "webp", "raw")
DEFAULT_CODEC = "jpeg:90"
NORMS = ("imagenet", "unit", "raw", "raw-bgr", "mean=..,std=..")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAGIC = b"SPLI"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 4096


class ImageCodecError(ValueError):
    """An image payload that does not decode to what the plan expects."""


# --------------------------------------------------------------------------- which inputs are images

@dataclass(frozen=True)
class ImageSpec:
    name: str
    layout: str  # "NCHW" | "NHWC"
    height: int
    width: int
    channels: int  # 1 or 3
    dtype: str  # the model input's dtype: "uint8" or a float

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, ...]:
        c, h, w = self.channels, self.height, self.width
        return (1, c, h, w) if self.layout == "NCHW" else (1, h, w, c)


def image_spec(spec: dict) -> ImageSpec | None:
    """The image view of a plan input spec ``{"name", "dtype", "shape"}``, or None when it is not image-like."""
    shape, dtype = list(spec.get("shape") or []), str(spec.get("dtype"))
    if len(shape) != 4 or shape[0] != 1 or dtype not in ("uint8", "float", "float32", "float16", "double", "float64"):
        return None
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    if shape[1] in (1, 3) and min(shape[2], shape[3]) >= 8:
        return ImageSpec(spec["name"], "NCHW", shape[2], shape[3], shape[1], dtype)
    if shape[3] in (1, 3) and min(shape[1], shape[2]) >= 8:
        return ImageSpec(spec["name"], "NHWC", shape[1], shape[2], shape[3], dtype)
    return None


# --------------------------------------------------------------------------- normalization

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Norm:
    """tensor = (pixels / scale - mean) / std, per channel (RGB order, or BGR with ``bgr``)."""

    name: str
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 255.0
    bgr: bool = False

    def record(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std), "scale": self.scale, "bgr": self.bgr}

    @classmethod
    def from_record(cls, r: dict) -> "Norm":
        norm = cls(str(r["name"]), tuple(float(m) for m in r["mean"]), tuple(float(s) for s in r["std"]), float(r["scale"]),
                   bool(r.get("bgr", False)))
        values = norm.mean + norm.std + (norm.scale,)
        if not all(np.isfinite(values)) or min(norm.std) <= 0 or norm.scale <= 0 or len(norm.mean) not in (1, 3) \
                or len(norm.std) not in (1, 3):
            raise SplitcError(f"plan.json input_codec norm {r!r}: needs finite mean/std of 1 or 3 values, std and scale > 0")
        return norm

    def _vectors(self, channels: int):
        mean = np.asarray(self.mean if len(self.mean) == channels else self.mean[:1] * channels, np.float32)
        std = np.asarray(self.std if len(self.std) == channels else self.std[:1] * channels, np.float32)
        return mean, std

    def to_tensor(self, pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
        """HxWxC uint8 -> the model input (batch 1, the spec's layout and dtype)."""
        x = pixels[..., ::-1] if self.bgr and spec.channels == 3 and np.dtype(_np(spec.dtype)) != np.uint8 else pixels
        x = x.transpose(2, 0, 1)[None] if spec.layout == "NCHW" else x[None]
        if np.dtype(_np(spec.dtype)) == np.uint8:
            return np.array(x, np.uint8, order="C")  # a copy, as for floats: never a view of the caller's frame
        x = np.ascontiguousarray(x, dtype=np.float32)  # the layout's copy, then (x / scale - mean) / std in place
        mean, std = (v.reshape((-1, 1, 1) if spec.layout == "NCHW" else (1, 1, -1)) for v in self._vectors(spec.channels))
        x /= np.float32(self.scale)
        x -= mean
        x /= std
        return x if x.dtype == np.dtype(_np(spec.dtype)) else x.astype(_np(spec.dtype))

    def to_pixels(self, tensor: np.ndarray, spec: ImageSpec) -> np.ndarray:
        """The inverse of ``to_tensor`` (rounded, clipped to 0..255): HxWxC uint8."""
        x = np.asarray(tensor).reshape(spec.shape)[0]
        x = x.transpose(1, 2, 0) if spec.layout == "NCHW" else x
        if x.dtype != np.uint8:
            mean, std = self._vectors(spec.channels)
            x = (x.astype(np.float32) * std + mean) * np.float32(self.scale)
            if self.bgr and spec.channels == 3:
                x = x[..., ::-1]
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x)


def parse_norm(text: str | None) -> Norm:
    """``imagenet`` | ``unit`` (x/255) | ``raw`` (0..255) | ``raw-bgr`` | ``mean=M[,M,M],std=S[,S,S][,scale=255][,bgr]``
    (tensor = (pixels / scale - mean) / std; PP-OCR's (x/255 - 0.5) / 0.5 is ``mean=0.5,std=0.5``)."""
    text = (text or "imagenet").strip()
    fixed = {"imagenet": Norm("imagenet", *_IMAGENET), "unit": Norm("unit"), "raw": Norm("raw", scale=1.0),
             "raw-bgr": Norm("raw-bgr", scale=1.0, bgr=True)}
    if text in fixed:
        return fixed[text]
    fields: dict[str, list[str]] = {}
    key = None
    for part in (p.strip() for p in text.split(",")):
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip().lower()
            fields.setdefault(key, []).append(value.strip())
        elif part.lower() == "bgr":
            fields["bgr"] = []
        elif key is not None and part:
            fields[key].append(part)
        else:
            key = None
            break
    bad = set(fields) - {"mean", "std", "scale", "bgr"}
    if key is None or bad or "mean" not in fields or "std" not in fields:
        raise SplitcError(f"--input-norm '{text}': choose imagenet, unit, raw, raw-bgr or mean=M[,M,M],std=S[,S,S][,scale=255][,bgr]"
                          " (tensor = (pixels/scale - mean)/std; PP-OCR: mean=0.5,std=0.5)")
    try:
        mean = tuple(float(v) for v in fields["mean"])
        std = tuple(float(v) for v in fields["std"])
        scale = float(fields["scale"][0]) if "scale" in fields else 255.0
    except ValueError:
        raise SplitcError(f"--input-norm '{text}': mean, std and scale must be numbers") from None
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or min(std) <= 0 or scale <= 0 \
            or not all(np.isfinite(mean + std + (scale,))):
        raise SplitcError(f"--input-norm '{text}': mean and std take 1 or 3 finite values, std and scale must be positive")
    return Norm(text, mean, std, scale, "bgr" in fields)


# --------------------------------------------------------------------------- codecs

@dataclass(frozen=True)
class ImageCodec:
    kind: str  # jpeg | png | webp | raw
    quality: int | None = None  # jpeg/webp: 1..100

    @property
    def name(self) -> str:
        return self.kind if self.quality is None else f"{self.kind}:{self.quality}"

    def encode(self, pixels: np.ndarray) -> bytes:
        """HxWxC uint8 (C = 1 or 3) -> compressed image bytes."""
        pixels = np.ascontiguousarray(pixels, np.uint8)
        if self.kind == "jpeg":
            sj = _simplejpeg()
            if sj is not None:
                gray = pixels.shape[2] == 1
                return sj.encode_jpeg(pixels, quality=self.quality, colorspace="GRAY" if gray else "RGB",
                                      colorsubsampling="Gray" if gray else "420")
        img = _pil().Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        buf = io.BytesIO()
        if self.kind == "jpeg":
            img.save(buf, "JPEG", quality=self.quality, subsampling="4:2:0")
        elif self.kind == "webp":
            img.save(buf, "WEBP", quality=self.quality, method=4)
        elif self.kind == "png":
            img.save(buf, "PNG", compress_level=6)
        else:
            raise ValueError(f"codec {self.kind} does not make images")
        return buf.getvalue()

    def decode(self, data: bytes, spec: ImageSpec) -> np.ndarray:
        """Compressed bytes -> HxWxC uint8, checked against the spec's size before the pixels are allocated."""
        h, w, c = spec.height, spec.width, spec.channels
        sj = _simplejpeg() if self.kind == "jpeg" else None
        try:
            if sj is not None:
                dims = sj.decode_jpeg_header(data)[:2]
                if tuple(dims) != (h, w):
                    raise ImageCodecError(f"image is {dims[1]}x{dims[0]}, the plan expects {w}x{h}")
                out = sj.decode_jpeg(data, colorspace="GRAY" if c == 1 else "RGB")
            else:
                Image = _pil().Image
                with Image.open(io.BytesIO(data), formats=[{"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[self.kind]]) as im:
                    if im.size != (w, h):
                        raise ImageCodecError(f"image is {im.size[0]}x{im.size[1]}, the plan expects {w}x{h}")
                    out = np.asarray(im.convert("L" if c == 1 else "RGB"))
        except ImageCodecError:
            raise
        except Exception as e:  # noqa: BLE001  (each library raises its own errors on corrupt data)
            raise ImageCodecError(f"{self.name} payload does not decode: {e}") from None
        out = out.reshape(h, w, c)
        return out


def parse_codec(text: str | None) -> ImageCodec:
    """``jpeg[:Q]`` (default Q 90) | ``png`` | ``webp[:Q]`` (default 90) | ``raw`` (the tensor boundary codec)."""
    text = (text or DEFAULT_CODEC).strip().lower()
    m = re.fullmatch(r"(jpeg|jpg|png|webp|raw)(?::(\d{1,3}))?", text)
    if not m or (m.group(2) and m.group(1) in ("png", "raw")) or (m.group(2) and not 1 <= int(m.group(2)) <= 100):
        raise SplitcError(f"--input-codec '{text}': choose jpeg[:Q], webp[:Q] (Q 1-100), png or raw")
    kind = "jpeg" if m.group(1) == "jpg" else m.group(1)
    quality = int(m.group(2)) if m.group(2) else (90 if kind in ("jpeg", "webp") else None)
    return ImageCodec(kind, quality)


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def _pil():
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise SplitcError("image inputs need Pillow (and, for speed, simplejpeg): pip install 'splitc[image]'") from None
    import PIL

    return PIL


def _np(dtype: str) -> str:
    return {"float": "float32", "double": "float64"}.get(dtype, dtype)


# --------------------------------------------------------------------------- the wire container

def pack(data: bytes, codec: ImageCodec, tensor: str, plan: str | None) -> bytes:
    """b"SPLI" | u8 version | u32 header length | JSON header {plan, tensor, codec, stored} | image bytes."""
    header = json.dumps({"plan": plan, "tensor": tensor, "codec": codec.name, "stored": len(data)}, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + data


def unpack(payload: bytes, codec: ImageCodec, spec: ImageSpec, plan: str | None, max_bytes: int) -> np.ndarray:
    """The pixels of a packed image, every header field checked against the plan first."""
    if len(payload) < _PREFIX.size:
        raise ImageCodecError("image payload shorter than its prefix")
    magic, version, n = _PREFIX.unpack_from(payload)
    if magic != MAGIC or version != VERSION:
        raise ImageCodecError(f"not an image payload (magic {magic!r}, version {version})")
    if n > MAX_HEADER or _PREFIX.size + n > len(payload):
        raise ImageCodecError(f"image header length {n} out of bounds")
    try:  # size and nesting bounded before parsing: 4 KB of "[[[[" raised RecursionError
        header = bounded_loads(payload[_PREFIX.size:_PREFIX.size + n], max_bytes=MAX_HEADER, max_depth=4)
    except JSONLimitError as e:
        raise ImageCodecError(f"image header is not JSON within bounds ({e})") from None
    if not isinstance(header, dict):
        raise ImageCodecError("image header is not an object")
    if header.get("plan") != plan:
        raise ImageCodecError(f"payload was made for plan {header.get('plan')}, this is {plan}")
    if header.get("tensor") != spec.name or header.get("codec") != codec.name:
        raise ImageCodecError(f"payload carries {header.get('tensor')!r} as {header.get('codec')!r},"
                              f" the plan expects {spec.name!r} as {codec.name!r}")
    data = payload[_PREFIX.size + n:]
    if header.get("stored") != len(data) or len(data) > max_bytes:
        raise ImageCodecError(f"image of {len(data)} bytes (header says {header.get('stored')}, at most {max_bytes})")
    return codec.decode(data, spec)


# --------------------------------------------------------------------------- frames as the user has them

def fit_frame(frame: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """HxW or HxWxC (C = 1, 3 or 4) uint8 -> the input's size and channels: a centre crop to its aspect ratio,
    resized bilinearly (Pillow) when the size differs; RGB <-> gray converted (ITU-R 601 luma)."""
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise SplitcError(f"input '{spec.name}': an image is an HxW or HxWxC (C = 1, 3, 4) uint8 array, got {a.dtype} {a.shape}")
    a = a[..., None] if a.ndim == 2 else a[..., :3]
    if a.shape[2] == 3 and spec.channels == 1:
        a = np.rint(a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(np.uint8)
    elif a.shape[2] == 1 and spec.channels == 3:
        a = np.repeat(a, 3, axis=2)
    if a.shape[:2] != (spec.height, spec.width):
        Image = _pil().Image
        h, w = a.shape[:2]
        want = spec.width / spec.height
        cw, ch = (h * want, h) if w / h > want else (w, w / want)
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        img = Image.fromarray(a[..., 0] if spec.channels == 1 else a)
        a = np.asarray(img.resize((spec.width, spec.height), Image.BILINEAR, box=box)).reshape(spec.height, spec.width, spec.channels)
    return np.ascontiguousarray(a)


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB (or HxWx1 for a grayscale file)."""
    Image = _pil().Image
    try:
        with Image.open(path) as im:
            gray = im.mode in ("L", "I;16", "I", "1")
            return np.asarray(im.convert("L" if gray else "RGB")).reshape(im.size[1], im.size[0], 1 if gray else 3)
    except (OSError, ValueError) as e:
        raise SplitcError(f"{path}: cannot read as an image ({e})") from None


def list_images(directory: str | Path) -> list[Path]:
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise SplitcError(f"{directory}: no images ({', '.join(IMAGE_EXT)}) in this directory")
    return files


# --------------------------------------------------------------------------- plan.json's input_codec[]

@dataclass(frozen=True)
class InputRecord:
    """One image input as plan.json ``input_codec[]`` describes it (validated: it is untrusted input)."""

    spec: ImageSpec
    codec: ImageCodec
    norm: Norm

    @property
    def max_bytes(self) -> int:
        """The largest image payload accepted: twice the raw pixels plus 64 KiB of headers (PNG of noise is ~raw)."""
        return 2 * self.spec.pixels * self.spec.channels + (64 << 10)


def input_records(plan: dict) -> dict[str, InputRecord]:
    """Input name -> InputRecord, from plan.json; a malformed entry is a one-line error naming it."""
    out = {}
    entries = plan.get("input_codec") or []
    if not isinstance(entries, list):
        raise SplitcError("plan.json: input_codec is not a list")
    inputs = {i.get("name"): i for i in plan.get("model", {}).get("inputs", []) if isinstance(i, dict)}
    for k, r in enumerate(entries):
        where = f"plan.json: input_codec[{k}]"
        try:
            if not isinstance(r, dict):
                raise ValueError("is not an object")
            name, kind = r["tensor"], r["codec"]
            spec = image_spec(inputs.get(name) or {})
            if spec is None or (r["layout"], r["height"], r["width"], r["channels"]) != (spec.layout, spec.height, spec.width, spec.channels):
                raise ValueError(f"does not describe an image input of the model ({name!r})")
            codec = parse_codec(kind if r.get("quality") is None else f"{kind}:{r['quality']}")
            norm = Norm.from_record(r["norm"])
        except SplitcError as e:
            raise SplitcError(f"{where}: {e}") from None
        except KeyError as e:
            raise SplitcError(f"{where}: missing field {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SplitcError(f"{where}: {e}") from None
        out[name] = InputRecord(spec, codec, norm)
    return out


def run_frame(model, images: dict, inputs: list[dict], image):
    """``model.run`` on the feeds made from a camera frame (:func:`frame_feeds`), the frame held in ``model._frames``
    while it runs, so a hop of an image input sends this frame compressed; ``result.inputs`` holds the feeds."""
    feeds, model._frames = frame_feeds(images, image, inputs)
    try:
        result = model.run(feeds)
    finally:
        model._frames = {}
    result.inputs = feeds
    return result


def frame_feeds(records: dict[str, InputRecord], image, inputs: list[dict]) -> tuple[dict, dict]:
    """``image`` (a path, an HxW[xC] uint8 array, or a dict of them per input name) -> (model feeds normalized as the
    plan says, the uint8 frames at the input's size)."""
    if not isinstance(image, dict):
        if len(records) != 1 or len(inputs) != 1:
            raise SplitcError(f"run_image: the model has {len(inputs)} input(s), {len(records)} of them images in plan.json"
                              " input_codec; pass a dict of images per input name")
        image = {next(iter(records)): image}
    unknown = set(image) - set(records)
    missing = [i["name"] for i in inputs if i["name"] not in image]
    if unknown or missing:
        raise SplitcError(f"run_image: no image input named {sorted(unknown)} in plan.json input_codec" if unknown
                          else f"run_image: no image for input(s) {', '.join(missing)}")
    feeds, frames = {}, {}
    for name, img in image.items():
        r = records[name]
        frame = fit_frame(read_image(img) if isinstance(img, (str, Path)) else img, r.spec)
        frames[name] = frame
        feeds[name] = r.norm.to_tensor(frame, r.spec)
    return feeds, frames


def encode_frame(record: InputRecord, frame: np.ndarray | None, tensor: np.ndarray, plan: str | None) -> bytes:
    """The sender's side of an image input's hop: the frame (or, when the caller passed a tensor, the 8-bit pixels its
    normalization came from) compressed and packed."""
    pixels = frame
    if pixels is None:
        pixels = record.norm.to_pixels(tensor, record.spec)
        off = float(np.max(np.abs(record.norm.to_tensor(pixels, record.spec).astype(np.float64) - tensor))) if tensor.size else 0.0
        if off > 0.51 / record.norm.scale / min(record.norm.std):  # more than half a pixel step: not an 8-bit image
            import warnings

            from splitc.errors import SplitcWarning

            # one message per input (no per-sample figure in it), so the warnings registry says it once, not per sample
            warnings.warn(f"input '{record.spec.name}' is not an 8-bit image under the plan's normalization"
                          f" ({record.norm.name}; more than half a pixel step off after rounding to pixels): it crosses as"
                          f" {record.codec.name}"
                          " of its clipped, rounded pixels; pass frames (run_image) or compile with --input-codec raw",
                          SplitcWarning, stacklevel=4)
    return pack(record.codec.encode(pixels), record.codec, record.spec.name, plan)


def decode_frame(record: InputRecord, payload: bytes, plan: str | None) -> np.ndarray:
    """The receiver's side: unpack (checked against the plan), decode, normalize: the model input tensor."""
    return record.norm.to_tensor(unpack(payload, record.codec, record.spec, plan, record.max_bytes), record.spec)
