"""The wire codec: pack the tensors that cross a link into one self-describing payload.

Layout (version 3, docs/wire-format.md)::

    b"SPLC" | u8 version | u32 header length (LE) | u32 crc32 (LE) | header (JSON, utf-8) | payload bytes

The crc32 (zlib) covers every byte of the payload but its own four: a corrupted payload is refused before
its header is parsed. Only version 3 is read: a payload of an older version (no checksum; version 1 had no
plan fingerprint either) is refused, so a flipped version byte cannot skip a check.

The header is ``{"plan": fingerprint|null, "frame": n, "key": bool, "tensors": [...]}``; per tensor: name,
dtype, shape, ``bits`` (8, or 4/2/1 for bit-packed uint8 symbols), ``codec`` ("zstd", "lz4" or "raw"),
``delta`` (the symbols are a difference to the previous frame, splitc/runtimes/delta.py) and ``stored``
(byte length). Quantization happens inside the ONNX parts (static scales and zero points are constants of
the plan, whose fingerprint the header carries; dynamic ones travel as tensors); this codec bit-packs and
entropy-codes. The decoder checks every field against what the plan expects before it allocates anything,
and bounds every decompression by the plan's sizes; the header's size and nesting depth are bounded before
it is parsed (splitc/runtimes/jsonguard.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib

import numpy as np
import zstandard

from splitc.runtimes import ans as _ans

from splitc.runtimes.jsonguard import JSONLimitError, loads

try:  # optional: pip install lz4 (faster, larger than zstd)
    import lz4.block as _lz4
except ImportError:  # pragma: no cover - depends on the install
    _lz4 = None

MAGIC = b"SPLC"
VERSION = 3
READS = (3,)
_PREFIX = struct.Struct("<4sBII")  # magic, version, header length, crc32 of everything but these 4 bytes
_CRC_AT = 9  # offset of the crc32 field
MAX_HEADER = 1 << 20
MAX_DEPTH = 8  # {"tensors": [{"shape": [..]}]} is 3 deep
MAX_ELEMENTS = 1 << 31  # per tensor, as plan.json is bounded (splitc/runtimes/planfile.py)
MAX_FRAME = (1 << 63) - 1
_DTYPES = {"float32", "float16", "float64", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "bool"}
BITS = (1, 2, 4, 8)
ENTROPY = ("zstd", "lz4", "raw", "sparse-zstd", "ans")  # ans: splitc/runtimes/ans.py, with the plan's tables
SPARSE_AT = 0.5  # try the sparse layout when at least this fraction of the values are zero (post-ReLU)


class CodecError(ValueError):
    """A payload that does not decode to what the plan expects."""


# --------------------------------------------------------------------------- bit packing

def packed_size(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def pack_bits(q: np.ndarray, bits: int) -> bytes:
    """uint8 symbols in [0, 2^bits) -> bytes, first symbol in the high bits; exact inverse: unpack_bits."""
    flat = np.asarray(q, np.uint8).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f"symbols of {bits} bits must be < {1 << bits}, got {int(flat.max())}")
    per = 8 // bits
    pad = (-flat.size) % per
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
    groups = flat.reshape(-1, per)
    out = groups[:, 0].copy()
    for i in range(1, per):
        out <<= bits
        out |= groups[:, i]
    return out.tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    packed = np.frombuffer(data, np.uint8)
    if bits == 8:
        return packed[:n]
    per = 8 // bits
    shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * bits
    out = (packed[:, None] >> shifts[None, :]) & np.uint8((1 << bits) - 1)
    return out.reshape(-1)[:n]


# --------------------------------------------------------------------------- plan fingerprint

def plan_fingerprint(plan: dict) -> str:
    """16 hex digits naming what the plan puts on the wire: the model, every hop's tensors and codec parameters.
    Sender and receiver compute it from their own plan.json; a payload made for another plan is rejected."""
    hops = [[b.get("tensor"), b.get("codec"), b.get("wire"), b.get("quant")] for b in plan.get("boundary", [])]
    text = json.dumps([plan.get("model", {}).get("sha256"), hops], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- encode

def _compress(raw: bytes, entropy: str, level: int) -> tuple[str, bytes]:
    if entropy == "lz4":
        if _lz4 is None:
            raise CodecError("the lz4 codec needs the lz4 package: pip install lz4")
        packed = _lz4.compress(raw, store_size=False)
        return ("lz4", packed) if len(packed) < len(raw) else ("raw", raw)
    if entropy == "raw":
        return "raw", raw
    packed = zstandard.ZstdCompressor(level=level).compress(raw)
    return ("zstd", packed) if len(packed) < len(raw) else ("raw", raw)


def _sparse(flat: np.ndarray) -> bytes:
    """Sparsity-aware layout of post-ReLU tensors: a bitmap of the non-zero positions, then those values."""
    mask = flat != 0
    return np.packbits(mask).tobytes() + flat[mask].tobytes()


def _unsparse(raw: bytes, dtype: str, n: int, name: str) -> bytes:
    mask_bytes = (n + 7) // 8
    if len(raw) < mask_bytes:
        raise CodecError(f"tensor '{name}': sparse block of {len(raw)} bytes is shorter than its {mask_bytes}-byte bitmap")
    mask = np.unpackbits(np.frombuffer(raw, np.uint8, mask_bytes), count=n).astype(bool)
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != mask_bytes + int(mask.sum()) * itemsize:
        raise CodecError(f"tensor '{name}': sparse block holds {len(raw) - mask_bytes} value bytes, its bitmap says {int(mask.sum()) * itemsize}")
    out = np.zeros(n, dtype=dtype)
    out[mask] = np.frombuffer(raw, dtype, offset=mask_bytes)
    return out.tobytes()


def encode(tensors: dict[str, np.ndarray], level: int = 3, *, bits: dict[str, int] | None = None, plan: str | None = None,
           entropy: str | dict[str, str] = "zstd", frame: int = 0, key: bool = True, delta: frozenset | set = frozenset(),
           models: dict | None = None) -> bytes:
    """One payload. ``bits``: tensor -> 4/2/1 for uint8 symbols to bit-pack; ``plan``: the plan fingerprint;
    ``entropy``: "zstd" (at ``level``), "lz4" or "raw", for all tensors or per tensor; ``frame``/``key``/``delta``
    are set by the stream encoder (splitc/runtimes/delta.py). ``models``: tensor -> splitc.runtimes.ans.AnsModel for
    the tensors whose entropy is "ans" (coded with it when constriction is installed, else zstd)."""
    bits = bits or {}
    entries, blobs = [], []
    for name, arr in tensors.items():
        arr = np.asarray(arr)  # not ascontiguousarray: it turns a 0-d scalar into shape (1,); tobytes() is C order anyway
        b = bits.get(name, 8)
        if b not in BITS or (b != 8 and arr.dtype != np.uint8):
            raise ValueError(f"tensor '{name}': {b}-bit packing needs uint8 symbols, got {arr.dtype}")
        method = entropy if isinstance(entropy, str) else entropy.get(name, "zstd")
        model = (models or {}).get(name) if method == "ans" else None
        if model is not None and _ans.available() and name not in delta:  # symbols coded whole, not bit-packed
            codec, blob = "ans", model.encode(arr)
        else:
            raw = pack_bits(arr, b) if b != 8 else arr.tobytes()
            codec, blob = _compress(raw, "zstd" if method == "ans" else method, level)
        if method == "zstd" and b == 8 and arr.size >= 64 and name not in delta:
            flat = arr.reshape(-1)
            if np.count_nonzero(flat) <= (1 - SPARSE_AT) * flat.size:
                sparse = zstandard.ZstdCompressor(level=level).compress(_sparse(flat))
                if len(sparse) < len(blob):
                    codec, blob = "sparse-zstd", sparse
        e = {"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "codec": codec, "stored": len(blob)}
        if b != 8:
            e["bits"] = b
        if name in delta:
            e["delta"] = True
        entries.append(e)
        blobs.append(blob)
    return assemble(_header(entries, plan, frame, key), blobs)


def _header(entries: list[dict], plan: str | None = None, frame: int = 0, key: bool = True) -> bytes:
    return json.dumps({"plan": plan, "frame": frame, "key": key, "tensors": entries}, separators=(",", ":")).encode()


def payload_size(name: str, dtype: str, shape, codec: str, stored: int, bits: int = 8, plan: str | None = None) -> int:
    """Bytes of the payload ``encode`` writes for one tensor whose coded block is ``stored`` bytes long."""
    e = {"name": name, "dtype": dtype, "shape": [int(d) for d in shape], "codec": codec, "stored": stored}
    if bits != 8:
        e["bits"] = bits
    return len(assemble(_header([e], plan))) + stored


def assemble(header: bytes, blobs: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    """Prefix (with the checksum) + ``header`` + ``blobs``: the payload ``encode`` writes for that header."""
    head = _PREFIX.pack(MAGIC, VERSION, len(header), 0)[:_CRC_AT]
    crc = zlib.crc32(header, zlib.crc32(head))
    for blob in blobs:
        crc = zlib.crc32(blob, crc)
    return b"".join([head, struct.pack("<I", crc), header, *blobs])


# --------------------------------------------------------------------------- decode

def _expect(name, spec) -> tuple[str, tuple[int, ...], int]:
    """The receiver's (dtype, shape[, bits]) for ``name``, itself checked: it comes from a plan.json."""
    try:
        dtype, shape, *rest = spec
        shape = tuple(shape)
    except (TypeError, ValueError):
        raise CodecError(f"tensor '{_brief(name)}': expected spec {_brief(spec)} is not (dtype, shape[, bits])") from None
    bits = rest[0] if rest else 8
    if (type(name) is not str or not name.isprintable() or type(dtype) is not str or dtype not in _DTYPES or len(rest) > 1 or type(bits) is not int or bits not in BITS or (bits != 8 and dtype != "uint8")
            or len(shape) > 32 or not all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in shape)
            or math.prod(shape) > MAX_ELEMENTS):
        raise CodecError(f"tensor '{_brief(name)}': expected spec {_brief(dtype)}{_brief(list(shape))} ({_brief(bits)} bits) is not a wire tensor of"
                         f" at most {MAX_ELEMENTS} elements")
    return dtype, shape, bits


def _brief(value) -> str:
    """A header value for a one-line message: a short printable string as it is, anything else as a clipped repr."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 64:
        return value
    text = repr(value)
    return text if len(text) <= 64 else text[:60] + "...]"


def _as_bytes(payload) -> bytes:
    if isinstance(payload, bytes):
        return payload
    try:
        return memoryview(payload).tobytes()  # bytearray, memoryview, numpy buffer: any bytes-like object
    except TypeError:
        raise CodecError(f"a payload is bytes-like, not {type(payload).__name__}") from None


def read_header(payload: bytes) -> tuple[int, dict, int]:
    """(version, header, offset of the first blob), validated as far as it goes without the plan."""
    payload = _as_bytes(payload)
    if len(payload) < _PREFIX.size:
        raise CodecError(f"payload of {len(payload)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_len, crc = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise CodecError("not a splitc payload (bad magic)")
    if version not in READS:
        old = " (older payloads carry no checksum: update the sender)" if version < VERSION else ""
        raise CodecError(f"payload version {version} is not supported (this runtime reads {', '.join(map(str, READS))}){old}")
    if header_len > MAX_HEADER or _PREFIX.size + header_len > len(payload):
        raise CodecError(f"header length {header_len} runs past the payload ({len(payload)} bytes) or the {MAX_HEADER}-byte limit")
    body = memoryview(payload)[_PREFIX.size:]
    if zlib.crc32(body, zlib.crc32(payload[:_CRC_AT])) != crc:
        raise CodecError(f"payload of {len(payload)} bytes fails its crc32 check: corrupted in transit")
    try:
        header = loads(payload[_PREFIX.size:_PREFIX.size + header_len], max_bytes=MAX_HEADER, max_depth=MAX_DEPTH)
        entries = header["tensors"]
    except (JSONLimitError, KeyError, TypeError) as e:
        why = f" ({e})" if isinstance(e, JSONLimitError) else ""
        raise CodecError(f"payload header is not valid JSON with a 'tensors' list{why}") from None
    if not isinstance(entries, list):
        raise CodecError("payload header is not valid JSON with a 'tensors' list")
    frame, key = header.get("frame", 0), header.get("key", True)
    if type(frame) is not int or not 0 <= frame <= MAX_FRAME or type(key) is not bool:
        raise CodecError(f"payload header: frame {frame!r} / key {key!r} are not a frame number and a boolean")
    return version, header, _PREFIX.size + header_len


def decode(payload: bytes, expected: dict[str, tuple], *, plan: str | None = None, header_out: dict | None = None,
           models: dict | None = None) -> dict[str, np.ndarray]:
    """Decode ``payload``; ``expected`` maps each tensor name to (dtype, shape) or (dtype, shape, bits) from the plan.

    ``plan``: the receiver's plan fingerprint; a payload naming another plan is rejected.
    ``header_out``: filled with the payload's header (frame, key, per-tensor delta flags) for the stream decoder.
    Bit-packed tensors come back as uint8 symbols in [0, 2^bits). ``payload``: any bytes-like object.
    ``models``: tensor -> splitc.runtimes.ans.AnsModel (from the plan) for tensors that may arrive ans-coded."""
    if not isinstance(expected, dict):
        raise CodecError(f"expected tensors must be a dict name -> (dtype, shape[, bits]), not {type(expected).__name__}")
    specs = {name: _expect(name, spec) for name, spec in expected.items()}
    payload = _as_bytes(payload)
    version, header, offset = read_header(payload)
    entries = header["tensors"]
    if plan is not None and header.get("plan") != plan:
        raise CodecError(f"payload was made for plan {_brief(header.get('plan'))!r}, this receiver runs plan {plan!r}: recompile or redeploy one side")
    names = [e.get("name") for e in entries] if isinstance(entries, list) and all(isinstance(e, dict) for e in entries) else None
    if names is None or not all(isinstance(n, str) for n in names) or sorted(names) != sorted(expected):
        raise CodecError(f"payload carries tensors {_brief(names)}, the plan expects {sorted(expected)}")
    # every entry is checked before any blob is decompressed or any array allocated
    plans = []
    for e in entries:
        name = e["name"]
        dtype, shape, bits = specs[name]
        if e.get("dtype") != dtype or e.get("shape") != list(shape):
            raise CodecError(f"tensor '{name}': payload says {_brief(e.get('dtype'))}{_brief(e.get('shape'))}, the plan expects {dtype}{list(shape)}")
        got_bits = e.get("bits", 8)
        if type(got_bits) is not int or got_bits != bits:
            raise CodecError(f"tensor '{name}': payload packs {got_bits!r} bits per value, the plan expects {bits}")
        d = e.get("delta", False)
        if type(d) is not bool:
            raise CodecError(f"tensor '{name}': delta flag {d!r} is not a boolean")
        n = math.prod(shape)
        nbytes = packed_size(n, bits) if bits != 8 else n * np.dtype(dtype).itemsize
        stored = e.get("stored")
        if type(stored) is not int or stored < 0 or offset + stored > len(payload):
            raise CodecError(f"tensor '{name}': stored length {_brief(stored)} runs past the payload")
        if e.get("codec") not in ENTROPY:
            raise CodecError(f"tensor '{name}': unknown codec {_brief(e.get('codec'))!r}")
        if e.get("codec") == "sparse-zstd" and (bits != 8 or e.get("delta")):
            raise CodecError(f"tensor '{name}': the sparse layout is only for whole 8-bit values")
        if e.get("codec") == "ans" and ((models or {}).get(name) is None or dtype != "uint8" or e.get("delta")
                                        or (models or {})[name].alphabet != 1 << bits):
            raise CodecError(f"tensor '{name}': ans-coded, but the plan gives it no ans tables of {1 << bits} symbols")
        if e.get("codec") == "raw" and stored != nbytes:
            raise CodecError(f"tensor '{name}': {stored} bytes decoded, {nbytes} expected")
        plans.append((e, name, dtype, shape, bits, n, nbytes, offset, stored))
        offset += stored
    if offset != len(payload):
        raise CodecError(f"{len(payload) - offset} trailing bytes after the last tensor")
    out = {}
    decompressor = zstandard.ZstdDecompressor()
    for e, name, dtype, shape, bits, n, nbytes, start, stored in plans:
        blob = payload[start:start + stored]
        codec = e["codec"]
        if codec == "ans":  # the symbol count comes from the plan's shape; the tables bound every symbol
            try:
                out[name] = models[name].decode(blob, shape)
            except _ans.AnsError as err:
                raise CodecError(f"tensor '{name}': {err}") from None
            continue
        if codec == "sparse-zstd":  # bitmap + non-zero values: at most the bitmap more than the dense bytes
            bound = (n + 7) // 8 + nbytes
            try:
                declared = zstandard.frame_content_size(blob)
                if declared > bound:
                    raise CodecError(f"tensor '{name}': zstd frame declares {declared} bytes, at most {bound} expected")
                raw = _unsparse(decompressor.decompress(blob, max_output_size=max(bound, 1), allow_extra_data=False), dtype, n, name)
            except zstandard.ZstdError as err:
                raise CodecError(f"tensor '{name}': zstd data is corrupt ({err})") from None
        elif codec == "zstd":
            try:
                # max_output_size only bounds frames that do not declare their size: check the declared one first
                declared = zstandard.frame_content_size(blob)
                if declared > nbytes:
                    raise CodecError(f"tensor '{name}': zstd frame declares {declared} bytes, {nbytes} expected")
                raw = decompressor.decompress(blob, max_output_size=max(nbytes, 1), allow_extra_data=False)
            except zstandard.ZstdError as err:
                raise CodecError(f"tensor '{name}': zstd data is corrupt ({err})") from None
        elif codec == "lz4":
            if _lz4 is None:
                raise CodecError(f"tensor '{name}': lz4 payload, but the lz4 package is not installed here")
            try:  # a block of known size: lz4 writes at most nbytes
                raw = _lz4.decompress(blob, uncompressed_size=nbytes) if nbytes else b""
            except Exception as err:  # noqa: BLE001 - lz4.block.LZ4BlockError and friends
                raise CodecError(f"tensor '{name}': lz4 data is corrupt ({err})") from None
        else:
            raw = blob
        if len(raw) != nbytes:
            raise CodecError(f"tensor '{name}': {len(raw)} bytes decoded, {nbytes} expected")
        if bits != 8:
            out[name] = unpack_bits(raw, bits, n).reshape(shape)
        else:
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if header_out is not None:
        header_out.clear()
        header_out.update(version=version, frame=header.get("frame", 0), key=header.get("key", True),
                          delta={e["name"] for e in entries if e.get("delta") is True})
    return out
