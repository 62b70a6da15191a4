"""The significance-context ans model (splitc/runtimes/ans_context.py): lossless, smaller on patchy sparse maps,
not used where it does not pay, validated like any plan entry, and reached by compile -> run."""

import json

import numpy as np
import pytest

from splitc.runtimes import ans
from splitc.runtimes import ans_context as sig

pytestmark = pytest.mark.skipif(not ans.available(), reason="constriction is not installed")


def patchy(n, c=6, h=7, w=9, seed=0):
    """Post-ReLU-like symbols: zero in 2x2 patches, some channels off for a whole frame, zero point 3 in channel 1."""
    rng = np.random.default_rng(seed)
    on = np.kron(rng.random((n, c, (h + 1) // 2, (w + 1) // 2)) < 0.45, np.ones((2, 2)))[:, :, :h, :w]
    on *= rng.random((n, c, 1, 1)) < 0.8
    q = np.where(on > 0, 1 + np.minimum(rng.geometric(0.3, size=on.shape), 40), 0)
    zero = np.zeros(c, np.uint8)
    zero[1] = 3
    q = np.where(q == 0, zero.reshape(1, -1, 1, 1), q + 3 * (np.arange(c) == 1).reshape(1, -1, 1, 1))
    return q.astype(np.uint8), zero


def test_context_is_lossless_and_smaller_on_patchy_maps():
    q, zero = patchy(60)
    entry = json.loads(json.dumps(ans.fit_tables(q[:40], 256, True, zero=zero)))  # as a plan carries it
    assert "significance" in entry and entry["significance"]["zero"][1] == 3
    plain = ans.AnsModel(json.loads(json.dumps(ans.fit_tables(q[:40], 256, True))))
    model = ans.AnsModel(entry)
    held = q[40:]
    ctx_bytes = sum(len(model.encode(held[i:i + 1])) for i in range(len(held)))
    plain_bytes = sum(len(plain.encode(held[i:i + 1])) for i in range(len(held)))
    assert ctx_bytes < 0.93 * plain_bytes  # patches: a zero next to zeros is cheap
    for k in (1, 3):  # one frame and a batch
        blob = model.encode(held[:k])
        assert np.array_equal(model.decode(blob, held[:k].shape), held[:k])
        assert abs(model.coded_bytes(held[:k]) - len(blob)) <= 8  # priced as coded


def test_contexts_read_the_left_and_upper_neighbours():
    z = np.zeros((1, 1, 2, 3), bool)
    z[0, 0, 0, 1] = True  # one zero at (0, 1)
    ctx = sig.contexts(z)[0, 0]
    # k = 2 x left_zero + above_zero; outside the map counts as zero
    assert ctx.tolist() == [[3, 1, 3], [2, 1, 0]]


def test_dense_maps_keep_the_plain_tables():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 40, size=(30, 4, 8, 8)).astype(np.uint8)  # iid: neighbours say nothing
    entry = ans.fit_tables(q, 256, True, zero=np.full(4, 20, np.uint8))
    assert "significance" not in entry
    assert "significance" not in ans.fit_tables(patchy(30)[0], 256, True)  # no zero symbols given: plain


OFF = [[3, 1]] * 6


@pytest.mark.parametrize("bad", [
    {"zero": [0, 0], "counts": [[[1, 1]] * 4] * 6, "off": OFF},  # too few zero symbols
    {"zero": [0] * 6, "counts": [[[1, -1]] * 4] * 6, "off": OFF},  # negative count
    {"zero": [300] + [0] * 5, "counts": [[[1, 1]] * 4] * 6, "off": OFF},  # zero symbol outside the alphabet
    {"zero": [0] * 6, "counts": [[[1, 1]] * 3] * 6, "off": OFF},  # three contexts
    {"zero": [0.5] * 6, "counts": [[[1, 1]] * 4] * 6, "off": OFF},  # not whole numbers
    {"zero": [0] * 6, "counts": [[[1, 1]] * 4] * 6, "off": [[1, 2**41]] * 6},  # a count past 2^40
    {"zero": [0] * 6, "counts": [[[1, 1]] * 4] * 6},  # no channel flags
    "nope",
])
def test_untrusted_significance_is_rejected(bad):
    q, zero = patchy(10)
    entry = json.loads(json.dumps(ans.fit_tables(q, 256, True, zero=zero)))
    good = dict(entry["significance"])
    ans.AnsModel(entry)  # as fitted: accepted
    entry["significance"] = bad
    with pytest.raises(ans.AnsError):
        ans.AnsModel(entry)
    assert set(good) == {"zero", "counts", "off"}


def test_wrong_shape_and_corrupt_data_are_errors():
    q, zero = patchy(20)
    model = ans.AnsModel(json.loads(json.dumps(ans.fit_tables(q, 256, True, zero=zero))))
    blob = model.encode(q[:1])
    with pytest.raises(ans.AnsError):
        model.decode(blob, (1, 6, 63))  # not a map
    with pytest.raises(ans.AnsError):
        model.encode(q[:1, :5])  # other channel count
    with pytest.raises(ans.AnsError):
        model.decode(blob[:-3], q[:1].shape)  # not whole words
    try:  # cut short: an error or other symbols, never a crash or a hang
        out = model.decode(blob[:4], q[:1].shape)
        assert out.shape == q[:1].shape
    except ans.AnsError:
        pass


def test_quantizer_fit_on_whole_maps_uses_the_context():
    from splitc.cost import quantizers as C

    rng = np.random.default_rng(2)
    on = np.kron(rng.random((24, 8, 4, 4)) < 0.4, np.ones((2, 2)))
    maps = [np.maximum(rng.normal(1.0, 1.0, size=(1, 8, 8, 8)), 0).astype(np.float32) * on[i:i + 1] for i in range(24)]
    tc = C.fit(C.parse_codec("int8-channel-step0.5+ctx"), maps, rank=4)
    assert "significance" in tc.ans and tc.name == "int8-channel-step0.5+ctx"
    assert "significance" not in C.fit(C.parse_codec("int8-channel-step0.5+ans"), maps, rank=4).ans
    sub = [np.moveaxis(m, 1, 0).reshape(8, -1)[None] for m in maps]  # scattered positions: no neighbours
    assert "significance" not in C.fit(C.parse_codec("int8-channel-step0.5+ctx"), sub, rank=4).ans
    q = C.quantize(maps[0], tc)
    model = ans.AnsModel(json.loads(json.dumps(tc.ans)))
    assert np.array_equal(model.decode(model.encode(q), q.shape), q)


def test_calibration_refits_a_sent_sparse_map_with_context_and_reprices_it(tmp_path):
    """The first fit sees scattered positions (no neighbours); once a plan sends the map, verify refits its tables on
    whole maps of the fitting samples, keeps the context, and prices the payload lower (what the coder writes)."""
    import onnx
    from onnx import TensorProto, helper

    from splitc.cost import quantizers as C
    from splitc.cost.calibrate import Calibration, measured_bytes
    from splitc.compiler import import_model

    w = np.random.default_rng(3).standard_normal((8, 8, 1, 1)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    model = import_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(4)
    samples = [{"x": (np.kron(rng.standard_normal((1, 8, 4, 4)), np.ones((4, 4)))
                      + 0.3 * rng.standard_normal((1, 8, 16, 16))).astype(np.float32)} for _ in range(12)]
    cal = Calibration(model, C.parse_codec("int8-channel-step0.25+ctx"), samples, {})
    before = cal.codecs["r"].measured_bytes
    assert "significance" not in cal.codecs["r"].ans
    assert cal.verify(["r"]) is True  # a price changed: the compiler re-solves
    tc = cal.codecs["r"]
    assert "significance" in tc.ans and tc.measured_bytes < 0.95 * before
    frames = [np.maximum(s["x"], 0) for s in cal.eval_set[:4]]
    assert tc.measured_bytes == measured_bytes([C.quantize(f, tc) for f in frames], tc)
    assert cal.verify(["r"]) is False  # once
    assert tc.coder_factor[0] >= 1.0 and tc.coder_factor[1] >= 1.0  # priced: never cheaper than the plain coder
    plain = Calibration(model, C.parse_codec("int8-channel-step0.25+ans"), samples, {})
    plain.verify(["r"])  # +ans keeps the fast plain tables
    assert "significance" not in plain.codecs["r"].ans and plain.codecs["r"].coder_factor == (1.0, 1.0)


def test_the_cost_graph_prices_a_slower_coder_by_its_factor():
    from splitc.cost.targets import Link
    from splitc.partition.costgraph import CNode, CostGraph, CTensor, _hop_vectors

    fast = CTensor("a", 0, (1,), False, 4000, 500)
    slow = CTensor("b", 0, (1,), False, 4000, 500, coder_factor=(3.0, 2.0))
    cg = CostGraph(("dev", "cloud"), (CNode("n0", "Conv", (1.0, 0.1)), CNode("n1", "Conv", (1.0, 0.1))), (fast, slow),
                   Link("l", 8e6, 8e6, 0.01), (1e6, 1e6), (2e6, 2e6))
    (ea, _, da), (eb, _, db) = cg.hop_parts(fast, 0, True), cg.hop_parts(slow, 0, True)
    assert (ea, da) == pytest.approx((4000 / 1e6, 4000 / 2e6)) and (eb, db) == pytest.approx((3 * ea, 2 * da))
    enc, _, dec = _hop_vectors(cg, 0, True)  # the vectorized pricing the solvers read agrees
    assert enc.tolist() == pytest.approx([ea, eb]) and dec.tolist() == pytest.approx([da, db])


def test_a_frame_with_every_channel_off_costs_only_its_flags():
    q, zero = patchy(40)
    model = ans.AnsModel(json.loads(json.dumps(ans.fit_tables(q, 256, True, zero=zero))))
    off = np.broadcast_to(zero.reshape(1, -1, 1, 1), (1, *q.shape[1:])).copy()
    blob = model.encode(off)
    assert len(blob) <= 8 and np.array_equal(model.decode(blob, off.shape), off)


def test_compile_and_run_with_ctx_sends_fewer_bytes_for_the_same_numbers(tmp_path):
    """bottlenet's post-ReLU bottleneck on blocky frames: +ctx is chosen, priced slower, and the split model computes
    exactly what the +ans split (same quantizer) computes, sending fewer bytes."""
    from conftest import save_model

    from splitc.compiler import CompileOptions, compile_model
    from splitc.runtimes.ort import SplitModel
    from splitc.tools import zoo

    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    x = np.kron(np.random.default_rng(0).standard_normal((12, 1, 3, 14, 14)), np.ones((16, 16))).astype(np.float32)
    np.savez(tmp_path / "c.npz", image=x)
    runs = {}
    for coder in ("ans", "ctx"):
        out = tmp_path / coder
        plan = compile_model(path, out, CompileOptions(link="4g", boundary=f"int8-channel-step0.5+{coder}",
                                                       calibrate=str(tmp_path / "c.npz"))).plan
        hop = next(b for b in plan["boundary"] if b["tensor"] == "bottleneck")
        runs[coder] = (hop, [SplitModel(out).run({"image": f}) for f in x[:3]])
    (h_ans, r_ans), (h_ctx, r_ctx) = runs["ans"], runs["ctx"]
    assert "significance" in h_ctx["quant"]["ans"] and "significance" not in h_ans["quant"]["ans"]
    assert min(h_ctx["quant"]["coder_factor"]) >= 1.0 and h_ctx["encode_s"] > h_ans["encode_s"]  # priced as measured
    assert h_ctx["quant"]["scale"] == h_ans["quant"]["scale"]
    for a, c in zip(r_ans, r_ctx):
        assert a.outputs.keys() == c.outputs.keys() and all(np.array_equal(a.outputs[k], c.outputs[k]) for k in a.outputs)
    assert sum(r.bytes_up for r in r_ctx) < 0.95 * sum(r.bytes_up for r in r_ans)
    # the remote runtime (splitc serve / run --remote) codes the hop as the in-process one does
    from splitc.runtimes.segment import Segment
    from splitc.runtimes.wire import read_header

    for coder in ("ans", "ctx"):
        seg = Segment(json.loads((tmp_path / coder / "plan.json").read_text()))
        hop = next(b for b in seg.up if b["tensor"] == "bottleneck")
        name = hop["wire"][0]["name"]
        q = np.random.default_rng(1).integers(0, 3, size=hop["wire"][0]["shape"]).astype(np.uint8)
        payload = seg.encode(hop, {name: q})
        assert read_header(payload)[1]["tensors"][0]["codec"] == "ans"
        assert np.array_equal(seg.decode(hop, payload)[name], q)


def test_random_payloads_decode_to_symbols_or_a_one_line_error():
    """Payloads are untrusted: any bytes give symbols of the plan's shape or an AnsError, never another exception."""
    q, zero = patchy(20)
    model = ans.AnsModel(json.loads(json.dumps(ans.fit_tables(q, 256, True, zero=zero))))
    rng = np.random.default_rng(7)
    good = model.encode(q[:1])
    for k in range(150):
        blob = (rng.integers(0, 256, size=4 * int(rng.integers(0, 64)), dtype=np.uint8).tobytes() if k % 2 else
                bytes(b ^ (1 << int(rng.integers(0, 8))) if i == int(rng.integers(0, len(good))) else b for i, b in enumerate(good)))
        try:
            out = model.decode(blob, q[:1].shape)
        except ans.AnsError as err:
            assert "\n" not in str(err)
        else:
            assert out.shape == q[:1].shape and out.dtype == np.uint8  # wrong symbols: the wire's checksum catches those
