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
