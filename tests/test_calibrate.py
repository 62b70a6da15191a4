"""Calibration and the per-tensor codec choice of --boundary auto."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_model

from splitc.cost import quantizers as C
from splitc.tools import zoo
from splitc.ir.metadata import CODECS
from splitc.cost.calibrate import _probe_model, calibrate_codecs, candidates, load_samples, never_crosses
from splitc.compiler import CompileOptions, annotate, compile_model, import_model, resolve_targets
from splitc.errors import SplitcError
from splitc.runtimes.ort import session


def _model(tmp_path):
    return save_model(zoo.chain(size=32, classes=10), tmp_path / "chain.onnx")


def _samples(model, n, seed=0):
    spec = model.graph.inputs[0]
    rng = np.random.default_rng(seed)
    return [{spec.name: rng.standard_normal(tuple(spec.shape)).astype(np.float32)} for _ in range(n)]


def test_auto_meets_the_per_tensor_budget_on_calibration_data(tmp_path):
    path = _model(tmp_path)
    model = annotate(import_model(path), resolve_targets("rpi4,cloud"))
    samples = _samples(model, 12)
    budget = {"cosine": 0.99}
    chosen = calibrate_codecs(model, C.parse_codec("auto"), samples, budget)
    assert chosen, "no tensor got a codec"
    # re-measure independently: each tensor alone quantized, the rest exact, on the evaluation samples
    names = list(chosen)
    out_names = [o.name for o in model.graph.outputs]
    full = session(_probe_model(model, names).SerializeToString())
    clean = session(_with_outputs(model, names))
    n_fit = int(round(len(samples) * 0.65))
    for name, tc in chosen.items():
        ref, got = [], []
        for feeds in samples[n_fit:]:
            vals = dict(zip(names + out_names, clean.run(names + out_names, feeds)))
            ref.append([vals[o] for o in out_names])
            deltas = {f"{n}__delta": np.zeros_like(vals[n]) for n in names}
            deltas[f"{name}__delta"] = C.dequantize(C.quantize(vals[name], tc), tc) - vals[name]
            got.append(full.run(out_names, {**feeds, **deltas}))
        metrics = C.output_metrics(ref, got)
        assert C.meets(metrics, budget), (name, tc.name, metrics)
        assert tc.measured_bytes is not None and tc.measured_bytes > 0
    # the smallest candidates are tried first: some tensor of this net gets a codec smaller than int8-static
    assert any(tc.spec.name != "int8-static" for tc in chosen.values())


def _with_outputs(model, names):
    from splitc.cost.calibrate import _with_outputs as w

    return w(model, names).SerializeToString()


def test_fixed_codec_fits_every_candidate(tmp_path):
    model = annotate(import_model(_model(tmp_path)), resolve_targets("rpi4,cloud"))
    chosen = calibrate_codecs(model, C.parse_codec("int4-channel"), _samples(model, 4), {})
    tied = {v.name for v in candidates(model) if never_crosses(v)}
    assert tied, "the chain has Conv -> Relu pairs onnxruntime fuses"
    assert set(chosen) == {v.name for v in candidates(model)} - tied
    for tc in chosen.values():
        assert tc.bits == 4 and tc.measured_bytes > 0
        assert tc.axis is None or tc.scale.size > 1


def test_compile_auto_records_codecs_and_budget(tmp_path):
    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    model = import_model(path)
    spec = model.graph.inputs[0]
    x = np.random.default_rng(0).standard_normal((8, *spec.shape)).astype(np.float32)
    np.savez(tmp_path / "c.npz", **{spec.name: x})
    result = compile_model(path, tmp_path / "out", CompileOptions(link="4g", boundary="auto", calibrate=str(tmp_path / "c.npz"),
                                                                  accuracy_budget="cosine=0.999"))
    plan = result.plan
    assert plan["calibration"]["budget"] == {"cosine": 0.999}
    for b in plan["boundary"]:
        if "quant" in b:
            assert b["quant"]["error"]["cosine"] >= 0.999
    assert result.model.graph.meta[CODECS]


def test_load_samples_errors(tmp_path):
    with pytest.raises(SplitcError, match="directory of images or an .npz"):
        load_samples(tmp_path / "nope", [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float"}])
    with pytest.raises(SplitcError, match="no images"):
        load_samples(tmp_path, [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float"}])


def test_load_samples_from_images(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    feeds = load_samples(tmp_path, [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float"}], "imagenet", count=6)
    assert len(feeds) == 6 and all(f["x"].shape == (1, 3, 16, 16) and f["x"].dtype == np.float32 for f in feeds)
    assert -3 < float(np.mean(feeds[0]["x"])) < 3


def test_compile_auto_checks_accuracy_only_for_the_tensors_its_plans_send(tmp_path, monkeypatch):
    """The accuracy check runs the model per sample and codec: done for every candidate it took minutes on a detector.
    The compiler checks the tensors its plan (and the baselines beside it) send, re-solving until they are checked."""
    import splitc.cost.calibrate as cal
    from splitc.compiler import sent_tensors

    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    spec = import_model(path).graph.inputs[0]
    np.savez(tmp_path / "c.npz", **{spec.name: np.random.default_rng(0).standard_normal((8, *spec.shape)).astype(np.float32)})
    probed = []
    real = cal._probe_model
    monkeypatch.setattr(cal, "_probe_model", lambda m, names: probed.append(list(names)) or real(m, names))
    result = compile_model(path, None, CompileOptions(link="4g", boundary="auto", calibrate=str(tmp_path / "c.npz")))
    model = annotate(import_model(path), resolve_targets("rpi4,cloud"))
    n_candidates = len([v for v in candidates(model) if not never_crosses(v)])
    assert probed and all(len(p) == 1 for p in probed), probed
    checked = {p[0] for p in probed}
    assert checked <= set(sent_tensors(result.partition)) and len(checked) < n_candidates
    for b in result.plan["boundary"]:  # what the plan sends was checked
        if "quant" in b:
            assert b["tensor"] in checked and b["quant"]["error"]
