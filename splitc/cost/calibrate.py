"""Calibration: fit the boundary codec of every tensor that may cross, measure its size and (for ``auto``) its error.

Data: ``--calibrate DIR`` (images, resized/cropped/flipped to the model's input and normalized per
``--calibrate-norm``) or ``--calibrate file.npz`` (one array per input name, samples on axis 0). The samples
are split: the first ``fit`` calibrate the clip ranges, the rest measure size and error.

For ``auto`` every candidate tensor gets, of the codecs in ``splitc.cost.quantizers.AUTO_CANDIDATES``, the one with
the smallest measured payload that meets ``--accuracy-budget`` **with that tensor alone quantized** (the model
run with only that tensor replaced by its quantize-dequantize). This is a per-tensor approximation: a plan
that cuts several tensors at once stacks their errors, which the budget does not bound. A tensor no
candidate satisfies crosses as fp32 (lossless), and so do tensors larger than the largest model input, which
are not evaluated (a cut there sends more raw data than the cloud-only plan).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from splitc.cost import quantizers as C
from splitc.errors import SplitcError, SplitcWarning
from splitc.ir.graph import graph_inputs
from splitc.frontend.passes.replicable import is_replicable
from splitc.runtimes.wire import encode


NORMS = ("imagenet", "unit", "raw", "raw-bgr")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------- data

def augmented_crops(image, size: tuple[int, int], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random crops (40-100% of the short side, random position) with random horizontal flips, resized to
    (H, W): uint8 HxWx3 RGB arrays. The first one is the centre crop of the whole short side, unflipped."""
    from PIL import Image

    img = image.convert("RGB")
    w, h = img.size
    out = []
    for i in range(n):
        side = min(w, h) * (1.0 if i == 0 else rng.uniform(0.4, 1.0))
        x0 = (w - side) / 2 if i == 0 else rng.uniform(0, w - side)
        y0 = (h - side) / 2 if i == 0 else rng.uniform(0, h - side)
        crop = img.resize((size[1], size[0]), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
        arr = np.asarray(crop, np.uint8)
        if i and rng.random() < 0.5:
            arr = arr[:, ::-1]
        out.append(np.ascontiguousarray(arr))
    return out


def to_input(rgb: np.ndarray, spec: dict, norm: str) -> np.ndarray:
    """HxWx3 uint8 RGB -> the model input's layout (NCHW or NHWC, batch 1) and normalization."""
    x = rgb.astype(np.float32)
    if norm == "raw-bgr":
        x = x[..., ::-1]
    elif norm == "unit":
        x = x / 255.0
    elif norm == "imagenet":
        x = (x / 255.0 - _MEAN) / _STD
    shape = list(spec["shape"])
    x = x.transpose(2, 0, 1)[None] if shape[1] == 3 else x[None]
    return np.ascontiguousarray(x.astype(np.float32))


def image_hw(spec: dict) -> tuple[int, int]:
    shape = spec["shape"]
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise SplitcError(f"--calibrate with images: input '{spec['name']}' has shape {shape}, not an NCHW/NHWC RGB image;"
                          " pass an .npz of inputs instead")
    return (shape[2], shape[3]) if shape[1] == 3 else (shape[1], shape[2])


def load_samples(path: str | Path, inputs: list[dict], norm: str = "imagenet", count: int = 48, seed: int = 0) -> list[dict]:
    """Calibration feeds: from an .npz (arrays per input name, samples on axis 0) or a directory of images."""
    path = Path(path)
    if norm not in NORMS:
        raise SplitcError(f"--calibrate-norm '{norm}': choose one of {', '.join(NORMS)}")
    if path.suffix == ".npz" and path.is_file():
        data = np.load(path, allow_pickle=False)
        missing = [i["name"] for i in inputs if i["name"] not in data]
        if missing:
            raise SplitcError(f"--calibrate {path}: no array for input(s) {', '.join(missing)}; it has {', '.join(data.files)}")
        n = min(len(data[i["name"]]) for i in inputs)
        feeds = []
        for k in range(n):
            feeds.append({i["name"]: np.asarray(data[i["name"]][k]).reshape(i["shape"]).astype(_np_dtype(i["dtype"])) for i in inputs})
        if not feeds:
            raise SplitcError(f"--calibrate {path}: no samples")
        return feeds
    if not path.is_dir():
        raise SplitcError(f"--calibrate {path}: give a directory of images or an .npz of input arrays")
    if len(inputs) != 1:
        raise SplitcError(f"--calibrate with images needs a model of one input; this one has {len(inputs)}: pass an .npz")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise SplitcError(f"--calibrate {path}: no images ({', '.join(IMAGE_EXT)}) in this directory")
    from PIL import Image

    spec = inputs[0]
    hw = image_hw(spec)
    rng = np.random.default_rng(seed)
    per = -(-count // len(files))
    crops = []
    for f in files:
        with Image.open(f) as im:
            crops.append(augmented_crops(im, hw, per, rng))
    order = [c for i in range(per) for crop in crops for c in crop[i:i + 1]]  # round robin over the images
    return [{spec["name"]: to_input(rgb, spec, norm)} for rgb in order[:count]]


def _np_dtype(name: str) -> str:
    return {"float": "float32", "double": "float64"}.get(name, name)


# --------------------------------------------------------------------------- running the model

def candidates(model: ir.Model) -> list[ir.Value]:
    """Float tensors that may cross: graph inputs and outputs of non-replicable nodes that something reads
    (results excluded: they come back losslessly)."""
    outputs = {id(v) for v in model.graph.outputs}
    out = []
    for v in list(graph_inputs(model.graph)) + [o for n in model.graph if not is_replicable(n) for o in n.outputs]:
        if v.dtype == ir.DataType.FLOAT and id(v) not in outputs and v.uses() and v.shape is not None and v.shape.is_static():
            out.append(v)
    return out


def _session(proto: onnx.ModelProto):
    from splitc.runtimes.ort import session

    return session(proto.SerializeToString(), "all")


def _with_outputs(model: ir.Model, names: list[str]) -> onnx.ModelProto:
    proto = ir.to_proto(model)
    have = {o.name for o in proto.graph.output}
    for n in names:
        if n not in have:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return proto


def _probe_model(model: ir.Model, names: list[str]) -> onnx.ModelProto:
    """The model with ``t + t__delta`` read in place of every tensor t of ``names`` (``t__delta``: new inputs)."""
    proto = ir.to_proto(model)
    g = proto.graph
    shapes = {v.name: list(v.shape) for v in candidates(model)}
    chosen = set(names)
    for node in g.node:
        for i, x in enumerate(node.input):
            if x in chosen:
                node.input[i] = f"{x}__probe"
    outs = {o.name for o in g.output}
    new_nodes = []
    for n in names:
        g.input.append(onnx.helper.make_tensor_value_info(f"{n}__delta", onnx.TensorProto.FLOAT, shapes[n]))
        new_nodes.append(onnx.helper.make_node("Add", [n, f"{n}__delta"], [f"{n}__probe"], name=f"{n}__probe_add"))
        assert n not in outs
    nodes = list(g.node)
    del g.node[:]
    # insert each Add right after its producer (or first, for graph inputs) to keep the graph sorted
    produced_at = {}
    for k, node in enumerate(nodes):
        for o in node.output:
            produced_at[o] = k
    after: dict[int, list] = {}
    for add in new_nodes:
        after.setdefault(produced_at.get(add.input[0], -1), []).append(add)
    g.node.extend(after.get(-1, []))
    for k, node in enumerate(nodes):
        g.node.append(node)
        g.node.extend(after.get(k, []))
    return proto


def _subsample(x: np.ndarray, rng: np.random.Generator, budget: int = 8192) -> np.ndarray:
    """Keep axis 1 whole and at most ``budget`` values: (1, C, k)."""
    if x.ndim < 2:
        flat = x.reshape(1, 1, -1)
    else:
        flat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)[None]
    k = flat.shape[2]
    keep = max(1, budget // flat.shape[1])
    if k > keep:
        flat = flat[:, :, rng.choice(k, keep, replace=False)]
    return np.ascontiguousarray(flat)


def measured_bytes(q_frames: list[np.ndarray], tc: C.TensorCodec) -> int:
    """Mean payload bytes per frame of the runtime codec (bit-packing + entropy coding), header included."""
    sizes = [len(encode({"q": q}, bits={"q": tc.bits} if tc.bits != 8 else None, entropy=tc.spec.entropy)) for q in q_frames]
    return int(round(float(np.mean(sizes))))


def calibrate_codecs(model: ir.Model, spec: C.CodecSpec, samples: list[dict], budget: dict[str, float],
                     fit_fraction: float = 0.65, seed: int = 0) -> dict[str, C.TensorCodec]:
    """Tensor name -> calibrated codec (see the module docstring)."""
    if len(samples) < 2:
        raise SplitcError(f"calibration needs at least 2 samples, got {len(samples)}")
    n_fit = min(len(samples) - 1, max(1, int(round(len(samples) * fit_fraction))))
    fit_set, eval_set = samples[:n_fit], samples[n_fit:]
    cands = candidates(model)
    if spec.kind == "auto":
        limit = max(int(np.prod(v.shape)) for v in graph_inputs(model.graph) if v.shape is not None and v.shape.is_static())
        cands = [v for v in cands if int(np.prod(v.shape)) <= limit]
    names = [v.name for v in cands]
    if not names:
        return {}
    rng = np.random.default_rng(seed)
    sess = _session(_with_outputs(model, names))
    out_names = [o.name for o in model.graph.outputs]
    subs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in fit_set:
        got = dict(zip(names, sess.run(names, feeds)))
        for n in names:
            subs[n].append(_subsample(got[n], rng))
    specs = [spec] if spec.kind == "static" else [C.parse_codec(s) for s in C.AUTO_CANDIDATES]
    ranks = {v.name: len(v.shape) for v in cands}
    fitted = {n: [C.fit(s, subs[n], rank=ranks[n]) for s in specs] for n in names}
    for tcs in fitted.values():  # a per-channel fit of a tensor without channels is a per-tensor one
        for tc in tcs:
            if tc.axis is not None and tc.scale.size == 1:
                tc.axis, tc.scale, tc.zero_point = None, tc.scale.reshape(()), tc.zero_point.reshape(())
    del subs
    clean: dict[str, list[np.ndarray]] = {n: [] for n in names}
    reference = []
    for feeds in eval_set:
        got = dict(zip(names + out_names, sess.run(names + out_names, feeds)))
        reference.append([got[o] for o in out_names])
        for n in names:
            clean[n].append(got[n])
    for n in names:
        for tc in fitted[n]:
            tc.measured_bytes = measured_bytes([C.quantize(x, tc) for x in clean[n][:8]], tc)
    if spec.kind == "static" and not budget:
        return {n: fitted[n][0] for n in names}
    # the model with every candidate perturbable, one at a time
    probe = _session(_probe_model(model, names))
    zeros = {n: np.zeros_like(clean[n][0]) for n in names}
    chosen: dict[str, C.TensorCodec] = {}
    failed = []
    for n in names:
        for tc in sorted(fitted[n], key=lambda t: t.measured_bytes):
            got = []
            for feeds, x in zip(eval_set, clean[n]):
                deltas = dict(zeros)
                deltas[n] = C.dequantize(C.quantize(x, tc), tc) - x
                got.append(probe.run(out_names, {**feeds, **{f"{k}__delta": v for k, v in deltas.items()}}))
            tc.error = C.output_metrics(reference, got)
            if C.meets(tc.error, budget) or spec.kind == "static":
                chosen[n] = tc
                break
        else:
            failed.append(n)
    if spec.kind == "static":
        bad = [n for n, tc in chosen.items() if not C.meets(tc.error, budget)]
        if bad:
            warnings.warn(f"--boundary {spec.name}: {len(bad)} tensor(s) miss --accuracy-budget alone (e.g. {bad[0]}:"
                          f" {chosen[bad[0]].error}); --boundary auto picks a codec per tensor", SplitcWarning, stacklevel=2)
    return chosen  # auto: tensors in ``failed`` get no codec -> the fp32/int8 fallback decided by the caller
