"""The ans entropy coder: per-channel static tables from calibration, in the wire format beside zstd."""

from __future__ import annotations

import numpy as np
import pytest

from splitc.cost import quantizers as C
from splitc.runtimes import ans
from splitc.runtimes.wire import CodecError, decode, encode, read_header

needs_ans = pytest.mark.skipif(not ans.available(), reason="constriction is not installed (pip install 'splitc[ans]')")


def _symbols(rng, shape=(1, 6, 20, 20), spread=(1, 2, 4, 8, 16, 32)):
    """Per channel a different width around a different centre: per-channel tables pay."""
    q = np.stack([np.clip(np.rint(rng.normal(40 + 30 * c, s, shape[2:])), 0, 255) for c, s in enumerate(spread)])
    return q[None].astype(np.uint8)


def _entropy_bits(q: np.ndarray) -> float:
    bits = 0.0
    for row in np.moveaxis(q, 1, 0).reshape(q.shape[1], -1):
        p = np.bincount(row, minlength=256) / row.size
        p = p[p > 0]
        bits -= float((p * np.log2(p)).sum()) * row.size
    return bits


@needs_ans
def test_coder_round_trips_and_codes_within_2_percent_of_the_symbols_entropy():
    rng = np.random.default_rng(0)
    fit = np.concatenate([_symbols(rng) for _ in range(30)], axis=2)
    model = ans.AnsModel(ans.fit_tables(fit, 256, per_channel=True))
    q = np.concatenate([_symbols(rng) for _ in range(20)], axis=2)  # held out, enough symbols for an honest entropy
    blob = model.encode(q)
    np.testing.assert_array_equal(model.decode(blob, q.shape), q)
    assert len(blob) * 8 <= 1.02 * _entropy_bits(q) + 64
    assert len(blob) * 8 <= 1.001 * model.bits(q) + 64  # the coder itself: at the model's cross-entropy
    # per-channel tables beat one table for the tensor on these channels
    one = ans.AnsModel(ans.fit_tables(fit, 256, per_channel=False))
    assert len(blob) < 0.9 * len(one.encode(q))


@needs_ans
def test_symbols_never_seen_in_calibration_still_code():
    fit = np.full((1, 2, 50), 7, np.uint8)
    model = ans.AnsModel(ans.fit_tables(fit, 16, per_channel=True))
    q = np.array([[[7, 0, 15, 7], [7, 7, 9, 3]]], np.uint8)
    np.testing.assert_array_equal(model.decode(model.encode(q), q.shape), q)
    with pytest.raises(ans.AnsError, match="outside the alphabet"):
        model.encode(np.array([[[16, 0, 0, 0], [0, 0, 0, 0]]], np.uint8))


@needs_ans
def test_wire_records_the_coder_and_checks_the_plan_tables():
    rng = np.random.default_rng(1)
    q = _symbols(rng)
    models = {"t": ans.AnsModel(ans.fit_tables(np.concatenate([_symbols(rng) for _ in range(10)], axis=2), 256, True))}
    p = encode({"t": q}, plan="fp", entropy="ans", models=models)
    assert read_header(p)[1]["tensors"][0]["codec"] == "ans"
    assert len(p) < len(encode({"t": q}, plan="fp"))  # smaller than zstd
    np.testing.assert_array_equal(decode(p, {"t": ("uint8", q.shape)}, plan="fp", models=models)["t"], q)
    with pytest.raises(CodecError, match="no ans tables"):
        decode(p, {"t": ("uint8", q.shape)}, plan="fp")
    with pytest.raises(CodecError, match="no ans tables of 16"):  # the plan says 4-bit symbols: the tables must match
        decode(encode({"t": q & 15}, plan="fp", bits={"t": 4}, entropy="ans", models=models),
               {"t": ("uint8", q.shape, 4)}, plan="fp", models=models)


def test_without_constriction_the_sender_falls_back_to_zstd_and_says_so(monkeypatch):
    q = _symbols(np.random.default_rng(2))
    models = {"t": ans.AnsModel(ans.fit_tables(q, 256, True))}
    monkeypatch.setattr(ans, "_constriction", None)
    p = encode({"t": q}, plan="fp", entropy="ans", models=models)
    assert read_header(p)[1]["tensors"][0]["codec"] == "zstd"
    np.testing.assert_array_equal(decode(p, {"t": ("uint8", q.shape)}, plan="fp", models=models)["t"], q)


@pytest.mark.parametrize("entry, match", [
    ({"alphabet": 3, "axis": None, "tables": [[0, [1]]]}, "alphabet"),
    ({"alphabet": 16, "axis": None, "tables": [[0, [1]], [0, [1]]]}, "one when axis is null"),
    ({"alphabet": 16, "axis": 1, "tables": [[10, [1] * 7]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [[0, [-1]]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [[0, [1.5]]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [[0, [2 ** 70]]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [[0, [[1], [2]]]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [[0, []]]}, "does not fit"),
    ({"alphabet": 16, "axis": 1, "tables": [["0", [1]]]}, "first symbol"),
    ("tables", "object"),
])
def test_plan_tables_are_validated(entry, match):
    with pytest.raises(ans.AnsError, match=match):
        ans.AnsModel(entry)


def test_step_codec_uses_a_uniform_step_of_f_standard_deviations_with_zero_exact():
    rng = np.random.default_rng(3)
    x = [(rng.standard_normal((1, 4, 8, 8)) * np.array([1, 2, 4, 8]).reshape(1, 4, 1, 1) + 0.5).astype(np.float32) for _ in range(20)]
    tc = C.fit(C.parse_codec("int8-channel-step0.5+ans"), x)
    std = np.concatenate([C.channel_view(a, True) for a in x], axis=1).std(axis=1)
    np.testing.assert_allclose(tc.scale, 0.5 * std, rtol=1e-5)
    assert np.all(C.dequantize(C.quantize(np.zeros((1, 4, 1, 1), np.float32), tc), tc) == 0)
    assert tc.ans["axis"] == 1 and len(tc.ans["tables"]) == 4 and tc.name == "int8-channel-step0.5+ans"
    assert tc.plan_entry()["ans"] is tc.ans
    with pytest.raises(Exception, match="0 < f <= 64"):
        C.parse_codec("int8-step0+ans")


@needs_ans
def test_compiled_plan_carries_the_tables_and_the_runtime_codes_with_them(tmp_path):
    from conftest import save_model

    from splitc.compiler import CompileOptions, compile_model, import_model
    from splitc.runtimes.ort import SplitModel, synthetic_inputs
    from splitc.tools import zoo

    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    spec = import_model(path).graph.inputs[0]
    np.savez(tmp_path / "c.npz", **{spec.name: np.random.default_rng(0).standard_normal((6, *spec.shape)).astype(np.float32)})
    sent = {}
    for boundary in ("int8-channel-step0.5+ans", "int8-channel-step0.5+zstd"):
        out = tmp_path / boundary
        plan = compile_model(path, out, CompileOptions(link="4g", boundary=boundary, calibrate=str(tmp_path / "c.npz"))).plan
        hop = next(b for b in plan["boundary"] if b["tensor"] == "bottleneck")
        assert hop["codec"] == boundary and ("ans" in hop["quant"]) == boundary.endswith("+ans")
        run = SplitModel(out).run(synthetic_inputs(SplitModel(out).inputs))
        sent[boundary] = (run.bytes_up, hop["encoded_bytes"])
    ans_bytes, ans_predicted = sent["int8-channel-step0.5+ans"]
    assert ans_bytes < 0.8 * sent["int8-channel-step0.5+zstd"][0]
    assert abs(ans_predicted - ans_bytes) <= 0.15 * ans_bytes  # the plan prices what the runtime sends


@needs_ans
def test_calibration_prices_ans_payloads_at_what_the_coder_writes():
    from splitc.cost.calibrate import payload, payload_bytes

    rng = np.random.default_rng(5)
    x = [(rng.standard_normal((1, 5, 12, 12)) * np.arange(1, 6).reshape(1, 5, 1, 1)).astype(np.float32) for _ in range(8)]
    for spec in ("int8-step0.5+ans", "int4-channel-step0.25+ans"):
        tc = C.fit(C.parse_codec(spec), x[:6])
        for a in x[6:]:
            q = C.quantize(a, tc)
            real = len(payload(q, tc))
            assert abs(payload_bytes(q, tc) - real) <= 8 + real // 1000  # a word or two: fixed-point probabilities


@needs_ans
def test_ans_size_from_a_spread_subset_is_within_2_percent():
    from splitc.cost.calibrate import payload, payload_bytes, spread_subset

    rng = np.random.default_rng(6)
    x = [(rng.standard_normal((1, 4, 128, 128)) * np.arange(1, 5).reshape(1, 4, 1, 1)).astype(np.float32) for _ in range(3)]
    tc = C.fit(C.parse_codec("int8-step0.25+ans"), x[:2])
    sub = spread_subset(x[2], budget=4096)
    assert sub.size <= 2 * 4096 and sub.shape[:2] == (1, 4)
    real = len(payload(C.quantize(x[2], tc), tc))
    assert abs(payload_bytes(C.quantize(sub, tc), tc, shape=x[2].shape) - real) <= 0.02 * real


@pytest.mark.parametrize("alphabet,per_channel", [(256, True), (256, False), (16, True), (4, False)])
def test_tables_count_each_channel_and_bits_is_the_cross_entropy(alphabet, per_channel):
    """fit_tables and AnsModel.bits count all channels in one pass: the same numbers as one channel at a time."""
    rng = np.random.default_rng(3)
    q = np.stack([rng.integers(c, c + 3 + 2 * c, (2, 50)) for c in range(5)], axis=1).astype(np.uint8)  # (2, 5, 50)
    q[0, 1, :3] = alphabet - 1 if alphabet < 256 else 255
    if alphabet < 256:
        q[1, 2, 0] = 200  # outside the alphabet: left out of the counts
    entry = ans.fit_tables(q, alphabet, per_channel)
    rows = np.moveaxis(q, 1, 0).reshape(5, -1) if per_channel else q.reshape(1, -1)
    assert len(entry["tables"]) == len(rows)
    for (first, counts), row in zip(entry["tables"], rows):
        hist = np.bincount(row[row < alphabet], minlength=alphabet)
        near = np.convolve(hist > 0, np.ones(5), "same")[:alphabet] > 0  # within 2 of a symbol seen
        want = 2 * hist + near
        nz = np.flatnonzero(want)
        assert first == nz[0] and counts == want[nz[0]:nz[-1] + 1].tolist()
    model = ans.AnsModel(entry)
    probe = np.minimum(q, alphabet - 1)
    p = model.probabilities(np.float32)
    tables = np.arange(5)[None, :, None] if per_channel else np.zeros((1, 1, 1), int)
    assert model.bits(probe) == pytest.approx(float(-np.log2(p[tables, probe]).astype(np.float64).sum()), rel=1e-6)


@needs_ans
def test_model_from_the_fit_codes_like_the_model_from_the_plan_lists():
    """fit_tables hands its count array to AnsModel (no re-reading); a plan's JSON lists must give the same coder."""
    import json

    rng = np.random.default_rng(4)
    entry = ans.fit_tables(np.concatenate([_symbols(rng) for _ in range(5)], axis=2), 256, per_channel=True)
    from_fit, from_plan = ans.AnsModel(entry), ans.AnsModel(json.loads(json.dumps(entry)))
    np.testing.assert_array_equal(from_fit.probabilities(), from_plan.probabilities())
    q = _symbols(rng)
    assert from_fit.encode(q) == from_plan.encode(q) and from_fit.bits(q) == from_plan.bits(q)
    entry.counts = None  # dropped: the lists again
    np.testing.assert_array_equal(ans.AnsModel(entry).probabilities(), from_plan.probabilities())
