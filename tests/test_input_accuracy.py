"""The input codec's own accuracy (splitc/cost/input_accuracy.py): measured on held-out images by the plan's budget;
a default jpeg:90 that misses it is replaced by the first of jpeg:95, jpeg:98, png that meets it; a codec given with
--input-codec is kept with a warning; without images it is said to be unmeasured, by compile and by a failing run."""

from __future__ import annotations

import json

import pytest
from test_input_codec import IMAGES, _classifier, _cloud_only, _photos

from splitc.cli.main import main
from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcWarning

OPTS = {"link": "4g", "input_norm": "mean=0.5,std=0.5", "calibrate_samples": 8}
STRICT = "cosine=0.99999"  # jpeg:90 of the synthetic photos misses it; png (lossless on 8-bit frames) meets it


def test_a_default_codec_missing_the_budget_is_replaced_by_the_first_finer_one_meeting_it(tmp_path):
    photos, model = _photos(tmp_path), _classifier(tmp_path / "m.onnx", hw=32)
    plain = compile_model(model, None, CompileOptions(calibrate=str(photos), **OPTS), policy=_cloud_only).plan
    strict = compile_model(model, tmp_path / "out", CompileOptions(calibrate=str(photos), accuracy_budget=STRICT, **OPTS),
                           policy=_cloud_only).plan
    was, rec = plain["input_codec"][0], strict["input_codec"][0]
    assert was["name"] == "jpeg:90" and was["accuracy"]["chosen"] == "default" and was["accuracy"]["meets_budget"]
    acc = rec["accuracy"]
    assert acc["measured"] and acc["chosen"] == "finer" and acc["budget"] == {"cosine": 0.99999}
    assert acc["tried"][0]["codec"] == "jpeg:90" and not acc["tried"][0]["meets_budget"]
    assert [t["codec"] for t in acc["tried"]] == ["jpeg:90", "jpeg:95", "jpeg:98", "png"][:len(acc["tried"])]
    assert rec["name"] == acc["tried"][-1]["codec"] != "jpeg:90" and acc["meets_budget"] and acc["cosine"] >= 0.99999
    assert "jpeg:90 (the default) misses the budget" in acc["why"] and "held-out" in acc["data"]
    # priced and sent as the chosen codec, with its own measured size; the plan's check meets the budget
    assert [b["codec"] for b in strict["boundary"] if b["tensor"] == "x"] == [rec["name"]]
    assert rec["encoded_bytes"] > was["encoded_bytes"] and rec["bytes_source"].startswith("measured")
    assert strict["accuracy"]["meets_budget"] is True
    saved = json.loads((tmp_path / "out" / "plan.json").read_text())["input_codec"][0]
    assert saved["name"] == rec["name"] and saved["accuracy"]["chosen"] == "finer"


def test_the_plan_check_includes_the_input_codec_loss(tmp_path):
    """A cloud-only plan returns its result raw: its only loss is the input codec, so the compile-time check of the
    whole plan reads what the codec's own measurement read, on the same held-out frames."""
    photos, model = _photos(tmp_path), _classifier(tmp_path / "m.onnx", hw=32)
    plan = compile_model(model, None, CompileOptions(calibrate=str(photos), input_codec="jpeg:50", **OPTS),
                         policy=_cloud_only).plan
    own, check = plan["input_codec"][0]["accuracy"], plan["accuracy"]["check"]
    assert check["cosine"] < 0.9999 and check["cosine"] == pytest.approx(own["cosine"], abs=1e-6)
    assert check["top1"] == pytest.approx(own["top1"]) and check["samples"] == own["samples"]


def test_a_given_codec_missing_the_budget_is_kept_with_a_one_line_warning(tmp_path):
    photos, model = _photos(tmp_path), _classifier(tmp_path / "m.onnx", hw=32)
    with pytest.warns(SplitcWarning, match=r"--input-codec jpeg:90 alone misses the accuracy budget .*leave --input-codec out"):
        plan = compile_model(model, None, CompileOptions(calibrate=str(photos), accuracy_budget=STRICT, input_codec="jpeg:90",
                                                         **OPTS), policy=_cloud_only).plan
    rec = plan["input_codec"][0]
    assert rec["name"] == "jpeg:90" and rec["accuracy"]["chosen"] == "given" and rec["accuracy"]["meets_budget"] is False
    assert len(rec["accuracy"]["tried"]) == 1


def test_without_images_the_default_is_kept_and_said_unmeasured_by_compile_and_a_failing_run(tmp_path, capsys):
    photos, model = _photos(tmp_path), _classifier(tmp_path / "m.onnx", hw=32)
    out = tmp_path / "out"
    plan = compile_model(model, out, CompileOptions(**OPTS), policy=_cloud_only).plan
    rec = plan["input_codec"][0]
    assert rec["name"] == "jpeg:90" and rec["accuracy"]["measured"] is False and "no --calibrate" in rec["accuracy"]["why"]
    data = json.loads((out / "plan.json").read_text())
    data["accuracy"]["budget"] = {"cosine": 1.0}  # a budget the JPEG frame cannot meet: the run fails, and says why
    (out / "plan.json").write_text(json.dumps(data))
    assert main(["run", str(out), "--input", str(photos)]) == 3
    text = capsys.readouterr().out
    assert "crosses as jpeg:90, whose accuracy compile did not measure" in text and "--calibrate DIR" in text


@pytest.mark.shared
@pytest.mark.skipif(not IMAGES.is_dir(), reason="needs ../shared/images")
def test_mobilenet_over_wifi_with_images_passes_its_own_run(tmp_path, shared_models_dir, capsys):
    """The acceptance finding: cloud-only MobileNetV2 with the JPEG q90 frame failed the default budget (cosine 0.977)."""
    out = tmp_path / "o"
    model = shared_models_dir / "mobilenet_v2_trained_imagenet.onnx"
    assert main(["compile", str(model), "--link", "wifi", "--calibrate", str(IMAGES), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input codec jpeg:9" in text and "jpeg:90 (the default) misses the budget" in text
    assert main(["run", str(out), "--input", str(IMAGES), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"]["pass"] is True
