"""The built-in rpi4 profile against published Raspberry Pi 4 latencies (4 threads, fp32, batch 1).

The whole-model prediction is the device-only plan's compute time: the sum of every node's rpi4
latency. It must fall inside the published range (the profile is calibrated to it) and, with a
margin for a later retune, inside that range widened by 30% either way.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import SHARED_MODELS, save_model

from splitc.tools import zoo
from splitc.compiler import CompileOptions, compile_model
from splitc.cost.targets import OP_CLASSES, load_target

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
PEAK_FLOPS = 4 * 1.5e9 * 8  # 4 Cortex-A72 cores x 1.5 GHz x 2 NEON FMA (4 fp32 lanes) per cycle = 48 GFLOP/s
PEAK_BYTES = 3200e6 * 4  # LPDDR4-3200 on a 32-bit bus = 12.8 GB/s

# model -> (how to get it, published range in ms)
CASES = {
    "ResNet-50 (light_resnet50)": ("light", (225.0, 315.0)),
    "ResNet-18 (zoo.resnet18)": ("resnet18", (100.0, 125.0)),
    "MobileNetV2 (zoo.mobilenet_v2)": ("mobilenet_v2", (26.0, 62.0)),
    "MobileNetV2 (shared, trained)": ("shared", (26.0, 62.0)),
}


def _model_path(kind: str, tmp_path: Path) -> Path:
    if kind == "light":
        return LIGHT_DIR / "light_resnet50.onnx"
    if kind == "shared":
        path = SHARED_MODELS / "mobilenet_v2_trained_imagenet.onnx"
        if not path.is_file():
            pytest.skip(f"../shared/models not present: no {path.name} in {SHARED_MODELS}")
        return path
    return save_model(zoo.MODELS[kind](), tmp_path / f"{kind}.onnx")


def predicted_ms(path: Path) -> float:
    plan = compile_model(path, None, CompileOptions(target="rpi4,cloud", link="4g")).plan
    nodes = sum(n["latency_s"]["rpi4"] for n in plan["nodes"])
    device_only = plan["baselines"]["device_only"]["compute_s"]["rpi4"]
    assert device_only == pytest.approx(nodes, rel=1e-9)
    return device_only * 1e3


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> dict[str, float]:
    cache: dict[str, float] = {}

    def get(label: str) -> float:
        if label not in cache:
            cache[label] = predicted_ms(_model_path(CASES[label][0], tmp_path_factory.mktemp("cal")))
        return cache[label]

    return get


@pytest.mark.parametrize("label", list(CASES))
def test_prediction_within_widened_published_range(predictions, label):
    lo, hi = CASES[label][1]
    ms = predictions(label)
    print(f"\n{label}: predicted {ms:.1f} ms, published {lo:.0f}-{hi:.0f} ms")
    assert 0.7 * lo <= ms <= 1.3 * hi, f"{label}: predicted {ms:.1f} ms, published {lo:.0f}-{hi:.0f} ms +-30%"


@pytest.mark.parametrize("label", list(CASES))
def test_prediction_inside_published_range(predictions, label):
    lo, hi = CASES[label][1]
    ms = predictions(label)
    assert lo <= ms <= hi, f"{label}: predicted {ms:.1f} ms, published {lo:.0f}-{hi:.0f} ms; retune splitc/profiles/rpi4.toml"


def test_models_rank_as_published(predictions):
    r50, r18, mb2 = (predictions(k) for k in list(CASES)[:3])
    assert r50 > 1.8 * r18 and r18 > 2.0 * mb2


def test_rpi4_rates_are_physically_plausible():
    rpi4 = load_target("rpi4")
    for cls in OP_CLASSES:
        assert 0 < rpi4.rate(cls) <= PEAK_FLOPS, f"rpi4 {cls} rate {rpi4.rate(cls):.3g} FLOP/s exceeds the 48 GFLOP/s peak"
    assert rpi4.rate("conv") >= max(rpi4.rate(c) for c in OP_CLASSES), "dense conv is the most efficient class"
    assert 0 < rpi4.memory_bytes_per_s <= PEAK_BYTES
