"""Calibrated boundary codecs: bit-packing, the graph's quantization vs numpy, wire v2 checks, delta streams,
and compile + run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_split, save_model
from hypothesis import given, settings
from hypothesis import strategies as st

from splitc.cost import quantizers as C
from splitc.tools import zoo
from splitc.cli.main import main
from splitc.errors import SplitcError
from splitc.runtimes.wire import CodecError, decode, encode, pack_bits, packed_size, unpack_bits
from splitc.runtimes.delta import DeltaDecoder, DeltaEncoder, StreamGap


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.integers(0, 70), st.integers(0, 2**32 - 1))
def test_bit_packing_is_exact(bits, n, seed):
    q = np.random.default_rng(seed).integers(0, 1 << bits, n, dtype=np.uint8)
    packed = pack_bits(q, bits)
    assert len(packed) == packed_size(n, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, n), q)


def test_bit_packing_layout_and_range_check():
    assert pack_bits(np.array([1, 2, 3], np.uint8), 4) == bytes([0x12, 0x30])
    assert pack_bits(np.array([3, 0, 1, 2, 1], np.uint8), 2) == bytes([0b11000110, 0b01000000])
    with pytest.raises(ValueError, match="symbols of 2 bits"):
        pack_bits(np.array([4], np.uint8), 2)


@pytest.mark.parametrize("bits", [2, 4])
def test_wire_v2_round_trip_with_bits_and_plan(bits):
    q = np.random.default_rng(0).integers(0, 1 << bits, (1, 3, 50, 70), dtype=np.uint8)
    payload = encode({"t__q": q}, bits={"t__q": bits}, plan="abc")
    out = decode(payload, {"t__q": ("uint8", q.shape, bits)}, plan="abc")
    np.testing.assert_array_equal(out["t__q"], q)
    assert len(payload) < q.size  # packed below one byte per value
    with pytest.raises(CodecError, match="made for plan 'abc'.*plan 'xyz'"):
        decode(payload, {"t__q": ("uint8", q.shape, bits)}, plan="xyz")
    with pytest.raises(CodecError, match=f"packs {bits} bits per value, the plan expects 8"):
        decode(payload, {"t__q": ("uint8", q.shape)})


def test_bits_bound_decompression():
    # a zstd frame that inflates to more than the packed size the plan allows is refused before inflating
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\0" * (1 << 20))
    head = json.dumps({"plan": None, "frame": 0, "key": True,
                       "tensors": [{"name": "q", "dtype": "uint8", "shape": [64], "bits": 2, "codec": "zstd", "stored": len(bomb)}]}).encode()
    from splitc.runtimes.wire import assemble

    payload = assemble(head, [bomb])
    with pytest.raises(CodecError, match="declares 1048576 bytes, 16 expected"):
        decode(payload, {"q": ("uint8", (64,), 2)})


def test_numpy_quantization_matches_calibrated_ranges():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((4, 8, 6, 6)).astype(np.float32), 0) * np.arange(1, 9, dtype=np.float32)[None, :, None, None]
    for spec in ("int8-channel", "int4-channel", "int2-channel", "int4", "int8-static-minmax"):
        tc = C.fit(C.parse_codec(spec), [x])
        q = C.quantize(x, tc)
        assert q.dtype == np.uint8 and int(q.max()) < 1 << tc.bits
        assert np.all(q[x == 0] == np.broadcast_to(tc.zero_point.reshape(tc.broadcast_shape(4)), x.shape)[x == 0])  # 0 is exact
        err = np.abs(C.dequantize(q, tc) - x)
        inside = x <= (((1 << tc.bits) - 1 - tc.zero_point.astype(np.float32)) * tc.scale).reshape(tc.broadcast_shape(4))
        assert np.all(err[inside] <= np.broadcast_to(tc.scale.reshape(tc.broadcast_shape(4)), x.shape)[inside] * 0.5001)


def test_codec_spec_parsing():
    assert C.parse_codec("int4-channel") == C.CodecSpec("int4-channel", "static", 4, True, "mse", "zstd")
    assert C.parse_codec("int8").kind == "dynamic" and C.parse_codec("auto").kind == "auto"
    assert C.parse_codec("int2-pct+lz4").entropy == "lz4"
    for bad in ("int3", "int8-foo", "pca", "int4-channel+gzip"):
        with pytest.raises(SplitcError, match="--boundary"):
            C.parse_codec(bad)
    assert C.parse_budget("top1=0.99,cosine=0.999") == {"top1": 0.99, "cosine": 0.999}
    with pytest.raises(SplitcError, match="--accuracy-budget"):
        C.parse_budget("top5=0.9")


def test_delta_stream_round_trip_gap_and_resync():
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.integers(0, 16, (2, 50)) + (k // 3), 0, 15).astype(np.uint8) for k in range(8)]
    enc = DeltaEncoder(bits={"q": 4}, key_interval=4, plan="p")
    dec = DeltaDecoder({"q": ("uint8", (2, 50), 4)}, plan="p")
    payloads = [enc.encode({"q": f}) for f in frames]
    for f, p in zip(frames[:3], payloads[:3]):
        np.testing.assert_array_equal(dec.decode(p)["q"], f)
    with pytest.raises(StreamGap, match="frame 3 is a delta on frame 2, but the last frame decoded here is none"):
        dec.decode(payloads[3]) if False else None
        dec2 = DeltaDecoder({"q": ("uint8", (2, 50), 4)}, plan="p")
        dec2.decode(payloads[3])
    with pytest.raises(StreamGap):  # frame 3 lost: frame 4 is a key frame (interval 4), frame 5 after a gap is not
        dec.decode(payloads[5])
    np.testing.assert_array_equal(dec.decode(payloads[4])["q"], frames[4])  # key frame: back in sync
    np.testing.assert_array_equal(dec.decode(payloads[5])["q"], frames[5])
    enc.request_key()
    p = enc.encode({"q": frames[0]})
    fresh = DeltaDecoder({"q": ("uint8", (2, 50), 4)}, plan="p")
    np.testing.assert_array_equal(fresh.decode(p)["q"], frames[0])


@pytest.mark.parametrize("boundary", ["int4-channel", "int2-channel", "int8-static"])
def test_split_runs_with_calibrated_codec(tmp_path, boundary):
    model = save_model(zoo.bottlenet(), tmp_path / "bottlenet.onnx")
    with pytest.warns(Warning, match="without --calibrate"):
        v = run_split(model, tmp_path / "out", boundary=boundary, link="4g")
    assert v.plan["cut"] == ["bottleneck"]
    hop = next(b for b in v.plan["boundary"] if b["tensor"] == "bottleneck")
    bits = int(boundary[3])
    assert hop["codec"].startswith(boundary) and [w["name"] for w in hop["wire"]] == ["bottleneck__q"]
    assert hop["wire"][0].get("bits", 8) == bits and hop["quant"]["bits"] == bits
    n = 12 * 28 * 28
    assert v.run.bytes_up < n * bits / 8 + 200  # bit-packed on the wire
    assert all(c.cosine > 0.99 for c in v.checks)


def test_cli_compile_and_run_int4_channel(tmp_path, capsys):
    model = save_model(zoo.bottlenet(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((6, 1, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", image=x)
    out = tmp_path / "out"
    assert main(["compile", str(model), "--link", "4g", "--boundary", "int4-channel", "--calibrate", str(tmp_path / "calib.npz"),
                 "-o", str(out), "-q", "--no-report"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["boundary_codec"] == "int4-channel" and plan["calibration"]["data"].endswith("calib.npz")
    capsys.readouterr()
    assert main(["run", str(out), "--samples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pass"] is None and report["bytes_up"] < 12 * 28 * 28 // 2 + 200  # lossy on synthetic inputs: no verdict


def test_delta_encoder_sends_a_key_frame_when_the_delta_codes_larger():
    """A scene cut: the difference of two unrelated frames codes larger than the new frame (smooth); with smaller=True
    the encoder sends the frame as a key frame, which any decoder takes."""
    smooth = np.tile(np.arange(100, dtype=np.uint8), (2, 1))
    noise = np.random.default_rng(0).integers(0, 256, (2, 100)).astype(np.uint8)
    for smaller, key_sent in ((False, False), (True, True)):
        enc = DeltaEncoder(plan="p", smaller=smaller)
        dec = DeltaDecoder({"q": ("uint8", (2, 100))}, plan="p")
        dec.decode(enc.encode({"q": noise}))
        cut = enc.encode({"q": smooth})
        np.testing.assert_array_equal(dec.decode(cut)["q"], smooth)
        assert (enc.last_key == 1) is key_sent
        if key_sent:  # a key frame: a decoder that never saw the stream takes it
            np.testing.assert_array_equal(DeltaDecoder({"q": ("uint8", (2, 100))}, plan="p").decode(cut)["q"], smooth)
