"""The wire codec: round trips, every rejection with its message, and a fuzzer."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.runtimes.wire import MAGIC, VERSION, CodecError, assemble, decode, encode, read_header

PREFIX = struct.Struct("<4sBII")  # magic, version, header length, crc32


def expected_of(tensors: dict[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (np.asarray(v).dtype.name, tuple(np.shape(v))) for k, v in tensors.items()}


def header_of(payload: bytes) -> dict:
    _, _, n, _ = PREFIX.unpack_from(payload)
    return json.loads(payload[PREFIX.size:PREFIX.size + n])


def build(entries: list, blobs: list[bytes], magic: bytes = MAGIC, version: int = VERSION, header: bytes | None = None) -> bytes:
    """A payload assembled by hand (with a valid checksum), to say exactly what is wrong with it."""
    head = header if header is not None else json.dumps({"tensors": entries}).encode()
    payload = assemble(head, blobs)
    return magic + bytes([version]) + payload[5:] if (magic, version) != (MAGIC, VERSION) else payload


def recrc(payload: bytes) -> bytes:
    """``payload`` with its crc32 field recomputed: what a forger (not line noise) sends."""
    body = payload[:9] + payload[13:]
    return payload[:9] + struct.pack("<I", zlib.crc32(body)) + payload[13:]


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
    magic, version, n, _ = PREFIX.unpack_from(payload)
    assert (magic, version) == (b"SPLC", 3)
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
    with pytest.raises(CodecError, match="payload of 5 bytes is shorter than the 13-byte prefix"):
        decode(good_payload()[:5], A)
    with pytest.raises(CodecError, match="payload of 0 bytes"):
        decode(b"", A)


def test_rejects_bad_magic():
    with pytest.raises(CodecError, match=r"not a splitc payload \(bad magic\)"):
        decode(b"ONNX" + good_payload()[4:], A)


@pytest.mark.parametrize("version", [4, 255])
def test_rejects_unknown_version(version):
    payload = bytearray(good_payload())
    payload[4] = version
    with pytest.raises(CodecError, match=rf"payload version {version} is not supported \(this runtime reads 3\)"):
        decode(bytes(payload), A)


@pytest.mark.parametrize("version", [1, 2])
def test_rejects_downgraded_version_even_with_a_valid_checksum(version):
    # version 1 skipped the plan fingerprint check: a payload relabelled 1 must not slip past it
    payload = encode({"a": RAW_A}, plan="a" * 16)
    forged = recrc(payload[:4] + bytes([version]) + payload[5:])
    with pytest.raises(CodecError, match=f"payload version {version} is not supported.*no checksum"):
        decode(forged, A, plan="b" * 16)
    with pytest.raises(CodecError, match=f"payload version {version}"):
        decode(forged, A)


def test_rejects_header_length_past_end():
    payload = good_payload()
    bad = PREFIX.pack(MAGIC, VERSION, len(payload), 0) + payload[PREFIX.size:]
    with pytest.raises(CodecError, match=f"header length {len(payload)} runs past the payload \\({len(payload)} bytes\\)"):
        decode(bad, A)
    huge = PREFIX.pack(MAGIC, VERSION, 0xFFFFFFFF, 0) + payload[PREFIX.size:]
    with pytest.raises(CodecError, match="header length 4294967295 runs past"):
        decode(huge, A)


@pytest.mark.parametrize("cut", [12, 30, -1, -10], ids=["in-header", "in-header-2", "last-byte", "in-blob"])
def test_rejects_truncated_payload(cut):
    with pytest.raises(CodecError):
        decode(good_payload()[:cut], A)


def test_truncated_blob_message():
    with pytest.raises(CodecError, match="tensor 'a': stored length 24 runs past the payload"):
        decode(recrc(good_payload()[:-1]), A)
    with pytest.raises(CodecError, match="fails its crc32 check"):  # cut in transit rather than forged
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
        decode(recrc(good_payload() + b"xyz"), A)


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
    decode_or_codec_error(recrc(bytes(payload)))  # past the checksum: the parser itself


@FUZZ
@given(st.integers(0, len(FUZZ_PAYLOAD)), st.binary(max_size=16), st.integers(0, len(FUZZ_PAYLOAD)))
def test_fuzz_truncate_insert_delete(cut, inserted, at):
    payload = FUZZ_PAYLOAD[:cut]
    for mutated in (payload, payload[:at] + inserted + payload[at:], FUZZ_PAYLOAD[:at] + FUZZ_PAYLOAD[at + len(inserted):]):
        decode_or_codec_error(mutated)
        if len(mutated) >= PREFIX.size:
            decode_or_codec_error(recrc(mutated))


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
    forged = assemble(head, [lying])
    with pytest.raises(CodecError, match="its bitmap says"):
        decode(forged, {"q": ("uint8", q.shape)})
    bomb = zstandard.ZstdCompressor().compress(b"\xff" * (q.size * 3))
    header["tensors"][0]["stored"] = len(bomb)
    head = json.dumps(header).encode()
    with pytest.raises(CodecError, match="declares"):
        decode(assemble(head, [bomb]), {"q": ("uint8", q.shape)})


# --------------------------------------------------------------------------- hardening (issue 11)

def nested_header(depth: int) -> bytes:
    return b'{"tensors": [], "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [9, 1000, 100_000])
def test_deeply_nested_header_is_a_codec_error(depth):
    # a 2 KB payload nesting 1,000 brackets raised RecursionError from decode, read_header and DeltaDecoder.decode
    from splitc.runtimes.delta import DeltaDecoder

    payload = assemble(nested_header(depth))
    for call in (lambda: decode(payload, {}), lambda: read_header(payload), lambda: DeltaDecoder({}).decode(payload)):
        with pytest.raises(CodecError, match=f"nested {depth + 1} deep, more than the 8 allowed"):
            call()


def test_header_within_the_depth_bound_still_decodes():
    assert decode(assemble(nested_header(6)), {}) == {}


@pytest.mark.parametrize(
    "spec",
    [("float32", (2**62, 2**62)), ("float32", (2**40,)), ("float32", (-1, 6)), ("float32",), "float32", None, 5,
     ("complex64", (2, 3)), (["float32"], (2, 3)), ("float32", (2, 3), 3), ("float32", (2, 3), 4), ("uint8", (6,), 8, 1),
     ("float32", "23"), ("float32", (2.0, 3)), ("float32", (True, 6)), ("uint8", (1,) * 33)],
    ids=str,
)
def test_tampered_expected_spec_is_a_codec_error(spec):
    # these raised OverflowError, MemoryError, ValueError or TypeError: the spec comes from a plan.json
    with pytest.raises(CodecError, match="tensor 'a': expected spec"):
        decode(good_payload(), {"a": spec})


@FUZZ
@given(json_values, json_values)
def test_fuzz_expected_specs(spec, name):
    """Whatever the plan says a tensor is, decoding a payload raises CodecError or gives that tensor."""
    for expected in ({"a": spec}, {str(name): spec}, spec):
        try:
            out = decode(good_payload(), expected)
        except CodecError as e:
            assert "\n" not in str(e)
        else:
            assert out["a"].shape == tuple(expected["a"][1])


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8), lambda b: memoryview(b"xx" + b)[2:]],
                         ids=["bytearray", "memoryview", "numpy", "sliced-memoryview"])
def test_bytes_like_payloads_decode(wrap):
    payload = encode({"a": RAW_A}, plan="p" * 16)
    out = decode(wrap(payload), A, plan="p" * 16)
    np.testing.assert_array_equal(out["a"], RAW_A)
    assert read_header(wrap(payload))[1]["plan"] == "p" * 16


@pytest.mark.parametrize("payload", ["SPLC", 5, None, [83, 80]], ids=str)
def test_non_bytes_payload_is_a_codec_error(payload):
    with pytest.raises(CodecError, match="a payload is bytes-like"):
        decode(payload, A)


def test_checksum_catches_a_flip_the_parser_cannot_see():
    payload = bytearray(encode({"a": RAW_A}, entropy="raw"))
    payload[-1] ^= 0x01  # the last value's lowest mantissa bit: still a valid float32 array
    with pytest.raises(CodecError, match=r"payload of \d+ bytes fails its crc32 check: corrupted in transit"):
        decode(bytes(payload), A)
    assert decode(recrc(bytes(payload)), A)["a"].reshape(-1)[-1] != RAW_A.reshape(-1)[-1]  # so only the crc caught it


MUTATIONS = 20_000


def _mutations(payload: bytes, rng: np.random.Generator):
    """(kind, mutated payload): single bit flips, 1-4 random byte edits and truncations, in turn."""
    for i in range(MUTATIONS):
        data = bytearray(payload)
        kind = ("bit flip", "byte edits", "truncation")[i % 3]
        if kind == "bit flip":
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        elif kind == "byte edits":
            for _ in range(int(rng.integers(1, 5))):
                pos = int(rng.integers(len(data)))
                data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256  # always a change
        else:
            del data[int(rng.integers(len(data))):]
        yield kind, bytes(data)


def test_fuzz_20000_mutations_only_codec_errors_and_no_silent_corruption():
    """Bounded, seeded: every mutation of a 2 KB payload raises CodecError; none decodes silently (the crc32)."""
    from splitc.runtimes.delta import DeltaDecoder

    rng = np.random.default_rng(11)
    tensors = {**FUZZ_TENSORS, "dense": rng.standard_normal((16, 24)).astype(np.float32)}
    expected = expected_of(tensors)
    payload = encode(tensors, plan="f" * 16)
    assert 1500 < len(payload) < 2500
    silent = {"bit flip": 0, "byte edits": 0, "truncation": 0}
    escaped = []
    for kind, data in _mutations(payload, rng):
        try:
            decode(data, expected, plan="f" * 16)
            silent[kind] += 1
        except CodecError:
            pass
        except Exception as e:  # noqa: BLE001 - what this test is looking for
            escaped.append(f"{kind}: {type(e).__name__}: {e}")
    try:  # the stream decoder on a mutated key frame as well
        DeltaDecoder(expected, "f" * 16).decode(data)
    except CodecError:
        pass
    print(f"\n{MUTATIONS} mutations of a {len(payload)}-byte payload: decoded silently {silent}")
    assert not escaped, escaped[:5]
    assert silent == {"bit flip": 0, "byte edits": 0, "truncation": 0}


def test_fuzz_20000_forged_mutations_only_codec_errors():
    """The same mutations with the checksum recomputed (a forger, not line noise): the parser alone must hold."""
    rng = np.random.default_rng(12)
    payload = encode(FUZZ_TENSORS, plan="f" * 16)
    decoded, escaped = 0, []
    for kind, data in _mutations(payload, rng):
        if len(data) < PREFIX.size:
            data = data + bytes(PREFIX.size - len(data))
        try:
            decode(recrc(data), FUZZ_EXPECTED, plan="f" * 16)
            decoded += 1
        except CodecError as e:
            assert "\n" not in str(e)
        except Exception as e:  # noqa: BLE001
            escaped.append(f"{kind}: {type(e).__name__}: {e}")
    print(f"\n{MUTATIONS} forged mutations: {decoded} decoded (a value byte changed), the rest CodecError")
    assert not escaped, escaped[:5]


def test_image_payload_with_a_nested_header_is_a_codec_error():
    # the camera-frame container (splitc/runtimes/image.py) parsed its header unbounded: RecursionError
    from splitc.runtimes.image import _PREFIX as IMAGE_PREFIX, MAGIC as IMAGE_MAGIC, VERSION as IMAGE_VERSION
    from splitc.runtimes.image import ImageCodecError, unpack

    header = b"[" * 2000 + b"]" * 2000
    payload = IMAGE_PREFIX.pack(IMAGE_MAGIC, IMAGE_VERSION, len(header)) + header
    with pytest.raises(ImageCodecError, match="nested 2000 deep, more than the 4 allowed"):
        unpack(payload, None, None, None, 0)
