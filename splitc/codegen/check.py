"""The plan's accuracy under its budget, measured on held-out data before the output is written.

The parts are saved to a scratch folder with plan.json and run by the device runtime (``SplitModel``) exactly as
``splitc run`` would: image inputs go in as uint8 frames (``run_image``), so the input codec (JPEG by default)
and every boundary codec of the plan are in the loop. The reference is the original model on the same frames,
normalized but never compressed. The samples are the check set of ``splitc.cost.calibration_data``, which
neither the codec fits nor the input-codec sizing saw.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import onnx
import onnx_ir as ir

from splitc.codegen.passes.split import SplitResult
from splitc.cost.calibration_data import CheckSet
from splitc.errors import SplitcWarning
from splitc.runtimes.accuracy import meets, output_metrics


def check_plan(plan: dict, split: SplitResult, artifacts: dict[int, str], model_path: Path, budget: dict[str, float],
               check: CheckSet | None) -> dict:
    """plan.json's ``accuracy``: the budget, and the metrics on the check set (None without one)."""
    if check is None or not check.feeds:
        return {"budget": budget, "check": None, "meets_budget": None,
                "note": "no held-out data: pass --calibrate DIR|file.npz (of 4 or more images or samples)"}
    from splitc.runtimes.ort import SplitModel, session

    with tempfile.TemporaryDirectory(prefix="splitc-check-") as tmp:
        folder = Path(tmp)
        for index, part in split.parts.items():
            onnx.save_model(ir.to_proto(part), str(folder / artifacts[index]))
        (folder / "plan.json").write_text(json.dumps(plan))
        model = SplitModel(folder, spinning=False)  # two sessions take turns: neither spins while the other runs
        reference = session(model_path, spinning=False)
        names = [o.name for o in reference.get_outputs()]
        refs, gots = [], []
        for k, feeds in enumerate(check.feeds):
            res = model.run_image(check.frames[k]) if check.frames and model.images else model.run(feeds)
            refs.append(reference.run(names, feeds))
            gots.append([res.outputs[n] for n in names])
    metrics = output_metrics(refs, gots)
    if not meets(metrics, budget):
        need = ", ".join(f"{k} >= {v:g}" for k, v in budget.items())
        warnings.warn(f"the plan misses its accuracy budget ({need}) on held-out data: top-1 agreement {metrics['top1']:.1%},"
                      f" mean cosine {metrics['cosine']:.4f} ({check.source}); a finer --input-codec (jpeg:95, png) or"
                      " --boundary may meet it", SplitcWarning, stacklevel=3)
    return {"budget": budget, "check": {"data": check.source, "samples": len(check.feeds), **metrics},
            "meets_budget": meets(metrics, budget)}
