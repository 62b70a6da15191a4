"""The wire codec: pack the tensors that cross a link into one self-describing payload.

Layout (version 1)::

    b"SPLC" | u8 version | u32 header length (LE) | header (JSON, utf-8) | payload bytes

The header lists, per tensor: name, dtype, shape, codec ("zstd" or "raw"), stored bytes.
Quantization happens inside the ONNX parts; this codec entropy-codes the bytes. The decoder
checks every field against what the plan expects before it allocates anything.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import zstandard

MAGIC = b"SPLC"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 1 << 20
_DTYPES = {"float32", "float16", "float64", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "bool"}


class CodecError(ValueError):
    """A payload that does not decode to what the plan expects."""


def encode(tensors: dict[str, np.ndarray], level: int = 3) -> bytes:
    compressor = zstandard.ZstdCompressor(level=level)
    entries, blobs = [], []
    for name, arr in tensors.items():
        arr = np.asarray(arr)  # not ascontiguousarray: it turns a 0-d scalar into shape (1,); tobytes() is C order anyway
        raw = arr.tobytes()
        packed = compressor.compress(raw)
        codec = "zstd" if len(packed) < len(raw) else "raw"
        blob = packed if codec == "zstd" else raw
        entries.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "codec": codec, "stored": len(blob)})
        blobs.append(blob)
    header = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(blobs)


def decode(payload: bytes, expected: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """Decode ``payload``; ``expected`` maps each tensor name to (dtype, shape) from the plan."""
    if len(payload) < _PREFIX.size:
        raise CodecError(f"payload of {len(payload)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_len = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise CodecError("not a splitc payload (bad magic)")
    if version != VERSION:
        raise CodecError(f"payload version {version} is not supported (this runtime reads {VERSION})")
    if header_len > MAX_HEADER or _PREFIX.size + header_len > len(payload):
        raise CodecError(f"header length {header_len} runs past the payload ({len(payload)} bytes)")
    try:
        header = json.loads(payload[_PREFIX.size:_PREFIX.size + header_len])
        entries = header["tensors"]
    except (ValueError, KeyError, TypeError):
        raise CodecError("payload header is not valid JSON with a 'tensors' list") from None
    names = [e.get("name") for e in entries] if isinstance(entries, list) and all(isinstance(e, dict) for e in entries) else None
    if names is None or not all(isinstance(n, str) for n in names) or sorted(names) != sorted(expected):
        raise CodecError(f"payload carries tensors {names}, the plan expects {sorted(expected)}")
    offset = _PREFIX.size + header_len
    out = {}
    decompressor = zstandard.ZstdDecompressor()
    for e in entries:
        name = e["name"]
        dtype, shape = expected[name]
        if e.get("dtype") != dtype or e.get("shape") != list(shape) or dtype not in _DTYPES:
            raise CodecError(f"tensor '{name}': payload says {e.get('dtype')}{e.get('shape')}, the plan expects {dtype}{list(shape)}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        stored = e.get("stored")
        if not isinstance(stored, int) or stored < 0 or offset + stored > len(payload):
            raise CodecError(f"tensor '{name}': stored length {stored} runs past the payload")
        blob = payload[offset:offset + stored]
        offset += stored
        if e.get("codec") == "zstd":
            try:
                # max_output_size only bounds frames that do not declare their size: check the declared one first
                declared = zstandard.frame_content_size(blob)
                if declared > nbytes:
                    raise CodecError(f"tensor '{name}': zstd frame declares {declared} bytes, {nbytes} expected")
                raw = decompressor.decompress(blob, max_output_size=max(nbytes, 1), allow_extra_data=False)
            except zstandard.ZstdError as err:
                raise CodecError(f"tensor '{name}': zstd data is corrupt ({err})") from None
        elif e.get("codec") == "raw":
            raw = blob
        else:
            raise CodecError(f"tensor '{name}': unknown codec {e.get('codec')!r}")
        if len(raw) != nbytes:
            raise CodecError(f"tensor '{name}': {len(raw)} bytes decoded, {nbytes} expected")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if offset != len(payload):
        raise CodecError(f"{len(payload) - offset} trailing bytes after the last tensor")
    return out
