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
