"""``splitc run``'s data and its accuracy verdict.

Data: ``--input images/`` (a folder of images: every image a frame, fitted to the input and normalized as plan.json's
``input_codec`` says, sent as the camera frame where the plan cuts at the input), ``--input photo.jpg``, an ``.npz``
batch (one array per input, samples on axis 0), or the single-sample ``.npy``/``.npz`` forms. Without ``--input`` the
parts run on synthetic inputs, which tell whether they run, not how accurate the plan is: no verdict is given then.

Verdict: a lossless plan (``--boundary fp32`` and no image codec, or nothing but raw tensors crossing: :func:`lossless`)
must reproduce the original within a tolerance; a
lossy one is judged by the plan's own budget (``accuracy.budget``: top-1 agreement and/or mean cosine over the samples,
``splitc.runtimes.accuracy``), the metric it was compiled for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.accuracy import meets, output_metrics, plan_budget
from splitc.runtimes.image import IMAGE_EXT, fit_frame, list_images, read_image


def run_samples(inputs: list[str] | None, model, load_inputs) -> tuple[list[dict], list[dict]]:
    """(feeds per sample, uint8 frames per sample or []) from ``--input``; ``load_inputs(specs, plan)`` reads the
    single-sample forms."""
    plan = model.plan
    if not inputs:
        return [], []
    paths = [Path(s) for s in inputs]
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].suffix.lower() in IMAGE_EXT):
        if not model.images:
            raise SplitcError(f"--input {inputs[0]}: images, but plan.json describes no image input"
                              f" (inputs: {', '.join(str(i['shape']) for i in model.inputs)}); pass .npy/.npz arrays")
        files = list_images(paths[0]) if paths[0].is_dir() else [paths[0]]
        frames = []
        for f in files:
            img = read_image(f)
            frames.append({name: fit_frame(img, r.spec) for name, r in model.images.items()})
        feeds = [{name: model.images[name].norm.to_tensor(fr[name], model.images[name].spec) for name in fr} for fr in frames]
        return feeds, frames
    if len(paths) == 1 and paths[0].suffix == ".npz" and paths[0].is_file():
        batch = _npz_batch(paths[0], plan)
        if batch is not None:
            return batch, []
    return [load_inputs(inputs, plan)], []


def _npz_batch(path: Path, plan: dict) -> list[dict] | None:
    """An .npz whose arrays carry one more leading axis than the inputs (samples); None when it is a single sample."""
    import zipfile
    import zlib

    from splitc.runtimes.ort import numpy_dtype

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a corrupt archive: one line, not a traceback
        raise SplitcError(f"--input {path}: cannot read it as .npz ({e})") from None
    specs = plan["model"]["inputs"]
    if len(specs) == 1 and len(arrays) == 1:
        arrays = {specs[0]["name"]: next(iter(arrays.values()))}
    if not all(s["name"] in arrays and arrays[s["name"]].ndim == len(s["shape"]) + 1 for s in specs):
        return None
    counts = {arrays[s["name"]].shape[0] for s in specs}
    for s in specs:
        a = arrays[s["name"]]
        if list(a.shape[1:]) != list(s["shape"]) or a.dtype.kind not in "biuf":
            raise SplitcError(f"--input {path}: '{s['name']}' is {a.dtype} {list(a.shape)}; a batch is N x {s['shape']} numbers")
    if len(counts) != 1 or 0 in counts:
        raise SplitcError(f"--input {path}: the arrays hold different numbers of samples ({sorted(counts)}) or none")
    n = counts.pop()
    return [{s["name"]: np.ascontiguousarray(arrays[s["name"]][k]).astype(numpy_dtype(s["dtype"])) for s in specs}
            for k in range(n)]


SYNTHETIC_BYTES = 1 << 30  # all synthetic samples are made up front: at most 1 GiB of inputs


def synthetic_count(n: int, specs: list[dict]) -> int:
    """``--samples n`` checked: at least 1, and at most as many as fit in :data:`SYNTHETIC_BYTES` of inputs (a huge
    count ran the machine out of memory); a one-line error naming the largest count otherwise."""
    from splitc.runtimes.ort import frame_bytes

    frame = frame_bytes(specs)
    most = max(1, SYNTHETIC_BYTES // frame)
    if not 1 <= n <= most:
        raise SplitcError(f"--samples {n}: give 1 to {most} synthetic samples ({frame:,} B of inputs each; they show the"
                          " parts run, not how accurate they are: for that pass --input images/ or an .npz batch)")
    return n


def lossless(plan: dict) -> bool:
    """Whether the split must reproduce the original: ``--boundary fp32`` with no image codec, or, whatever
    ``--boundary`` says, a plan that sends every crossing tensor as it is (``raw``: a device-only plan, token ids
    and results), which a lossy budget would let drift unnoticed."""
    if plan.get("boundary_codec") == "fp32" and not any(r.get("codec") not in (None, "raw") for r in plan.get("input_codec") or []):
        return True
    return all(str(b.get("codec", "")).split("+")[0] == "raw" and "quant" not in b for b in plan.get("boundary") or [])


def verdict(plan: dict, refs: list[list[np.ndarray]], gots: list[list[np.ndarray]], real: bool) -> dict:
    """The budget, the metrics over the samples, and whether they meet it (None on synthetic data)."""
    budget = plan_budget(plan)
    metrics = output_metrics(refs, gots)
    return {"budget": budget, **metrics, "samples": len(refs), "real_data": real,
            "pass": meets(metrics, budget) if real else None}


def unmeasured_input_codec(plan: dict) -> str | None:
    """Why a lossy plan may miss its budget unforeseen: it sends an image input with a codec whose own accuracy compile
    never measured (no --calibrate images); None when every sent input codec was measured."""
    sent = {b.get("tensor") for b in plan.get("boundary") or [] if isinstance(b, dict)}
    for rec in plan.get("input_codec") or []:
        if isinstance(rec, dict) and rec.get("tensor") in sent and (rec.get("accuracy") or {}).get("measured") is False:
            return (f"the input '{rec['tensor']}' crosses as {rec.get('name')}, whose accuracy compile did not measure (it had no"
                    " images): recompile with --calibrate DIR (a folder of images) to let it choose a finer codec that meets"
                    " the budget, or with --input-codec png")
    return None
