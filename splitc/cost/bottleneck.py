"""A learned bottleneck for a crossing 4-D (NCHW) tensor: ``learned<k>+<static codec>``.

An encoder (one 3x3 Conv from C to k channels) ends the sending part and a decoder (3x3 Conv from k to C channels,
Relu, 1x1 Conv back to C) starts the receiving part; the k-channel code is what the static codec after ``+``
quantizes and entropy-codes. It is trained on cached activations of the tensor (the calibration images through
the head: the model is only an ONNX file, and onnxruntime cannot differentiate the tail) by feature
reconstruction: mean squared error per channel, normalized by the channel's variance, with uniform noise of the
quantizer's step added to the code (the usual differentiable stand-in for rounding), so the decoder learns to
undo the codec's error. The trained layers become ONNX Conv/Relu nodes of the two parts
(splitc/codegen/passes/boundary.py); the numpy reference below computes the same arithmetic for calibration.

Training needs PyTorch (``pip install 'splitc[train]'``); the parts it emits run anywhere ONNX runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from splitc.errors import SplitcError

PATCH = 32
DEFAULT_CHANNELS = 16  # --bottleneck learned: the code's channels (learned16 is the size measured in the README)
MAX_CHANNELS = 4096
DEFAULT_CODE_CODEC = "int8-channel-step0.25+ans"  # the code's static codec when --boundary is not a static one
FALLBACK_CODE_CODEC = "int8-channel-static"  # ... without constriction (splitc[ans])
_OPTION = re.compile(r"^learned(?::(?P<c>.*))?$")


def boundary_spec(boundary: str, bottleneck: str | None) -> str:
    """The ``--boundary`` codec that ``--bottleneck learned[:C]`` stands for: ``learned<C>+<static codec>``, the
    static codec being ``--boundary`` when it is one, else the default code codec (``int8``, the dynamic default,
    cannot code a trained code: its range is per frame). ``None``/``none``: ``boundary`` unchanged."""
    text = (bottleneck or "none").strip()
    if text == "none":
        return boundary
    m = _OPTION.match(text)
    if m is None:
        raise SplitcError(f"--bottleneck '{bottleneck}': choose none or learned[:C] (C channels cross, e.g. learned:16)")
    c = m["c"]
    if c is not None and not (re.fullmatch(r"[0-9]{1,9}", c) and 1 <= int(c) <= MAX_CHANNELS):
        raise SplitcError(f"--bottleneck '{bottleneck}': C is a whole number of channels from 1 to {MAX_CHANNELS},"
                          f" e.g. learned:{DEFAULT_CHANNELS}")
    channels = DEFAULT_CHANNELS if c is None else int(c)
    b = boundary.strip()
    if b in ("fp32", "auto") or b.startswith(("learned", "pca")):
        raise SplitcError(f"--bottleneck learned with --boundary {b}: give the code's static codec instead, e.g."
                          f" --boundary {DEFAULT_CODE_CODEC} (or leave --boundary out)")
    if not available():
        raise SplitcError(f"--bottleneck '{bottleneck}' trains the bottleneck with PyTorch: pip install 'splitc[train]'")
    if b == "int8":
        from splitc.runtimes import ans

        b = DEFAULT_CODE_CODEC if ans.available() else FALLBACK_CODE_CODEC
    return f"learned{channels}+{b}"


@dataclass
class Layer:
    op: str  # "Conv" | "Relu"
    weight: np.ndarray | None = None  # Conv: (out, in, kh, kw) float32
    bias: np.ndarray | None = None  # Conv: (out,) float32

    @property
    def pad(self) -> int:
        return 0 if self.weight is None else self.weight.shape[2] // 2


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_layers(x: np.ndarray, layers: list[Layer]) -> np.ndarray:
    """The layers in numpy (NCHW, stride 1, 'same' padding): what the ONNX nodes compute."""
    y = np.asarray(x, np.float32)
    for layer in layers:
        if layer.op == "Relu":
            y = np.maximum(y, 0)
            continue
        w, p = layer.weight, layer.pad
        yp = np.pad(y, ((0, 0), (0, 0), (p, p), (p, p)))
        win = np.lib.stride_tricks.sliding_window_view(yp, w.shape[2:], axis=(2, 3))  # N, C, H, W, kh, kw
        y = (np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + layer.bias.reshape(1, -1, 1, 1)).astype(np.float32)
    return y


def tail_module(model, name: str):
    """(a torch module computing ``model``'s outputs from tensor ``name`` alone, None), or (None, why not): the
    differentiable tail that distillation trains through (onnx2torch converts the ONNX sub-graph). ``model``: an
    onnx.ModelProto. Tails that read other tensors of the head, or that onnx2torch cannot convert, give None."""
    import onnx

    try:
        from onnx2torch import convert
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision missing/mismatched at its import
        return None, f"onnx2torch is not usable ({type(e).__name__}: {str(e)[:80]})"
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != 1:
        return None, f"the model has {len(outputs)} outputs (distillation handles one)"
    try:
        sub = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([name], outputs)
    except Exception as e:  # noqa: BLE001
        return None, f"the tail after {name} cannot be extracted ({str(e)[:80]})"
    known = {name, ""} | {i.name for i in sub.graph.initializer}
    for node in sub.graph.node:
        missing = [i for i in node.input if i not in known]
        if missing:
            return None, f"the tail after {name} also reads {missing[0]}"
        known.update(node.output)
    try:
        module = convert(sub).eval()
    except Exception as e:  # noqa: BLE001 - an op onnx2torch lacks
        return None, f"onnx2torch cannot convert the tail after {name} ({str(e)[:80]})"
    for p in module.parameters():
        p.requires_grad_(False)
    return module, None


def _distill_loss(torch, student, teacher, temperature: float = 2.0):
    """KL(teacher || student) of the class distributions (softened by ``temperature``) for a classifier's
    (N, classes) logits; mean squared error normalized by the teacher's variance for any other output."""
    if student.ndim == 2 and student.shape[1] > 1:
        t = torch.log_softmax(teacher / temperature, dim=1)
        s = torch.log_softmax(student / temperature, dim=1)
        return torch.sum(t.exp() * (t - s), dim=1).mean() * temperature ** 2
    return torch.mean((student - teacher) ** 2) / (teacher.var() + 1e-12)


def fit_learned(samples: list[np.ndarray], k: int, step: float = 0.5, iters: int = 800, seed: int = 0,
                lr: float = 3e-3, tail=None) -> tuple[list[Layer], list[Layer], float]:
    """Train encoder and decoder on ``samples`` (per-frame NCHW activations of one tensor): (encoder, decoder,
    relative reconstruction error on the training data, quantization noise included). ``step``: the quantizer's
    step as a fraction of the code's standard deviation (noise of that width is added while training).
    ``tail`` (from ``tail_module``): distil through it instead: the loss is the tail's outputs on the decoded
    tensor against its outputs on the original (KL of the class distributions for a classifier), plus 0.1 x the
    reconstruction loss; on whole maps, not patches (the tail needs them)."""
    if not available():
        raise SplitcError("learned bottlenecks need PyTorch: pip install 'splitc[train]'")
    import torch

    x = np.concatenate([np.asarray(s, np.float32) for s in samples])
    if x.ndim != 4:
        raise SplitcError(f"a learned bottleneck needs a 4-D NCHW tensor, not shape {list(x.shape[1:])}")
    c = x.shape[1]
    k = int(min(max(1, k), c))
    torch.manual_seed(seed)
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3)) + 1e-6
    xt = torch.from_numpy((x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1))
    hidden = max(c, 2 * k)
    enc = torch.nn.Conv2d(c, k, 3, padding=1)
    dec1, dec2 = torch.nn.Conv2d(k, hidden, 3, padding=1), torch.nn.Conv2d(hidden, c, 1)
    params = [*enc.parameters(), *dec1.parameters(), *dec2.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(seed)
    batch = min(len(xt), 16)
    h, w = xt.shape[2:]
    if tail is not None:
        xs_t, mean_t, std_t = torch.from_numpy(x), torch.from_numpy(mean).reshape(1, -1, 1, 1), torch.from_numpy(std).reshape(1, -1, 1, 1)
        with torch.no_grad():
            teacher = [torch.as_tensor(tail(xs_t[i:i + 1])) for i in range(len(xs_t))]
            teacher = torch.cat(teacher)
        batch = min(len(xt), 8)
    for _ in range(iters if tail is None else 0):  # on patches: the layers are convolutions, a 32x32 window trains them as well as the map
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        i0 = int(torch.randint(0, max(1, h - PATCH + 1), (1,), generator=gen))
        j0 = int(torch.randint(0, max(1, w - PATCH + 1), (1,), generator=gen))
        xb = xt[idx][:, :, i0:i0 + PATCH, j0:j0 + PATCH]
        z = enc(xb)
        zs = z.detach().std(dim=(0, 2, 3), keepdim=True) + 1e-6
        z = z + (torch.rand(z.shape, generator=gen) - 0.5) * step * zs
        loss = torch.mean((dec2(torch.relu(dec1(z))) - xb) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    for _ in range(iters if tail is not None else 0):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        xb = xt[idx]
        z = enc(xb)
        zs = z.detach().std(dim=(0, 2, 3), keepdim=True) + 1e-6
        z = z + (torch.rand(z.shape, generator=gen) - 0.5) * step * zs
        y = dec2(torch.relu(dec1(z)))
        loss = _distill_loss(torch, tail(y * std_t + mean_t), teacher[idx]) + 0.1 * torch.mean((y - xb) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        xs = xt[:8]
        z = enc(xs)
        zs = z.std(dim=(0, 2, 3), keepdim=True) + 1e-6
        err = float(torch.mean((dec2(torch.relu(dec1(z + (torch.rand(z.shape, generator=gen) - 0.5) * step * zs))) - xs) ** 2))
    as_np = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    # fold the input normalization into the encoder and the output one into the decoder
    we, be = as_np(enc.weight), as_np(enc.bias)
    we_folded = we / std.reshape(1, -1, 1, 1)
    be_folded = be - np.einsum("ocij,c->o", we_folded, mean)
    w2, b2 = as_np(dec2.weight), as_np(dec2.bias)
    w2_folded = w2 * std.reshape(-1, 1, 1, 1)
    b2_folded = b2 * std + mean
    encoder = [Layer("Conv", we_folded.astype(np.float32), be_folded.astype(np.float32))]
    decoder = [Layer("Conv", as_np(dec1.weight), as_np(dec1.bias)), Layer("Relu"),
               Layer("Conv", w2_folded.astype(np.float32), b2_folded.astype(np.float32))]
    return encoder, decoder, err
