"""What the compiler learns from ``--calibrate`` data before it partitions, and the samples it keeps back.

1. The input codec of every image input (``splitc.cost.input_codec``): its bytes measured on the fit images'
   centre crops at the input's size (or the default table without images);
2. the wire sizes of every tensor that may cross (``splitc.cost.wire_sizes``), measured on fit samples;
3. the check set: the held-out images (or .npz samples) of ``splitc.cost.calibrate.held_out``, which no fit sees,
   for the plan's accuracy under its budget (``splitc.codegen.check``), and for the input codec's own accuracy
   (``splitc.cost.input_accuracy``: a finer codec than the default when it misses the budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from splitc.cost import input_accuracy, input_codec, wire_sizes
from splitc.cost.targets import DeviceProfile
from splitc.errors import SplitcError
from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs

CHECK_SAMPLES = 24  # crops of the held-out images
SAMPLE_BYTES = 1 << 30  # calibration samples are held in memory at once: at most 1 GiB of inputs


@dataclass(frozen=True)
class CheckSet:
    feeds: list[dict]  # model inputs, normalized
    frames: list[dict] = field(default_factory=list)  # per sample: input name -> uint8 frame (image directories)
    source: str = ""


def input_specs(model: ir.Model) -> list[dict]:
    return [{"name": v.name, "dtype": i.dtype, "shape": list(i.shape)}
            for v in graph_inputs(model.graph) for i in [ann.get(v, ann.TENSOR, ann.TensorInfo)]]


def check_count(n: int, inputs: list[dict]) -> int:
    """``--calibrate-samples n`` checked: 2 (a fit needs two) to as many samples as fit in :data:`SAMPLE_BYTES` of
    inputs (100000000 ran out of memory); a one-line error naming the option and the range otherwise."""
    from splitc.runtimes.ort import frame_bytes

    frame = frame_bytes(inputs)
    most = max(1, SAMPLE_BYTES // frame)
    if not 2 <= n <= most:
        raise SplitcError(f"--calibrate-samples {n}: give 2 to {most} samples ({frame:,} B of inputs each; they are held in"
                          " memory at once, at most 1 GiB)")
    return n


def prepare(model: ir.Model, targets: tuple[DeviceProfile, ...], calibrate: str | None, norm: str, codec: str | None,
            count: int = 48, boundary: str = "int8", budget: dict | None = None,
            reference: str | Path | None = None) -> CheckSet | None:
    """Annotate ``model`` with its input codecs (``ann.INPUT_CODECS``) and, given data, measured wire sizes
    (``ann.WIRE_SIZES``); return the held-out check set (None without data or with too little of it). Given held-out
    images, ``reference`` (the model file) and ``budget``, each input codec's own accuracy is measured, and a default
    codec that misses the budget is replaced (``splitc.cost.input_accuracy.choose``)."""
    from splitc.cost.calibrate import held_out, image_frames, load_samples
    from splitc.runtimes.image import list_images, parse_norm

    inputs = input_specs(model)
    if calibrate is not None:
        check_count(count, inputs)
    codecs = input_codec.resolve(inputs, codec, norm)
    images = calibrate is not None and Path(calibrate).is_dir()
    codecs = input_accuracy.unmeasured(codecs, "compile was given no images (no --calibrate)" if calibrate is None else
                                       f"--calibrate {calibrate} is not a folder of images" if not images else
                                       f"the model has {len(inputs)} inputs" if len(inputs) != 1 else
                                       f"too few images in {calibrate} to hold some out")
    frames = {}
    if images and len(inputs) == 1:
        n_fit = min(64, held_out(len(list_images(calibrate))).count(False))
        for name, ic in codecs.items():
            if ic.codec.kind != "raw":
                spec = next(i for i in inputs if i["name"] == name)
                frames[name] = image_frames(calibrate, spec, count=n_fit, seed=0)  # one centre crop per fit image
    model.graph.meta[ann.INPUT_CODECS] = input_codec.size(codecs, frames)
    if calibrate is None:
        return None
    fit = load_samples(calibrate, inputs, norm, min(count, wire_sizes.FRAMES * 4))
    model.graph.meta[ann.WIRE_SIZES] = wire_sizes.measure(model, fit, boundary=boundary)
    if images:
        if len(inputs) != 1:
            return None
        spec = inputs[0]
        got = image_frames(calibrate, spec, CHECK_SAMPLES, seed=1, check=True)
        if not got:
            return None
        ic = codecs.get(spec["name"])
        the_norm = ic.norm if ic is not None else parse_norm(norm)
        from splitc.runtimes.image import fit_frame, image_spec

        ispec = image_spec(spec)
        framed = [{spec["name"]: fit_frame(f, ispec)} for f in got]
        feeds = [{spec["name"]: the_norm.to_tensor(f[spec["name"]], ispec)} for f in framed]
        source = f"{len(feeds)} crops of the held-out images (every 4th of {calibrate}, by name)"
        if reference is not None and budget:
            codecs = input_accuracy.choose(codecs, framed, reference, budget, source)
            model.graph.meta[ann.INPUT_CODECS] = input_codec.size(codecs, frames)  # a finer codec: its own measured size
        return CheckSet(feeds, framed, source)
    feeds = load_samples(calibrate, inputs, norm, count, check=True)
    return CheckSet(feeds, [], f"{len(feeds)} held-out samples (every 4th of {calibrate})") if feeds else None
