"""PCA (Karhunen-Loeve) bottleneck codec: ``pca<k>+<static codec>`` compiled, split and run."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import save_model

from splitc.cost import quantizers as C
from splitc.tools import zoo
from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcError
from splitc.runtimes.ort import SplitModel, session


def test_pca_spec_parsing_and_numpy_round_trip():
    s = C.parse_codec("pca8+int8-channel-static")
    assert (s.kind, s.bits, s.per_channel, s.pca) == ("static", 8, True, 8)
    assert C.parse_codec("pca0.25+int4-channel+lz4").pca == 0.25 and C.parse_codec("pca0.25+int4-channel+lz4").entropy == "lz4"
    for bad in ("pca8", "pca8+int8", "pca0+int8-static", "pca1.5+int4"):
        with pytest.raises(SplitcError, match="--boundary"):
            C.parse_codec(bad)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 3, 10, 10)).astype(np.float32)  # rank-3 signal in 16 channels
    x = np.einsum("ck,nkhw->nchw", rng.standard_normal((16, 3)).astype(np.float32), z) + 2.0
    tc = C.fit(C.parse_codec("pca3+int8-channel-static"), [x])
    assert tc.basis.shape == (3, 16) and tc.explained > 0.999 and tc.plan_entry()["pca"]["k"] == 3
    q = C.quantize(x, tc)
    assert q.shape == (6, 3, 10, 10) and tc.wire_shape(x.shape) == (6, 3, 10, 10)
    y = C.dequantize(q, tc)
    assert y.shape == x.shape and np.abs(y - x).max() < 0.05 * np.abs(x).max()
    flat = C.fit(C.parse_codec("pca3+int8-channel-static"), [x.reshape(6, 16, 100)])  # not 4-D: plain codec
    assert flat.basis is None and flat.name == "int8-channel-static+zstd"


def _compile_and_run(tmp_path, model, calib, boundary):
    out = tmp_path / boundary.replace("+", "_")
    result = compile_model(model, out, CompileOptions(link="4g", boundary=boundary, calibrate=str(calib)))
    split = SplitModel(out, optimization="disable")
    return result, split, out


def test_pca_bottleneck_compiles_splits_and_runs(tmp_path):
    model = save_model(zoo.bottlenet(), tmp_path / "bottlenet.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", image=x)
    ref_sess = session(str(model), "disable")
    feeds = [{"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(2)]
    refs = [ref_sess.run(None, f)[0] for f in feeds]

    def error(split):
        return max(float(np.abs(next(iter(split.run(f).outputs.values())) - r).max()) for f, r in zip(feeds, refs))

    res8, split8, _ = _compile_and_run(tmp_path, model, tmp_path / "calib.npz", "int8-channel-static")
    assert res8.plan["cut"] == ["bottleneck"]
    # k = C = 12: a rotation; the error stays close to the plain int8 codec's
    res_full, split_full, out_full = _compile_and_run(tmp_path, model, tmp_path / "calib.npz", "pca12+int8-channel-static")
    hop = next(b for b in res_full.plan["boundary"] if b["tensor"] == "bottleneck")
    assert hop["quant"]["pca"]["k"] == 12 and hop["quant"]["pca"]["explained_variance"] > 0.999
    assert "basis" not in json.dumps(hop["quant"])  # the basis lives in the ONNX parts only
    e8, efull = error(split8), error(split_full)
    scale = max(float(np.abs(r).max()) for r in refs)
    assert efull <= 2 * e8 + 1e-3 * scale
    # k = 4 < C: 4 channels cross; head ends Conv -> QuantizeLinear, tail starts DequantizeLinear -> Conv
    res4, split4, out4 = _compile_and_run(tmp_path, model, tmp_path / "calib.npz", "pca4+int8-channel-static")
    hop = next(b for b in res4.plan["boundary"] if b["tensor"] == "bottleneck")
    assert hop["wire"][0]["shape"] == [1, 4, 28, 28] and hop["quant"]["pca"]["k"] == 4 and len(hop["quant"]["scale"]) == 4
    parts = sorted(out4.rglob("*.onnx"))
    protos = [onnx.load(str(p)) for p in parts]
    head = next(p for p in protos if any(o.name == "bottleneck__q" for o in p.graph.output))
    tail = next(p for p in protos if any(i.name == "bottleneck__q" for i in p.graph.input))
    producer = {o: n for n in head.graph.node for o in n.output}
    qnode = producer["bottleneck__q"]
    assert qnode.op_type == "QuantizeLinear" and producer[qnode.input[0]].op_type == "Conv"
    w = next(n for n in head.graph.node if n.name == "bottleneck__pca_w")
    assert tuple(onnx.numpy_helper.to_array(w.attribute[0].t).shape) == (4, 12, 1, 1)
    readers = [n for n in tail.graph.node if "bottleneck__q" in n.input]
    assert [n.op_type for n in readers] == ["DequantizeLinear"]
    assert [n.op_type for n in tail.graph.node if readers[0].output[0] in n.input] == ["Conv"]
    got = split4.run(feeds[0])
    assert got.bytes_up < 4 * 28 * 28 + 300
