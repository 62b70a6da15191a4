"""The five plans side by side: predicted latency (ms) at 3g / 4g / wifi.

    .venv/bin/python benchmarks/plans_table.py

device-only, cloud-only, Neurosurgeon (best single cut along a topological order), DADS (min-cut
over the DAG) and splitc (the exact ILP), all priced in one cost model, int8 boundary. The
three-tier case chains rpi4 -[wifi]-> jetson-nano -[link]-> cloud.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from splitc.tools import zoo
from splitc.compiler import CompileOptions, compile_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"


def cases(tmp: Path):
    yield "ResNet-50 (light)", LIGHT / "light_resnet50.onnx", "rpi4,cloud", "{}"
    if (SHARED / "mobilenet_v2_trained_imagenet.onnx").is_file():
        yield "MobileNetV2 (trained)", SHARED / "mobilenet_v2_trained_imagenet.onnx", "rpi4,cloud", "{}"
    else:
        onnx.save(zoo.mobilenet_v2(), tmp / "mnv2.onnx")
        yield "MobileNetV2 (zoo)", tmp / "mnv2.onnx", "rpi4,cloud", "{}"
    if (SHARED / "yolox_nano_coco.onnx").is_file():
        yield "YOLOX-Nano", SHARED / "yolox_nano_coco.onnx", "rpi4,cloud", "{}"
    onnx.save(zoo.bottlenet(), tmp / "bottlenet.onnx")
    yield "bottlenet (demo)", tmp / "bottlenet.onnx", "rpi4,cloud", "{}"
    yield "ResNet-50, 3 tiers", LIGHT / "light_resnet50.onnx", "rpi4,jetson-nano,cloud", "wifi,{}"


def main() -> None:
    import tempfile

    names = ("device_only", "cloud_only", "best_single_cut", "dads")
    print("| model | link | device-only | cloud-only | Neurosurgeon | DADS | splitc | splitc cut |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, target, link_fmt in cases(Path(tmp)):
            for link in ("3g", "4g", "wifi"):
                plan = compile_model(path, None, CompileOptions(target=target, link=link_fmt.format(link))).plan
                cells = [f"{plan['baselines'][n]['total_s'] * 1e3:.1f}" if n in plan["baselines"] else "-" for n in names]
                cut = ", ".join(sorted({f"{b['from']}->{b['to']}" for b in plan["boundary"] if not b["is_output"]})) or "(none)"
                print(f"| {label} | {link_fmt.format(link)} | " + " | ".join(cells)
                      + f" | **{plan['predicted']['total_s'] * 1e3:.1f}** | {len(plan['cut'])} tensor(s) {cut} |")


if __name__ == "__main__":
    main()
