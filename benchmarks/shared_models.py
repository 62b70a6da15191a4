"""Every model in ../shared/models compiled for rpi4,cloud at one link: the cut, predicted latency vs the
baselines, compile time, and a fp32 round trip through the emitted parts.

    .venv/bin/python benchmarks/shared_models.py [--link 4g]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from splitc.compiler import CompileOptions, compile_model
from splitc.runtimes import SplitModel
from splitc.runtimes.ort import session, synthetic_inputs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
SHAPES = {
    "mobilenet_v2_trained_imagenet": {},
    "resnet50thin_opennsfw": {"input:0": (1, 224, 224, 3)},
    "mobilenetv3s_ppocr_cls": {"x": (1, 3, 48, 192)},
    "yolox_nano_coco": {},
    "ultraface_rfb320_ssd": {},
    "dbnet_ppocrv4_det": {"x": (1, 3, 640, 640)},
    "svtr_ppocrv4_rec": {"x": (1, 3, 48, 320)},
    "minilm_l3_paraphrase": {"input_ids": (1, 128), "attention_mask": (1, 128)},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--link", default="4g")
    args = ap.parse_args()
    print("| model | nodes | cut (tensors) | splitc ms | device-only ms | cloud-only ms | Neurosurgeon ms | compile s | fp32 parts max abs err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, shapes in SHAPES.items():
        path = SHARED / f"{name}.onnx"
        if not path.is_file():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            plan = compile_model(path, Path(tmp) / "p", CompileOptions(link=args.link, input_shapes=shapes)).plan  # int8 default
            compile_s = time.perf_counter() - t0
            # the numeric check: the same plan's parts with lossless boundaries must reproduce the original
            compile_model(path, Path(tmp) / "o", CompileOptions(link=args.link, input_shapes=shapes, boundary="fp32"))
            split = SplitModel(Path(tmp) / "o", optimization="disable")
            feeds = synthetic_inputs(split.inputs)
            got = split.run(feeds).outputs
            ref = session(path, "disable").run(None, feeds)
            err = max(float(np.abs(got[o["name"]].astype(np.float64) - r).max()) for o, r in zip(plan["model"]["outputs"], ref))
        b = plan["baselines"]
        cut = ", ".join(plan["cut"]) or "(none: device-only)"
        print(f"| {name} | {len(plan['nodes'])} | {cut} | {plan['predicted']['total_s'] * 1e3:.1f} | {b['device_only']['total_s'] * 1e3:.1f}"
              f" | {b['cloud_only']['total_s'] * 1e3:.1f} | {b['best_single_cut']['total_s'] * 1e3:.1f} | {compile_s:.2f} | {err:.1e} |")


if __name__ == "__main__":
    main()
