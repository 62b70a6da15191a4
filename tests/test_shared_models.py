"""Real models: the trained exports in ../shared/models and the light topologies in the onnx wheel.

Each compiles for rpi4,cloud over 3G, 4G, WiFi and a fast link with an fp32 boundary, and the split model
reproduces the original's outputs (max |diff| <= 1e-5, onnxruntime optimizations off). The
original runs once per model; each link compiles once.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import SHARED_MODELS, check_parts, verify_fp32

pytestmark = pytest.mark.shared

# The built-in links mostly keep these models whole on the device with an fp32 boundary (sending
# fp32 activations is expensive); the fast link also cuts several of them mid-graph (mobilenetv3s,
# yolox, ultraface, shufflenet, squeezenet), so reproduction is checked across real cuts too.
LINKS = ("3g", "4g", "wifi", "up=500Mbps,down=1Gbps,rtt=1ms")
# input shapes from ../shared/models/MANIFEST.md
SHARED = {
    "mobilenet_v2_trained_imagenet": {"input": (1, 3, 224, 224)},
    "resnet50thin_opennsfw": {"input:0": (1, 224, 224, 3)},
    "mobilenetv3s_ppocr_cls": {"x": (1, 3, 48, 192)},
    "yolox_nano_coco": {"images": (1, 3, 416, 416)},
    "ultraface_rfb320_ssd": {"input": (1, 3, 240, 320)},
    "dbnet_ppocrv4_det": {"x": (1, 3, 640, 640)},
    "svtr_ppocrv4_rec": {"x": (1, 3, 48, 320)},
    "minilm_l3_paraphrase": {"input_ids": (1, 128), "attention_mask": (1, 128)},
}
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT = sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


def test_the_onnx_wheel_ships_the_light_models():
    assert len(LIGHT) >= 9 and "light_resnet50" in LIGHT, LIGHT


@pytest.mark.parametrize("name", list(SHARED) + LIGHT)
def test_real_model_splits_and_reproduces(tmp_path, request, name):
    if name in SHARED:
        path = request.getfixturevalue("shared_models_dir") / f"{name}.onnx"
        if not path.is_file():
            pytest.skip(f"../shared/models not present: no {path.name} in {SHARED_MODELS}")
        shapes = SHARED[name]
    else:
        path, shapes = LIGHT_DIR / f"{name}.onnx", {}
    source = onnx.load(str(path), load_external_data=False)
    reference = None  # the plan's inputs are the same on every link: the original runs once
    for link in LINKS:
        out = tmp_path / link.split(",")[0]
        v = verify_fp32(path, out, reference=reference, link=link, input_shapes=shapes)
        reference = v.reference
        total = v.plan["predicted"]["total_s"]
        assert all(total <= b["total_s"] * (1 + 1e-9) + 1e-12 for b in v.plan["baselines"].values())
        assert v.plan["model"]["opset"] == max(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
        check_parts(out, source)
