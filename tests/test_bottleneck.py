"""The learned bottleneck (learned<k>+<static codec>): trained encoder/decoder, emitted as ONNX Conv nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from splitc.cost import bottleneck
from splitc.cost import quantizers as C
from splitc.errors import SplitcError

needs_torch = pytest.mark.skipif(not bottleneck.available(), reason="PyTorch is not installed (pip install 'splitc[train]')")


def _low_rank(rng, n=12, c=8, k=2, hw=16):
    """c channels that are fixed mixtures of k smooth latent maps: a k-channel code loses nothing."""
    mix = rng.standard_normal((c, k)).astype(np.float32)
    out = []
    for _ in range(n):
        z = rng.standard_normal((k, hw + 2, hw + 2)).astype(np.float32)
        z = (z[:, :-2, :-2] + z[:, 1:-1, 1:-1] + z[:, 2:, 2:]) / 3
        out.append(np.einsum("ck,khw->chw", mix, z)[None])
    return out


def test_parse_learned_spec():
    spec = C.parse_codec("learned8+int8-channel-step0.5+ans")
    assert spec.learned == 8 and spec.kind == "static" and spec.entropy == "ans" and spec.clip == "step0.5"
    with pytest.raises(SplitcError, match="learned<k>"):
        C.parse_codec("learned8+int8")  # dynamic: not a static codec


@needs_torch
def test_training_finds_the_code_and_numpy_runs_the_trained_layers_like_torch():
    import torch

    rng = np.random.default_rng(0)
    acts = _low_rank(rng)
    enc, dec, err = bottleneck.fit_learned(acts, 2, step=0.05, iters=400)
    assert err < 0.05, err  # relative MSE: an untrained pair (or a no-op) leaves ~1.0
    x = acts[0]
    y = bottleneck.run_layers(bottleneck.run_layers(x, enc), dec)
    assert np.mean((y - x) ** 2) / np.var(x) < 0.1
    conv = torch.nn.functional.conv2d
    z = conv(torch.from_numpy(x), torch.from_numpy(enc[0].weight), torch.from_numpy(enc[0].bias), padding=1)
    np.testing.assert_allclose(bottleneck.run_layers(x, enc), z.numpy(), rtol=1e-4, atol=1e-4)


@needs_torch
def test_compiled_parts_carry_the_encoder_and_decoder(tmp_path):
    from conftest import save_model

    from splitc.compiler import CompileOptions, compile_model, import_model
    from splitc.runtimes.ort import SplitModel, synthetic_inputs
    from splitc.tools import zoo

    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    spec = import_model(path).graph.inputs[0]
    np.savez(tmp_path / "c.npz", **{spec.name: np.random.default_rng(0).standard_normal((6, *spec.shape)).astype(np.float32)})
    out = tmp_path / "out"
    plan = compile_model(path, out, CompileOptions(link="4g", boundary="learned4+int8-channel-step0.5+ans",
                                                   calibrate=str(tmp_path / "c.npz"))).plan
    hop = next(b for b in plan["boundary"] if b["tensor"] == "bottleneck")
    assert hop["codec"] == "learned4+int8-channel-step0.5+ans" and hop["quant"]["learned"]["k"] == 4
    assert hop["wire"][0]["shape"][1] == 4  # four channels cross instead of twelve
    head = onnx.load(out / "head.onnx")
    tail = onnx.load(out / "tail.onnx")
    assert any(n.op_type == "Conv" and "__enc" in n.name for n in head.graph.node)
    assert sum(n.op_type == "Conv" and "__dec" in n.name for n in tail.graph.node) == 2
    model = SplitModel(out)
    run = model.run(synthetic_inputs(model.inputs))
    assert 0 < run.bytes_up < 12 * 28 * 28  # less than one byte per value of the 12-channel tensor


def test_bottleneck_option_names_the_learned_codec(monkeypatch):
    from splitc.runtimes import ans

    monkeypatch.setattr(bottleneck, "available", lambda: True)  # the mapping itself needs no torch
    assert bottleneck.boundary_spec("int8", None) == "int8"
    assert bottleneck.boundary_spec("fp32", "none") == "fp32"
    assert bottleneck.boundary_spec("int4-channel", "learned:4") == "learned4+int4-channel"  # a static --boundary codes the code
    assert bottleneck.boundary_spec("int8-step0.5+ans", "learned") == "learned16+int8-step0.5+ans"
    monkeypatch.setattr(ans, "available", lambda: True)
    assert bottleneck.boundary_spec("int8", "learned:8") == "learned8+int8-channel-step0.25+ans"  # dynamic int8: the default
    monkeypatch.setattr(ans, "available", lambda: False)
    assert bottleneck.boundary_spec("int8", "learned:8") == "learned8+int8-channel-static"
    assert C.parse_codec(bottleneck.boundary_spec("int8", "learned:8")).learned == 8


@pytest.mark.parametrize("option, boundary, needle", [
    ("learned:0", "int8", "from 1 to 4096"), ("learned:4097", "int8", "from 1 to 4096"), ("learned:1.5", "int8", "whole number"),
    ("learned:", "int8", "whole number"), ("learned:-3", "int8", "whole number"), ("learned4", "int8", "learned[:C]"),
    ("pca", "int8", "learned[:C]"), ("learned", "fp32", "--boundary fp32"), ("learned:8", "auto", "--boundary auto"),
    ("learned", "learned8+int8-static", "static codec"),
])
def test_bad_bottleneck_option_is_one_line(option, boundary, needle, monkeypatch):
    monkeypatch.setattr(bottleneck, "available", lambda: True)
    with pytest.raises(SplitcError, match="--bottleneck") as err:
        bottleneck.boundary_spec(boundary, option)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bottleneck_without_torch_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(bottleneck, "available", lambda: False)
    with pytest.raises(SplitcError, match=r"splitc\[train\]"):
        bottleneck.boundary_spec("int8", "learned:8")


def test_cli_bottleneck_errors_before_any_work(tmp_path):
    from fixtures_text import assert_one_line_error
    from test_cli import run_cli, small_cnn

    model = small_cnn(tmp_path / "cnn.onnx")
    for option, needle in (("learned:0", "from 1 to 4096"), ("learned:x", "whole number")):
        assert_one_line_error(run_cli("compile", str(model), "--bottleneck", option, "-o", str(tmp_path / "o")),
                              f"--bottleneck '{option}'", needle, code=2)
    assert_one_line_error(run_cli("compile", str(model), "--bottleneck", "learned", "--boundary", "fp32",
                                  "-o", str(tmp_path / "o")), "--boundary fp32", code=2)
    assert not (tmp_path / "o").exists()


@needs_torch
def test_cli_bottleneck_compiles_a_learned_boundary(tmp_path):
    import json

    from conftest import save_model
    from test_cli import run_cli

    from splitc.compiler import import_model
    from splitc.tools import zoo

    path = save_model(zoo.bottlenet(), tmp_path / "b.onnx")
    spec = import_model(path).graph.inputs[0]
    np.savez(tmp_path / "c.npz", **{spec.name: np.random.default_rng(0).standard_normal((6, *spec.shape)).astype(np.float32)})
    out = tmp_path / "out"
    proc = run_cli("compile", str(path), "--link", "4g", "--bottleneck", "learned:3", "--boundary", "int8-channel-step0.5+ans",
                   "--calibrate", str(tmp_path / "c.npz"), "-o", str(out), "-q", "--no-report")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert plan["boundary_codec"] == "learned3+int8-channel-step0.5+ans"
    hop = next(b for b in plan["boundary"] if b["tensor"] == "bottleneck")
    assert hop["quant"]["learned"]["k"] == 3 and hop["wire"][0]["shape"][1] == 3  # three of twelve channels cross


def _tail_disagreement(model: onnx.ModelProto, cut: str, tc, xs: list[np.ndarray]) -> float:
    import onnxruntime as ort

    sub = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([cut], [o.name for o in model.graph.output])
    tail = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    got = [tail.run(None, {cut: C.dequantize(C.quantize(x, tc), tc)})[0] for x in xs]
    ref = [tail.run(None, {cut: x})[0] for x in xs]
    return float(np.mean([np.argmax(o) != np.argmax(r) for o, r in zip(got, ref)]))


def _classifier_reading_two_quiet_channels(rng, n: int):
    """An 8-channel 8x8 tensor ``feat`` whose channels 0-2 copy one latent and 3-5 another (what feature
    reconstruction keeps with a 2-channel code: 6 of 8 channels), while the 10-class head (GlobalAveragePool,
    Gemm) reads only channels 6 and 7, each independent of the rest: what distillation must keep instead."""
    from onnx import TensorProto, helper, numpy_helper

    angles = np.arange(10) * 2 * np.pi / 10
    w = np.zeros((10, 8), np.float32)
    w[:, 6], w[:, 7] = np.cos(angles), np.sin(angles)  # class = the direction of (channel 6, channel 7)
    nodes = [helper.make_node("Identity", ["x"], ["feat"]), helper.make_node("GlobalAveragePool", ["feat"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "quiet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    xs = []
    for _ in range(n):
        a = rng.standard_normal(4).astype(np.float32)
        level = np.array([a[0]] * 3 + [a[1]] * 3 + [a[2], a[3]], np.float32)
        xs.append((level[:, None, None] + 0.05 * rng.standard_normal((8, 8, 8)))[None].astype(np.float32))
    return model, xs


def test_distillation_through_the_tail_beats_feature_reconstruction():
    """learned<k> trained through the onnx2torch tail (KL of the logits) keeps what the classifier reads, so its
    top-1 disagrees with the original's far less often, on inputs the training did not see, than the same
    bottleneck trained by feature reconstruction (which keeps the channels that explain the most variance)."""
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'splitc[train]')")
    pytest.importorskip("onnx2torch", reason="onnx2torch is not installed (distillation needs a differentiable tail)")

    model, xs = _classifier_reading_two_quiet_channels(np.random.default_rng(0), 160)
    module, why = bottleneck.tail_module(model, "feat")
    assert module is not None, why
    fit, check = xs[:64], xs[64:]
    spec = C.parse_codec("learned2+int8-channel-step0.25")
    recon = C.fit(spec, fit, tail=(None, "test: reconstruction"))
    distil = C.fit(spec, fit, tail=(module, None))
    assert recon.training == "reconstruction (test: reconstruction)" and distil.training == "distillation"
    assert distil.plan_entry()["learned"]["training"] == "distillation"
    d_recon, d_distil = _tail_disagreement(model, "feat", recon, check), _tail_disagreement(model, "feat", distil, check)
    assert d_recon > 0.3 and d_distil < 0.15, (d_recon, d_distil)


def test_tail_module_declines_a_tail_that_reads_other_head_tensors():
    pytest.importorskip("onnx2torch", reason="onnx2torch is not installed")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
                           helper.make_node("Add", ["a", "b"], ["y"])], "g", [x], [y])
    module, why = bottleneck.tail_module(helper.make_model(g), "b")
    assert module is None and "after b" in why, why
