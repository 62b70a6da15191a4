"""The input codec's own accuracy, measured on held-out images, and the codec compile picks by it.

A plan that cuts at the input sends the camera frame compressed (``splitc.cost.input_codec``), so the tail sees
the decoded frame, never the original. Given held-out images (the check set of ``splitc.cost.calibration_data``),
the model is run on every decoded frame and on the original frame, and the outputs are judged by the plan's budget
metrics (``splitc.runtimes.accuracy``). When ``--input-codec`` was not given and the default (jpeg:90) misses the
budget, the first of ``FINER`` that meets it is taken; a codec the user gave is kept, with a one-line warning when
it misses. Without images nothing is measured, and plan.json says so.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from splitc.cost.input_codec import InputCodec
from splitc.errors import SplitcWarning
from splitc.runtimes.accuracy import meets, output_metrics
from splitc.runtimes.image import parse_codec

FINER = ("jpeg:95", "jpeg:98", "png")  # tried in order when the default misses the budget


def unmeasured(codecs: dict[str, InputCodec], why: str) -> dict[str, InputCodec]:
    """Each compressed codec marked as not measured, with the reason (plan.json ``input_codec[].accuracy``)."""
    return {name: ic if not ic.compressed else replace(ic, accuracy={
        "measured": False, "chosen": "given" if ic.explicit else "default",
        "why": f"accuracy not measured: {why}; pass --calibrate DIR (a folder of images) to measure it on held-out"
               f" images and take a finer codec ({', '.join(FINER)}) when {ic.codec.name} misses the budget"})
            for name, ic in codecs.items()}


def measure(session, ic: InputCodec, frames: list[np.ndarray]) -> dict[str, float]:
    """The budget metrics of the model on each frame after ``ic``'s codec vs on the frame itself."""
    names = [o.name for o in session.get_outputs()]
    refs, gots = [], []
    for frame in frames:
        decoded = ic.codec.decode(ic.codec.encode(frame), ic.spec)
        refs.append(session.run(names, {ic.spec.name: ic.norm.to_tensor(frame, ic.spec)}))
        gots.append(session.run(names, {ic.spec.name: ic.norm.to_tensor(decoded, ic.spec)}))
    return output_metrics(refs, gots)


def choose(codecs: dict[str, InputCodec], frames: list[dict[str, np.ndarray]], model_path: str | Path,
           budget: dict[str, float], data: str) -> dict[str, InputCodec]:
    """Every compressed codec with its measured accuracy on ``frames`` (held-out, fitted to the input); a default
    codec that misses ``budget`` replaced by the first of FINER that meets it (PNG is lossless on 8-bit frames)."""
    from splitc.runtimes.ort import session as ort_session

    todo = {n: ic for n, ic in codecs.items() if ic.compressed and all(n in f for f in frames)}
    if not todo or not frames:
        return codecs
    sess = ort_session(model_path, spinning=False)
    need = ", ".join(f"{k} >= {v:g}" for k, v in budget.items())
    out = dict(codecs)
    for name, ic in todo.items():
        mine = [f[name] for f in frames]
        tried = []
        pick = ic
        for cand in [ic] + ([] if ic.explicit else [replace(ic, codec=parse_codec(c)) for c in FINER]):
            metrics = measure(sess, cand, mine)
            tried.append({"codec": cand.codec.name, **metrics, "meets_budget": meets(metrics, budget)})
            pick = cand
            if tried[-1]["meets_budget"]:
                break
        first, last = tried[0], tried[-1]

        def figures(t: dict) -> str:
            prob = f", within 0.01 in probability {t['prob']:.1%}" if "prob" in budget else ""
            return f"mean cosine {t['cosine']:.4f}, top-1 {t['top1']:.1%}{prob}"

        shown = figures(first)
        if ic.explicit:
            chosen = "given"
            why = (f"--input-codec {ic.codec.name} meets the budget ({need}) on {data}" if first["meets_budget"] else
                   f"--input-codec {ic.codec.name} misses the budget ({need}) on {data} ({shown}); kept as given")
            if not first["meets_budget"]:
                warnings.warn(f"--input-codec {ic.codec.name} alone misses the accuracy budget ({need}) on {data}: {shown};"
                              f" pass a finer one ({', '.join(c for c in FINER if c != ic.codec.name)}) or leave"
                              " --input-codec out to let compile choose", SplitcWarning, stacklevel=3)
        elif len(tried) == 1:
            chosen, why = "default", f"{ic.codec.name} (the default) meets the budget ({need}) on {data}"
        else:
            chosen = "finer"
            misses = "; ".join(f"{t['codec']} misses it ({figures(t)})" for t in tried[:-1])
            why = (f"{ic.codec.name} (the default) misses the budget ({need}) on {data}: {misses}; {last['codec']}"
                   + (f" meets it ({figures(last)})" if last["meets_budget"]
                      else " misses it too, the finest tried"))
        out[name] = replace(pick, accuracy={"measured": True, "chosen": chosen, "budget": budget, "data": data,
                                            "samples": len(mine), **{k: last[k] for k in ("top1", "cosine", "prob", "max_abs_error") if k in last},
                                            "meets_budget": last["meets_budget"], "tried": tried, "why": why})
    return out
