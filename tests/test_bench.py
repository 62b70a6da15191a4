"""splitc bench: the suite, the numbers per case, the baseline gate (check / update) and the CLI.

The cases run here are a few small zoo models on one link; the whole suite runs as its own CI step
(`make bench`, which checks benchmarks/baseline.json).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from splitc.tools import bench
from splitc.cli.main import main
from splitc.errors import SplitcError

REPO = Path(__file__).absolute().parents[1]
BASELINE = REPO / "benchmarks" / "baseline.json"

MANIFEST = """\
# Real ONNX models

| file | family | nodes | opset | input (fix to) | outputs | branching | source | licence |
|---|---|---|---|---|---|---|---|---|
| mobilenet_v2_trained_imagenet.onnx | MobileNetV2 | 170 | 17 | input 1x3x224x224 | logits 1x1000 | adds | x | BSD-3 |
| resnet50thin_opennsfw.onnx | ResNet-50-thin, NHWC input | 126 | 9 | input:0 1x224x224x3 | outputs 1x2 | adds | x | BSD-2 |
| minilm_l3_paraphrase.onnx | MiniLM | 354 | 17 | input_ids, attention_mask 1x128 (int64) | 4 | attention | x | Apache-2.0 |

Pitfalls | not a table row
"""


@pytest.fixture(scope="module")
def small_report():
    """chain (nothing worth cutting) and bottlenet (one real cut) on rpi4,cloud over 4g, run once for the module."""
    cases = bench.suite(quick=True, model_patterns=["chain", "bottlenet"], links=["4g"])
    return bench.run_suite(cases)


def by_key(report: dict) -> dict[str, dict]:
    return {r["key"]: r for r in report["cases"]}


def test_manifest_shapes_are_parsed_from_the_input_column():
    shapes = bench.parse_manifest(MANIFEST)
    assert shapes == {
        "mobilenet_v2_trained_imagenet": {"input": (1, 3, 224, 224)},
        "resnet50thin_opennsfw": {"input:0": (1, 224, 224, 3)},
        "minilm_l3_paraphrase": {"input_ids": (1, 128), "attention_mask": (1, 128)},
    }


def test_the_suite_covers_every_source_target_set_and_link(tmp_path):
    (tmp_path / "MANIFEST.md").write_text(MANIFEST)
    (tmp_path / "resnet50thin_opennsfw.onnx").write_bytes(b"")  # listed and present: in the suite; the others are absent
    cases = bench.suite(shared_dir=tmp_path)
    keys = [c.key for c in cases]
    assert len(keys) == len(set(keys))
    sources = {c.model.source for c in cases}
    assert sources == {"zoo", "light", "shared"}
    assert {c.model.name for c in cases if c.model.source == "shared"} == {"resnet50thin_opennsfw"}
    assert {c.targets for c in cases} == {"rpi4,cloud", "jetson-nano,cloud", "rpi4,jetson-nano,cloud"}
    assert {c.link for c in cases} == {"3g", "4g", "wifi"}
    assert len(cases) == len({c.model.name for c in cases}) * 3 * 3
    chain = next(c for c in cases if c.targets == "rpi4,jetson-nano,cloud" and c.link == "4g")
    assert chain.link_spec == "wifi,4g" and chain.key.endswith("/rpi4,jetson-nano,cloud/wifi,4g")
    light = {c.model.name for c in cases if c.model.source == "light"}
    assert {"light_resnet50", "light_vgg19", "light_densenet121"} <= light
    quick = bench.suite(quick=True, shared_dir=tmp_path)
    assert {c.targets for c in quick} == {"rpi4,cloud"} and {c.model.source for c in quick} == {"zoo", "light"}


def test_unknown_link_and_filters():
    with pytest.raises(SplitcError, match="5g"):
        bench.suite(quick=True, links=["5g"])
    assert {c.model.name for c in bench.suite(quick=True, model_patterns=["light_*"])} >= {"light_vgg19"}
    assert not bench.suite(quick=True, model_patterns=["no-such-model"])


def test_case_numbers_are_consistent_with_the_plan(small_report):
    cases = by_key(small_report)
    assert set(cases) == {"chain/rpi4,cloud/4g", "bottlenet/rpi4,cloud/4g"}
    for r in cases.values():
        assert r["status"] == "ok", r
        total = r["predicted_s"]
        for name in ("device_only_s", "cloud_only_s", "best_single_cut_s", "min_cut_s"):
            assert total <= r[name] * (1 + 1e-9), (r["key"], name)  # the exact plan is never worse than a baseline
        assert r["speedup"]["device_only"] == pytest.approx(r["device_only_s"] / total)
        assert r["speedup"]["cloud_only"] == pytest.approx(r["cloud_only_s"] / total)
        # the bound HiGHS proved (the LP optimum), read apart from the priced plan: they agree when the solver's
        # formulation and the cost model do
        assert r["lower_bound_s"] == pytest.approx(total, rel=1e-9) and abs(r["gap"]) <= 1e-9
        assert r["plan_vs_min_cut"] == pytest.approx(1.0, abs=1e-9)
        assert r["solve_s"] > 0 and r["solver"].endswith("(optimal)")
    chain, bottle = cases["chain/rpi4,cloud/4g"], cases["bottlenet/rpi4,cloud/4g"]
    assert chain["cut_tensors"] == 0 and chain["cut_bytes"] == 0 and chain["predicted_s"] == chain["device_only_s"]
    # bottlenet sends its 12x28x28 bottleneck as uint8 (+ scale and zero point) and is faster than either side alone
    assert bottle["cut_tensors"] == 1 and bottle["cut_bytes"] == 12 * 28 * 28 + 5
    assert bottle["speedup"]["device_only"] > 1.1 and bottle["speedup"]["cloud_only"] > 1.1


def _plan(total: float, solver: dict, objective: str = "latency") -> dict:
    return {"objective": objective, "predicted": {"total_s": total}, "baselines": {"dads": {"total_s": 1.5 * total}},
            "boundary": [], "nodes": [], "solver": solver}


def test_gap_is_against_the_bound_the_solver_reports_not_the_plan():
    stopped = bench.metrics(_plan(2.0, {"method": "ilp/highs", "status": "time limit", "gap": 0.25, "bound": 1.5}))
    assert stopped["lower_bound_s"] == 1.5 and stopped["gap"] == pytest.approx(0.25)
    # optimal but the solver's bound below the priced plan: the formulation and the cost model disagree, and it shows
    mismatch = bench.metrics(_plan(2.0, {"method": "ilp/highs-lp", "status": "optimal", "gap": 0.0, "bound": 1.9}))
    assert mismatch["gap"] == pytest.approx(0.05)
    no_bound = bench.metrics(_plan(2.0, {"method": "ilp/cbc", "status": "optimal", "gap": 0.0}))  # CBC reports none
    assert no_bound["lower_bound_s"] is None and no_bound["gap"] is None
    energy = bench.metrics(_plan(2.0, {"method": "ilp/highs", "status": "optimal", "gap": 0.0, "bound": 0.4}, "energy"))
    assert energy["lower_bound_s"] is None and energy["gap"] is None  # a bound in joules says nothing of latency
    assert "-" in bench.markdown({"cases": [{"key": "m/rpi4,cloud/4g", "model": "m", "source": "zoo", "targets": "rpi4,cloud",
                                            "link": "4g", **no_bound}]}).split("| m |")[1].splitlines()[0]


def test_markdown_has_one_table_per_link_with_every_column(small_report):
    text = bench.markdown(small_report)
    assert "### link to the cloud: 4g" in text and "### link to the cloud: 3g" not in text
    header = next(l for l in text.splitlines() if l.startswith("| model"))
    for col in ("cut tensors", "cut bytes", "predicted", "× device-only", "× cloud-only", "× best single cut", "× min-cut", "gap",
                "solve"):
        assert col in header
    row = next(l for l in text.splitlines() if l.startswith("| bottlenet"))
    case = next(r for r in small_report["cases"] if r["model"] == "bottlenet")
    assert "9.4 KB" in row and f"{case['cloud_only_s'] / case['predicted_s']:.2f}×" in row  # cloud-only over the plan
    assert case["cloud_only_s"] > case["predicted_s"]  # bottlenet beats cloud-only at 4g even when cloud-only sends JPEG
    assert row.split("|")[-3].strip() == "0.00%"  # the gap to the bound HiGHS proved, no "-0.00%" for a hair above
    assert "2 case(s): 2 ok, 0 skipped, 0 failed" in text


def test_check_passes_unchanged_and_fails_naming_a_regressed_case(small_report):
    baseline = bench.updated_baseline(small_report, None, [])
    assert bench.check(small_report, baseline).ok
    worse = copy.deepcopy(baseline)
    worse["cases"]["bottlenet/rpi4,cloud/4g"]["predicted_s"] /= 1.01  # the plan is now 1% worse than its baseline
    result = bench.check(small_report, worse)
    assert not result.ok
    assert [k for k, *_ in result.regressions] == ["bottlenet/rpi4,cloud/4g"]
    assert "bottlenet/rpi4,cloud/4g" in result.lines()[-1] and "FAILED" in result.lines()[-1]
    within = copy.deepcopy(baseline)
    within["cases"]["bottlenet/rpi4,cloud/4g"]["predicted_s"] /= 1.0005  # 0.05%: inside the 0.1% tolerance
    assert bench.check(small_report, within).ok


def test_improvements_and_new_cases_are_reported_not_failures(small_report):
    baseline = bench.updated_baseline(small_report, None, [])
    baseline["cases"]["chain/rpi4,cloud/4g"]["predicted_s"] *= 1.5
    del baseline["cases"]["bottlenet/rpi4,cloud/4g"]
    baseline["cases"]["gone/rpi4,cloud/4g"] = {"status": "ok", "predicted_s": 1.0}
    result = bench.check(small_report, baseline)
    assert result.ok
    assert [k for k, *_ in result.improvements] == ["chain/rpi4,cloud/4g"]
    assert result.new == ["bottlenet/rpi4,cloud/4g"] and result.not_run == ["gone/rpi4,cloud/4g"]
    scoped = bench.check(small_report, baseline, scope=[r["key"] for r in small_report["cases"]])
    assert scoped.not_run == [] and scoped.outside == 1


def test_a_failed_case_fails_the_check_and_is_never_written_as_baseline(tmp_path, capsys, monkeypatch):
    import splitc.compiler

    real = splitc.compiler.compile_model

    def broken_on_residual_block(path, out, options, **kw):
        if Path(path).stem == "residual_block":
            raise RuntimeError("boom")
        return real(path, out, options, **kw)

    monkeypatch.setattr(splitc.compiler, "compile_model", broken_on_residual_block)
    args = ["bench", "--quick", "--models", "chain,residual_block", "--links", "4g"]
    path = tmp_path / "baseline.json"
    assert main(args + ["--update", str(path)]) == 2
    assert "not updating" in capsys.readouterr().err and not path.exists()
    monkeypatch.setattr(splitc.compiler, "compile_model", real)
    assert main(args + ["--update", str(path)]) == 0
    monkeypatch.setattr(splitc.compiler, "compile_model", broken_on_residual_block)
    assert main(args + ["--check", str(path)]) == 3
    out = capsys.readouterr()
    assert "FAILED residual_block/rpi4,cloud/4g: RuntimeError: boom" in out.err
    assert "**FAILED** residual_block/rpi4,cloud/4g" in out.out


def test_update_keeps_entries_outside_the_run(small_report):
    previous = {"schema": bench.SCHEMA, "cases": {"other/rpi4,cloud/3g": {"status": "ok", "predicted_s": 2.0},
                                                  "chain/rpi4,cloud/4g": {"status": "ok", "predicted_s": 9.0}}}
    new = bench.updated_baseline(small_report, previous, [r["key"] for r in small_report["cases"]])
    assert new["cases"]["other/rpi4,cloud/3g"]["predicted_s"] == 2.0
    assert new["cases"]["chain/rpi4,cloud/4g"]["predicted_s"] == by_key(small_report)["chain/rpi4,cloud/4g"]["predicted_s"]
    assert "solve_s" not in new["cases"]["chain/rpi4,cloud/4g"]  # timings vary run to run: not in the committed file


def test_cli_update_then_check_then_fail_on_a_perturbed_baseline(tmp_path, capsys):
    path = tmp_path / "baseline.json"
    args = ["bench", "--quick", "--models", "chain,residual_block", "--links", "4g"]
    assert main(args + ["--update", str(path), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "| chain | zoo | rpi4,cloud |" in out.out and f"wrote {path}" in out.err
    assert (tmp_path / "out" / "bench.md").read_text() == out.out
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["schema"] == bench.SCHEMA
    assert set(json.loads(path.read_text())["cases"]) == {"chain/rpi4,cloud/4g", "residual_block/rpi4,cloud/4g"}

    assert main(args + ["--check", str(path)]) == 0
    assert "check passed (2 case(s) compared" in capsys.readouterr().err

    data = json.loads(path.read_text())
    data["cases"]["residual_block/rpi4,cloud/4g"]["predicted_s"] *= 0.99
    path.write_text(json.dumps(data))
    assert main(args + ["--check", str(path)]) == 3
    err = capsys.readouterr().err
    assert "REGRESSION residual_block/rpi4,cloud/4g" in err
    assert "check FAILED" in err and "residual_block/rpi4,cloud/4g" in err.splitlines()[-1]
    assert "chain/rpi4,cloud/4g" not in err.splitlines()[-1]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "--check", str(tmp_path / "missing.json"), "--quick"]) == 2
    assert "no baseline; create it with: splitc bench --update" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["bench", "--check", str(tmp_path / "bad.json"), "--quick"]) == 2
    assert "not a splitc bench baseline" in capsys.readouterr().err
    assert main(["bench", "--models", "nope*"]) == 2
    assert "no model of the suite matches" in capsys.readouterr().err


def test_the_committed_baseline_covers_the_suite_and_this_build_matches_it():
    """benchmarks/baseline.json is what CI's bench step checks: it must hold every case of the suite, and two
    small cases are checked here so that a change in the cost model shows up in the default test run too."""
    baseline = bench.load_baseline(BASELINE)
    keys = {c.key for c in bench.suite()}  # zoo, light, three target sets, three links (shared models: when present)
    missing = sorted(keys - set(baseline["cases"]))
    assert not missing, f"{len(missing)} suite case(s) missing from {BASELINE.name}; run: splitc bench --update ({missing[:5]})"
    cases = bench.suite(quick=True, model_patterns=["bottlenet", "chain"], links=["4g"])
    result = bench.check(bench.run_suite(cases), baseline, scope=[c.key for c in cases])
    assert result.ok and result.compared == 2, "\n".join(result.lines()) + "\nif the change is intended: splitc bench --update"
