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
from splitc.cost.wire_sizes import chunked
from splitc.errors import SplitcError, SplitcWarning
from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs
from splitc.frontend.passes.replicable import is_replicable
from splitc.runtimes.ans import AnsModel, FittedTables, available as ans_available, fit_tables
from splitc.runtimes.image import IMAGE_EXT, fit_frame, image_spec, parse_norm
from splitc.runtimes.wire import encode, payload_size


NORMS = ("imagenet", "unit", "raw", "raw-bgr", "mean=..,std=..")


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
    """HxWx3 uint8 RGB -> the model input's layout (NCHW or NHWC, batch 1, 1 or 3 channels) and normalization
    (``splitc.runtimes.image.parse_norm``: imagenet, unit, raw, raw-bgr or mean=..,std=..)."""
    ispec = _image_spec(spec)
    return parse_norm(norm).to_tensor(fit_frame(rgb, ispec), ispec)


def _image_spec(spec: dict):
    ispec = image_spec(spec)
    if ispec is None:
        raise SplitcError(f"--calibrate with images: input '{spec['name']}' has shape {spec['shape']}, not an NCHW/NHWC"
                          " image of 1 or 3 channels; pass an .npz of inputs instead")
    return ispec


def image_hw(spec: dict) -> tuple[int, int]:
    ispec = _image_spec(spec)
    return ispec.height, ispec.width


def held_out(n: int) -> list[bool]:
    """Which of ``n`` calibration items (images of a directory in name order, or .npz samples) form the check set that
    no fit sees: every 4th, from the 4th (none when there are fewer than 4, then the plan reports no held-out accuracy)."""
    return [n >= 4 and k % 4 == 3 for k in range(n)]


def load_samples(path: str | Path, inputs: list[dict], norm: str = "imagenet", count: int = 48, seed: int = 0,
                 check: bool = False) -> list[dict]:
    """Calibration feeds: from an .npz (arrays per input name, samples on axis 0) or a directory of images. The fit
    samples, or with ``check`` the held-out ones (``held_out``)."""
    path = Path(path)
    parse_norm(norm)  # a bad one is named before any work
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
        return [f for f, h in zip(feeds, held_out(len(feeds))) if h == check]
    if not path.is_dir():
        raise SplitcError(f"--calibrate {path}: give a directory of images or an .npz of input arrays")
    if len(inputs) != 1:
        raise SplitcError(f"--calibrate with images needs a model of one input; this one has {len(inputs)}: pass an .npz")
    spec = inputs[0]
    return [{spec["name"]: to_input(rgb, spec, norm)} for rgb in image_frames(path, spec, count, seed, check)]


def image_frames(path: str | Path, spec: dict, count: int = 48, seed: int = 0, check: bool = False) -> list[np.ndarray]:
    """``count`` uint8 HxWx3 frames of the input's size from a directory of images (the fit images, or with ``check``
    the held-out ones): random crops and flips, round robin over the images, the first of each image its centre crop."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise SplitcError(f"--calibrate {path}: no images ({', '.join(IMAGE_EXT)}) in this directory")
    files = [f for f, h in zip(files, held_out(len(files))) if h == check]
    if not files:
        return []
    from PIL import Image

    hw = image_hw(spec)
    rng = np.random.default_rng(seed)
    per = -(-count // len(files))
    crops = []
    for f in files:
        with Image.open(f) as im:
            crops.append(augmented_crops(im, hw, per, rng))
    order = [c for i in range(per) for crop in crops for c in crop[i:i + 1]]  # round robin over the images
    return order[:count]


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


def _session(proto: onnx.ModelProto, lean: bool = False):
    """``lean``: no memory arena or reuse pattern (a capture session returns every candidate tensor: an arena sized
    for that stays allocated for the whole calibration). Idle intra-op threads sleep: between runs the process
    quantizes and codes on its main thread, which spinning threads would compete with for the cores."""
    from splitc.runtimes.ort import session

    if not lean:
        return session(proto.SerializeToString(), "all", spinning=False)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


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


def payload(q: np.ndarray, tc: C.TensorCodec, models: dict | None = None) -> bytes:
    """The runtime codec's payload for symbols ``q`` of ``tc`` (bit-packing or the ans tables, entropy coding)."""
    if models is None and tc.ans is not None:
        models = {"q": AnsModel(tc.ans)}
    return encode({"q": q}, bits={"q": tc.bits} if tc.bits != 8 else None, entropy=tc.spec.entropy, models=models)


def payload_bytes(q: np.ndarray, tc: C.TensorCodec, models: dict | None = None, shape=None) -> int:
    """``len(payload(q, tc))``; for ans codecs computed from the symbols' code length under the tables, which is
    what the coder writes to a word or two (tests/test_ans.py), without coding them. ``shape``: the tensor's, when
    ``q`` holds the symbols of an evenly spaced subset of its positions (N, C, k): the code length is scaled up."""
    if tc.ans is not None and ans_available():
        model = (models or {}).get("q") or AnsModel(tc.ans)
        shape = q.shape if shape is None else tuple(shape)
        bits = model.bits(q) * int(np.prod(shape)) / max(1, q.size)
        return payload_size("q", "uint8", shape, "ans", 4 * (int(np.ceil(bits / 32)) + 1), tc.bits)
    return len(payload(q, tc, models))


def spread_subset(x: np.ndarray, budget: int = 1 << 18) -> np.ndarray:
    """(N, C, k): every s-th position of each channel (axis 1), at most about ``budget`` values in all."""
    flat = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, 1, -1)
    return flat[:, :, ::max(1, -(-x.size // budget))]


def measured_bytes(q_frames: list[np.ndarray], tc: C.TensorCodec) -> int:
    """Mean payload bytes per frame of the runtime codec (bit-packing + entropy coding), header included."""
    models = {"q": AnsModel(tc.ans)} if tc.ans is not None else None
    return int(round(float(np.mean([len(payload(q, tc, models)) for q in q_frames]))))


def coder_factor(plain: AnsModel, context: AnsModel, frames: list[np.ndarray], reps: int = 3) -> tuple[float, float]:
    """(encode, decode) time of the context coder over the plain one on ``frames``, measured here (best of ``reps``),
    at least 1: the plan prices the context coder at the device's codec rate over these."""
    import time

    def best(fn) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return max(min(times), 1e-9)

    blobs = [(plain.encode(f), context.encode(f)) for f in frames]
    enc = best(lambda: [context.encode(f) for f in frames]) / best(lambda: [plain.encode(f) for f in frames])
    dec = (best(lambda: [context.decode(b, f.shape) for f, (_, b) in zip(frames, blobs)])
           / best(lambda: [plain.decode(b, f.shape) for f, (b, _) in zip(frames, blobs)]))
    return float(min(max(enc, 1.0), 100.0)), float(min(max(dec, 1.0), 100.0))


def never_crosses(v: ir.Value) -> bool:
    """Read only by an activation or batch norm fused into its producer's kernel: the pair shares a tier."""
    cons = v.consumers()
    return bool(cons) and all(getattr(c.meta.get(ann.COST), "rule", "").startswith("fused_into:") for c in cons)


def _sample_metrics(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    return C.output_metrics([ref], [got])


def _attainable(per_sample: list[dict], total: int, budget: dict[str, float]) -> bool:
    """Can the mean over ``total`` samples still meet ``budget`` when the remaining ones score 1.0?"""
    rest = total - len(per_sample)
    return all((sum(m[k] for m in per_sample) + rest) / total >= v - 1e-12 for k, v in budget.items())


class Calibration:
    """Every candidate tensor's fitted codecs and their measured payloads, with the accuracy check done on demand.

    Fitting and measuring stream the samples: the model runs once per sample with every candidate as an output,
    each tensor's values are subsampled (fit) or quantized and coded (size) and dropped. The accuracy check
    (``verify``) is the expensive part (the model runs once per sample and codec with that tensor perturbed), so it
    is done only for the tensors a plan actually sends: ``codecs`` starts optimistic (auto: each tensor's smallest
    candidate) and the compiler re-solves after each ``verify`` until every tensor its plan sends is verified. Every
    unverified price is a lower bound of the verified one, so the final plan is optimal for the verified prices.
    """

    def __init__(self, model: ir.Model, spec: C.CodecSpec, samples: list[dict], budget: dict[str, float],
                 fit_fraction: float = 0.65, seed: int = 0, progress=None, measure_frames: int = 4):
        if len(samples) < 2:
            raise SplitcError(f"calibration needs at least 2 samples, got {len(samples)}")
        self.model, self.spec, self.budget = model, spec, budget
        self.progress = progress or (lambda _msg: None)
        n_fit = min(len(samples) - 1, max(1, int(round(len(samples) * fit_fraction))))
        self.fit_set, self.eval_set = samples[:n_fit], samples[n_fit:]
        cands = [v for v in candidates(model) if not never_crosses(v)]
        if spec.kind == "auto":
            limit = max(int(np.prod(v.shape)) for v in graph_inputs(model.graph) if v.shape is not None and v.shape.is_static())
            cands = [v for v in cands if int(np.prod(v.shape)) <= limit]
        self.names = [v.name for v in cands]
        self.ranks = {v.name: len(v.shape) for v in cands}
        self.out_names = [o.name for o in model.graph.outputs]
        self.verified: set[str] = set()
        self.fitted: dict[str, list[C.TensorCodec]] = {}
        self.codecs: dict[str, C.TensorCodec] = {}
        if not self.names:
            return
        self._capture = _session(_with_outputs(model, self.names), lean=True)
        self._fit(seed)
        self._measure(measure_frames)
        self._capture = None
        for n in self.names:
            self.fitted[n].sort(key=lambda t: t.measured_bytes)
            self.codecs[n] = self.fitted[n][0]

    def _fit(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        per_sample = max(256, 32768 // len(self.fit_set))  # values per sample and tensor (axis 1 kept whole)
        subs: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        for i, feeds in enumerate(self.fit_set):
            self.progress(f"calibrate: fit {i + 1}/{len(self.fit_set)}")
            for n, x in zip(self.names, self._capture.run(self.names, feeds)):
                subs[n].append(_subsample(x, rng, per_sample))
        specs = [self.spec] if self.spec.kind == "static" else [C.parse_codec(s) for s in C.auto_candidates()]
        for n in self.names:
            tcs = [C.fit(s, subs[n], rank=self.ranks[n]) for s in specs]
            for tc in tcs:  # a per-channel fit of a tensor without channels is a per-tensor one
                if tc.axis is not None and tc.scale.size == 1:
                    tc.axis, tc.scale, tc.zero_point = None, tc.scale.reshape(()), tc.zero_point.reshape(())
            self.fitted[n] = tcs
            del subs[n]

    def _measure(self, frames: int) -> None:
        """Payload sizes on the first ``frames`` evaluation samples; reference outputs on all of them."""
        self.reference: list[list[np.ndarray]] = []
        sizes: dict[int, list[int]] = {}
        models = {id(tc): {"q": AnsModel(tc.ans)} for tcs in self.fitted.values() for tc in tcs if tc.ans is not None}
        for i, feeds in enumerate(self.eval_set):
            self.progress(f"calibrate: measure {i + 1}/{len(self.eval_set)}")
            measured = self.names if i < frames else []
            got = dict(zip(measured + self.out_names, self._capture.run(measured + self.out_names, feeds)))
            self.reference.append([got[o] for o in self.out_names])
            for n in measured:
                sub = np.ascontiguousarray(spread_subset(got[n]))  # ans sizes from the code length of a subset (one
                #                                                    copy: every codec reads it)
                for tc in self.fitted[n]:
                    if tc.ans is not None and ans_available() and tc.basis is None:
                        size = payload_bytes(C.quantize(sub, tc), tc, models.get(id(tc)), shape=got[n].shape)
                    else:
                        size = payload_bytes(C.quantize(got[n], tc), tc, models.get(id(tc)))
                    sizes.setdefault(id(tc), []).append(size)
                del got[n]
        for tcs in self.fitted.values():
            for tc in tcs:
                tc.measured_bytes = int(round(float(np.mean(sizes[id(tc)]))))
                if isinstance(tc.ans, FittedTables):
                    tc.ans.counts = None  # the fit's count arrays served the models above; the plan needs only the lists

    # ---------------------------------------------------------------- accuracy, on demand

    def verify(self, names) -> bool:
        """Check the accuracy of the current codec of each tensor of ``names`` not yet verified (auto: walk its
        candidates from the smallest until one meets the budget; none does: it crosses as fp32). True if any was."""
        todo = [n for n in dict.fromkeys(names) if n in self.fitted and n not in self.verified]
        learn = self.spec.learned is not None
        if not todo or (self.spec.kind == "static" and not self.budget and not learn):
            self.verified.update(todo)
            return self._fit_context(todo)
        for chunk in self._chunks(todo):
            sess = _session(_with_outputs(self.model, chunk))
            clean = {n: [] for n in chunk}
            for feeds in self.eval_set:
                for n, x in zip(chunk, sess.run(chunk, feeds)):
                    clean[n].append(x)
            del sess
            for n in chunk:
                self.progress(f"calibrate: check {len(self.verified) + 1} ({n})")
                values = clean.pop(n)
                if learn and self.ranks[n] == 4:
                    self._train(n, values)
                if self.budget or self.spec.kind == "auto":
                    self._choose(n, values)
                self.verified.add(n)
        self._fit_context(todo)
        return True

    def _fit_context(self, names: list[str]) -> bool:
        """Refit the ans tables of the tensors of ``names`` the plan sends as 4-D maps on whole maps of the fitting
        samples (the first fit saw scattered positions), so that a sparse map's zeros are coded with their
        neighbours as context where that pays (splitc.runtimes.ans_context), and re-measure their payloads. Coding is
        lossless: the accuracy checked stays. True if a price changed (the compiler re-solves)."""
        todo = [n for n in names if n in self.codecs and self.ranks[n] == 4 and self.codecs[n].spec.context
                and self.codecs[n].ans is not None and self.codecs[n].axis is not None and self.codecs[n].encoder is None
                and ans_available()]
        changed = False
        for chunk in self._chunks(todo, limit=64 << 20):
            sess = _session(_with_outputs(self.model, chunk))
            fit = {n: [] for n in chunk}
            for i, feeds in enumerate(self.fit_set):
                self.progress(f"calibrate: context tables {i + 1}/{len(self.fit_set)}")
                for n, x in zip(chunk, sess.run(chunk, feeds)):
                    fit[n].append(C.quantize(x, self.codecs[n]))
            check = [dict(zip(chunk, sess.run(chunk, feeds))) for feeds in self.eval_set[:4]]
            for n in chunk:
                tc = self.codecs[n]
                tables = fit_tables(np.concatenate(fit.pop(n), axis=0), 1 << tc.bits, per_channel=True, zero=tc.zero_point)
                if "significance" in tables:
                    frames = [C.quantize(c[n], tc) for c in check]
                    plain = AnsModel(tc.ans)
                    tc.ans = tables
                    tc.measured_bytes = measured_bytes(frames, tc)
                    tc.coder_factor = coder_factor(plain, AnsModel(tables), frames)
                    changed = True
        return changed

    def _train(self, name: str, clean: list[np.ndarray]) -> None:
        """learned<k>: train the bottleneck of ``name`` on its whole activations over the fitting samples (a tensor
        the plan sends: training every candidate would take minutes each) and price it; the compiler re-solves."""
        sess = _session(_with_outputs(self.model, [name]))
        acts = [sess.run([name], feeds)[0] for feeds in self.fit_set]
        self.progress(f"calibrate: train the bottleneck of {name}")
        from splitc.cost.bottleneck import tail_module

        tail = tail_module(ir.to_proto(self.model), name)
        if tail[0] is None:
            self.progress(f"calibrate: {name}: feature reconstruction, not distillation: {tail[1]}")
        tc = C.fit(self.spec, acts, rank=4, tail=tail)
        tc.measured_bytes = measured_bytes([C.quantize(x, tc) for x in clean[:4]], tc)
        self.fitted[name] = [tc]
        self.codecs[name] = tc

    def _chunks(self, names: list[str], limit: int = 256 << 20) -> list[list[str]]:
        """Groups of tensors whose clean values on the evaluation set fit in ``limit`` bytes."""
        shapes = {v.name: v.shape for v in candidates(self.model)}
        return chunked(names, lambda n: int(np.prod(shapes[n])) * 4 * len(self.eval_set), limit)

    def _choose(self, name: str, clean: list[np.ndarray]) -> None:
        probe = _session(_probe_model(self.model, [name]))
        static = self.spec.kind == "static"
        for tc in self.fitted[name]:
            per_sample = []
            for feeds, x, ref in zip(self.eval_set, clean, self.reference):
                delta = C.dequantize(C.quantize(x, tc), tc) - x
                per_sample.append(_sample_metrics(ref, probe.run(self.out_names, {**feeds, f"{name}__delta": delta})))
                if not static and not _attainable(per_sample, len(self.eval_set), self.budget):
                    break
            tc.error = {k: float(np.mean([m[k] for m in per_sample])) for k in per_sample[0]}
            if static or (len(per_sample) == len(self.eval_set) and C.meets(tc.error, self.budget)):
                self.codecs[name] = tc
                return
        self.codecs.pop(name, None)  # auto: no candidate meets the budget -> fp32

    def warn_missed(self, names) -> None:
        """``--boundary <static codec>`` with a budget: name the tensors among ``names`` that miss it."""
        bad = [n for n in names if n in self.codecs and self.codecs[n].error and not C.meets(self.codecs[n].error, self.budget)]
        if self.spec.kind == "static" and bad:
            warnings.warn(f"--boundary {self.spec.name}: {len(bad)} tensor(s) sent miss --accuracy-budget alone (e.g. {bad[0]}:"
                          f" {self.codecs[bad[0]].error}); --boundary auto picks a codec per tensor", SplitcWarning, stacklevel=2)


def calibrate_codecs(model: ir.Model, spec: C.CodecSpec, samples: list[dict], budget: dict[str, float],
                     fit_fraction: float = 0.65, seed: int = 0) -> dict[str, C.TensorCodec]:
    """Tensor name -> calibrated codec, every candidate verified (the compiler verifies only what its plan sends)."""
    cal = Calibration(model, spec, samples, budget, fit_fraction, seed)
    cal.verify(cal.names)
    cal.warn_missed(cal.names)
    return cal.codecs  # auto: tensors no candidate satisfies get no codec -> the fp32 fallback decided by the caller
