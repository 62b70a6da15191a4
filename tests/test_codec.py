"""The wire codec: round trips, every rejection with its message, and a fuzzer."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.runtimes.wire import MAGIC, VERSION, CodecError, decode, encode, read_header

PREFIX = struct.Struct("<4sBI")


def expected_of(tensors: dict[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (np.asarray(v).dtype.name, tuple(np.shape(v))) for k, v in tensors.items()}


def header_of(payload: bytes) -> dict:
    _, _, n = PREFIX.unpack_from(payload)
    return json.loads(payload[PREFIX.size:PREFIX.size + n])


def build(entries: list, blobs: list[bytes], magic: bytes = MAGIC, version: int = VERSION, header: bytes | None = None) -> bytes:
    """A payload assembled by hand, to say exactly what is wrong with it."""
    head = header if header is not None else json.dumps({"tensors": entries}).encode()
    return PREFIX.pack(magic, version, len(head)) + head + b"".join(blobs)


def entry(name="a", dtype="float32", shape=(2, 3), codec="raw", stored=24) -> dict:
    return {"name": name, "dtype": dtype, "shape": list(shape), "codec": codec, "stored": stored}


A = {"a": ("float32", (2, 3))}
RAW_A = np.arange(6, dtype=np.float32).reshape(2, 3)


# --------------------------------------------------------------------------- round trips

DTYPES = ["float32", "float16", "float64", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 5), (2, 3, 4, 5)], ids=str)
def test_round_trip(dtype, shape):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    tensors = {"t": arr, "zeros": np.zeros(shape, dtype)}
    out = decode(encode(tensors), expected_of(tensors))
    assert list(out) == ["t", "zeros"]
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)


def test_scalar_keeps_its_shape():
    # the boundary's scale and zero point are 0-d: they must not come back as shape (1,)
    tensors = {"x__q": np.arange(12, dtype=np.uint8).reshape(3, 4), "x__scale": np.float32(0.25), "x__zero_point": np.uint8(7)}
    payload = encode(tensors)
    assert [e["shape"] for e in header_of(payload)["tensors"]] == [[3, 4], [], []]
    out = decode(payload, {"x__q": ("uint8", (3, 4)), "x__scale": ("float32", ()), "x__zero_point": ("uint8", ())})
    assert out["x__scale"].shape == () and out["x__scale"] == np.float32(0.25)
    assert out["x__zero_point"].shape == () and out["x__zero_point"] == 7


def test_non_contiguous_input():
    arr = np.arange(24, dtype=np.int32).reshape(4, 6)
    view = arr.T[::2]  # (3, 4), neither C- nor F-contiguous
    out = decode(encode({"v": view}), {"v": ("int32", (3, 4))})
    np.testing.assert_array_equal(out["v"], view)


def test_codec_choice_and_header():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8)  # incompressible: sent raw
    zeros = np.zeros(4096, np.uint8)  # compressible: zstd
    payload = encode({"noise": noise, "zeros": zeros})
    magic, version, n = PREFIX.unpack_from(payload)
    assert (magic, version) == (b"SPLC", 2)
    entries = header_of(payload)["tensors"]
    assert [(e["name"], e["dtype"], e["shape"], e["codec"]) for e in entries] == [
        ("noise", "uint8", [4096], "raw"), ("zeros", "uint8", [4096], "zstd"),
    ]
    assert entries[0]["stored"] == 4096 and entries[1]["stored"] < 100
    assert len(payload) == PREFIX.size + n + sum(e["stored"] for e in entries)
    out = decode(payload, {"noise": ("uint8", (4096,)), "zeros": ("uint8", (4096,))})
    np.testing.assert_array_equal(out["noise"], noise)


def test_decode_accepts_names_in_any_order():
    payload = encode({"b": np.ones(2, np.float32), "a": np.zeros(3, np.int64)})
    out = decode(payload, {"a": ("int64", (3,)), "b": ("float32", (2,))})
    assert set(out) == {"a", "b"}


def test_empty_payload_of_no_tensors():
    assert decode(encode({}), {}) == {}


# --------------------------------------------------------------------------- rejections

def good_payload() -> bytes:
    return encode({"a": RAW_A})


def test_rejects_short_prefix():
    with pytest.raises(CodecError, match="payload of 5 bytes is shorter than the 9-byte prefix"):
        decode(good_payload()[:5], A)
    with pytest.raises(CodecError, match="payload of 0 bytes"):
        decode(b"", A)


def test_rejects_bad_magic():
    with pytest.raises(CodecError, match=r"not a splitc payload \(bad magic\)"):
        decode(b"ONNX" + good_payload()[4:], A)


def test_rejects_wrong_version():
    payload = bytearray(good_payload())
    payload[4] = 3
    with pytest.raises(CodecError, match=r"payload version 3 is not supported \(this runtime reads 1, 2\)"):
        decode(bytes(payload), A)


def test_rejects_header_length_past_end():
    payload = good_payload()
    _, _, n = PREFIX.unpack_from(payload)
    bad = PREFIX.pack(MAGIC, VERSION, len(payload)) + payload[PREFIX.size:]
    with pytest.raises(CodecError, match=f"header length {len(payload)} runs past the payload \\({len(payload)} bytes\\)"):
        decode(bad, A)
    huge = PREFIX.pack(MAGIC, VERSION, 0xFFFFFFFF) + payload[PREFIX.size:]
    with pytest.raises(CodecError, match="header length 4294967295 runs past"):
        decode(huge, A)


@pytest.mark.parametrize("cut", [12, 30, -1, -10], ids=["in-header", "in-header-2", "last-byte", "in-blob"])
def test_rejects_truncated_payload(cut):
    with pytest.raises(CodecError):
        decode(good_payload()[:cut], A)


def test_truncated_blob_message():
    with pytest.raises(CodecError, match="tensor 'a': stored length 24 runs past the payload"):
        decode(good_payload()[:-1], A)


@pytest.mark.parametrize(
    "header",
    [b"not json", b"\xff\xfe", b"[]", b'{"tensor": []}', b'{"tensors": 5}', b'"tensors"', b"null"],
)
def test_rejects_malformed_header(header):
    with pytest.raises(CodecError, match="payload header is not valid JSON with a 'tensors' list|payload carries tensors"):
        decode(build([], [], header=header), A)


@pytest.mark.parametrize("entries", [[5], ["a"], [None], [[1, 2]], [{"name": 5}], [{"name": None}]], ids=str)
def test_rejects_header_entries_of_the_wrong_kind(entries):
    with pytest.raises(CodecError, match="payload carries tensors"):
        decode(build(entries, []), {"5": ("float32", (2, 3))})


@pytest.mark.parametrize(
    "tensors, expected",
    [
        ({"b": RAW_A}, A),  # another name
        ({"a": RAW_A, "b": RAW_A}, A),  # one too many
        ({"a": RAW_A}, {**A, "b": ("float32", (2, 3))}),  # one missing
    ],
    ids=["renamed", "extra", "missing"],
)
def test_rejects_wrong_tensor_names(tensors, expected):
    with pytest.raises(CodecError, match=r"payload carries tensors \[.*\], the plan expects \[.*\]"):
        decode(encode(tensors), expected)


def test_rejects_duplicate_names():
    payload = build([entry(), entry()], [RAW_A.tobytes(), RAW_A.tobytes()])
    with pytest.raises(CodecError, match="payload carries tensors"):
        decode(payload, A)


@pytest.mark.parametrize(
    "expected, message",
    [
        ({"a": ("float64", (2, 3))}, r"tensor 'a': payload says float32\[2, 3\], the plan expects float64\[2, 3\]"),
        ({"a": ("float32", (3, 2))}, r"tensor 'a': payload says float32\[2, 3\], the plan expects float32\[3, 2\]"),
        ({"a": ("float32", (6,))}, r"payload says float32\[2, 3\], the plan expects float32\[6\]"),
        ({"a": ("float32", ())}, r"payload says float32\[2, 3\], the plan expects float32\[\]"),
    ],
    ids=["dtype", "shape", "rank", "scalar"],
)
def test_rejects_wrong_dtype_or_shape(expected, message):
    with pytest.raises(CodecError, match=message):
        decode(good_payload(), expected)


@pytest.mark.parametrize("shape", ["23", [2, "3"], [2, 3.5], None, 6, [[2], [3]]], ids=str)
def test_rejects_malformed_shape_in_header(shape):
    payload = build([{**entry(), "shape": shape}], [RAW_A.tobytes()])
    with pytest.raises(CodecError, match="tensor 'a': payload says float32"):
        decode(payload, A)


def test_rejects_plan_dtype_outside_the_wire_set():
    payload = build([entry(dtype="complex64", stored=48)], [np.zeros((2, 3), np.complex64).tobytes()])
    with pytest.raises(CodecError, match="tensor 'a'"):
        decode(payload, {"a": ("complex64", (2, 3))})


@pytest.mark.parametrize("stored", [-1, "24", None, 1.5, 10**12], ids=str)
def test_rejects_bad_stored_length(stored):
    payload = build([entry(stored=stored)], [RAW_A.tobytes()])
    with pytest.raises(CodecError, match=f"tensor 'a': stored length {stored} runs past the payload"):
        decode(payload, A)


def test_rejects_trailing_bytes():
    with pytest.raises(CodecError, match="3 trailing bytes after the last tensor"):
        decode(good_payload() + b"xyz", A)


def test_rejects_raw_of_the_wrong_length():
    payload = build([entry(stored=20)], [RAW_A.tobytes()[:20]])
    with pytest.raises(CodecError, match="tensor 'a': 20 bytes decoded, 24 expected"):
        decode(payload, A)


def test_rejects_unknown_codec():
    payload = build([entry(codec="brotli")], [RAW_A.tobytes()])
    with pytest.raises(CodecError, match="tensor 'a': unknown codec 'brotli'"):
        decode(payload, A)


def zstd_payload(blob: bytes) -> bytes:
    return build([entry(codec="zstd", stored=len(blob))], [blob])


def test_rejects_corrupt_zstd():
    blob = zstandard.ZstdCompressor().compress(np.zeros((2, 3), np.float32).tobytes())
    assert decode(zstd_payload(blob), A)["a"].sum() == 0  # the well-formed one decodes
    for bad in (b"\x00" * len(blob), blob[:-3], blob[:4] + bytes([blob[4] ^ 0xFF]) + blob[5:], b"garbage!"):
        with pytest.raises(CodecError, match="tensor 'a': zstd data is corrupt|tensor 'a': .* bytes decoded"):
            decode(zstd_payload(bad), A)


def test_rejects_zstd_frame_with_data_after_it():
    blob = zstandard.ZstdCompressor().compress(RAW_A.tobytes())
    with pytest.raises(CodecError, match="tensor 'a': zstd data is corrupt"):
        decode(zstd_payload(blob + b"\x00\x01\x02"), A)


def test_rejects_zstd_of_the_wrong_size():
    small = zstandard.ZstdCompressor().compress(b"\0" * 12)
    with pytest.raises(CodecError, match="tensor 'a'"):
        decode(zstd_payload(small), A)


def peak_allocation(fn) -> int:
    """Peak bytes Python allocated while ``fn`` ran (the zstd output buffer is a Python bytes)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def rejects(payload: bytes, expected, match: str):
    def run():
        with pytest.raises(CodecError, match=match):
            decode(payload, expected)

    return run


BOMB_SIZE = 64 << 20  # 64 MiB of zeros compress to a few KiB


def test_rejects_decompression_bomb_with_declared_size():
    # the frame declares 64 MiB; the plan expects 24 bytes. Nothing near 64 MiB may be allocated.
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * BOMB_SIZE)
    assert len(bomb) < 10_000 and zstandard.frame_content_size(bomb) == BOMB_SIZE
    peak = peak_allocation(rejects(zstd_payload(bomb), A, f"tensor 'a': zstd frame declares {BOMB_SIZE} bytes, 24 expected"))
    assert peak < 1 << 20


def test_rejects_decompression_bomb_without_declared_size():
    bomb = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(b"\0" * BOMB_SIZE)
    assert zstandard.frame_content_size(bomb) == -1
    assert peak_allocation(rejects(zstd_payload(bomb), A, "tensor 'a': zstd data is corrupt")) < 1 << 20


@pytest.mark.parametrize("declared", [True, False])
def test_rejects_bomb_for_an_empty_tensor(declared):
    # an empty tensor expects 0 bytes, and max_output_size=0 means "no limit" to zstandard
    bomb = zstandard.ZstdCompressor(level=3, write_content_size=declared).compress(b"\0" * BOMB_SIZE)
    payload = build([entry(shape=(0,), codec="zstd", stored=len(bomb))], [bomb])
    assert peak_allocation(rejects(payload, {"a": ("float32", (0,))}, "tensor 'a'")) < 1 << 20


# --------------------------------------------------------------------------- fuzzing

FUZZ_TENSORS = {
    "x__q": (np.arange(96, dtype=np.uint8) % 7).reshape(2, 3, 16),
    "x__scale": np.float32(0.5),
    "x__zero_point": np.uint8(128),
    "noise": np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32),
}
FUZZ_EXPECTED = expected_of(FUZZ_TENSORS)
FUZZ_PAYLOAD = encode(FUZZ_TENSORS)


def decode_or_codec_error(payload: bytes) -> None:
    try:
        out = decode(payload, FUZZ_EXPECTED)
    except CodecError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert set(out) == set(FUZZ_EXPECTED)
    for name, (dtype, shape) in FUZZ_EXPECTED.items():
        assert out[name].dtype == np.dtype(dtype) and out[name].shape == shape


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_PAYLOAD) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_byte_mutations(edits):
    payload = bytearray(FUZZ_PAYLOAD)
    for pos, byte in edits:
        payload[pos] = byte
    decode_or_codec_error(bytes(payload))


@FUZZ
@given(st.integers(0, len(FUZZ_PAYLOAD)), st.binary(max_size=16), st.integers(0, len(FUZZ_PAYLOAD)))
def test_fuzz_truncate_insert_delete(cut, inserted, at):
    payload = FUZZ_PAYLOAD[:cut]
    decode_or_codec_error(payload)
    decode_or_codec_error(payload[:at] + inserted + payload[at:])
    decode_or_codec_error(FUZZ_PAYLOAD[:at] + FUZZ_PAYLOAD[at + len(inserted):])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    decode_or_codec_error(data)
    decode_or_codec_error(MAGIC + bytes([VERSION]) + data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
entry_values = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(sorted(FUZZ_EXPECTED)) | json_values,
        "dtype": st.sampled_from(["uint8", "float32", "int64"]) | json_values,
        "shape": st.sampled_from([[2, 3, 16], [], [4, 5], [0]]) | json_values,
        "codec": st.sampled_from(["raw", "zstd", "lz4"]) | json_values,
        "stored": st.integers(-5, 200) | json_values,
    },
)


@FUZZ
@given(st.lists(entry_values | json_values, max_size=5), st.binary(max_size=120))
def test_fuzz_headers(entries, body):
    """Any JSON header, well-formed or not, decodes to the expected tensors or raises CodecError."""
    decode_or_codec_error(build(entries, [body]))
    decode_or_codec_error(build([], [], header=json.dumps(entries).encode()))


def _post_relu(shape=(1, 32, 28, 28), seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal(shape), 0)
    x[:, ::2] = 0
    return np.clip(np.round(x / x.max() * 255), 0, 255).astype(np.uint8)


def test_sparse_layout_is_chosen_for_post_relu_symbols_and_round_trips():
    import zstandard

    q = _post_relu()
    payload = encode({"q": q})
    version, header, _ = read_header(payload)
    assert header["tensors"][0]["codec"] == "sparse-zstd"
    assert header["tensors"][0]["stored"] < len(zstandard.ZstdCompressor(level=3).compress(q.tobytes()))
    assert np.array_equal(decode(payload, {"q": ("uint8", q.shape)})["q"], q)
    dense = np.arange(4096, dtype=np.uint8).reshape(64, 64) | 1  # no zeros: stays dense
    assert read_header(encode({"d": dense}))[1]["tensors"][0]["codec"] != "sparse-zstd"


def test_sparse_block_whose_bitmap_disagrees_is_rejected():
    import zstandard

    q = _post_relu()
    payload = bytearray(encode({"q": q}))
    version, header, offset = read_header(bytes(payload))
    flat = q.reshape(-1)
    mask = np.packbits(flat != 0).tobytes()
    lying = zstandard.ZstdCompressor().compress(mask + flat[flat != 0].tobytes()[:-3])  # 3 values short
    header["tensors"][0]["stored"] = len(lying)
    head = json.dumps(header).encode()
    forged = b"SPLC" + bytes([2]) + len(head).to_bytes(4, "little") + head + lying
    with pytest.raises(CodecError, match="its bitmap says"):
        decode(forged, {"q": ("uint8", q.shape)})
    bomb = zstandard.ZstdCompressor().compress(b"\xff" * (q.size * 3))
    header["tensors"][0]["stored"] = len(bomb)
    head = json.dumps(header).encode()
    with pytest.raises(CodecError, match="declares"):
        decode(b"SPLC" + bytes([2]) + len(head).to_bytes(4, "little") + head + bomb, {"q": ("uint8", q.shape)})
