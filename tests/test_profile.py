"""splitc profile: onnxruntime kernels measured and mapped back to ONNX nodes; the CLI that writes a profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.tools import zoo
from splitc.compiler import CompileOptions, compile_model
from splitc.errors import SplitcError
from splitc.tools.profiler import Settings, map_kernels, measure_calibration, measure_model, measure_profiler_bias, profile_device
from splitc.cost.targets import load_target

FAST = Settings(optimization="all", threads=1, warmup=1, runs=3)
RUN_ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc", *args], capture_output=True, text=True, env=RUN_ENV, timeout=300)


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("splitc: error")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, proto in {
        "residual": zoo.residual_block(size=24, channels=16),
        "mobilenet": zoo.mobilenet_v2(size=32, classes=10),
        "transformer": zoo.transformer_block(seq=16, dim=32, heads=4, batch=1),
        "chain": zoo.chain(),
        "symbolic": zoo.transformer_block(dim=32, heads=4),  # batch and seq are symbolic
    }.items():
        out[name] = d / f"{name}.onnx"
        onnx.save(proto, str(out[name]))
    return out


def _check_partition(p):
    """Every kernel and every costed node in exactly one group; times add up."""
    kernels = [k for g in p.groups for k in g.kernels]
    nodes = [n for g in p.groups for n in g.nodes]
    assert len(kernels) == len(set(kernels)) == len(p.kernel_ops)
    assert len(nodes) == len(set(nodes))
    assert set(p.features) <= set(nodes)
    assert sum(g.seconds for g in p.groups) + p.unmapped_s == pytest.approx(p.kernel_s, rel=1e-9)
    assert p.unmapped_s == 0.0 and not p.notes
    assert all(g.nodes for g in p.groups)
    return {n: g for g in p.groups for n in g.nodes}


def test_fused_conv_kernels_map_back_to_their_nodes(models):
    p = measure_model(models["residual"], None, FAST)
    group_of = _check_partition(p)
    assert p.wall_s > 0 and len(p.wall_runs) == FAST.runs
    # onnxruntime runs each Conv -> BatchNormalization [-> Relu] as one NCHWc kernel named after its output
    convs = [n for n, op in p.op_types.items() if op == "Conv"]
    for conv in convs:
        g = group_of[conv]
        assert len([k for k in g.kernels if "Conv" in p.kernel_ops[k]]) == 1
        assert "BatchNormalization" in {p.op_types[n] for n in g.nodes}  # every conv of the block has one
    # the residual Add (and its Relu) are fused into the second conv of the block as its Sum input
    add = next(n for n, op in p.op_types.items() if op == "Add")
    assert any(p.op_types[n] == "Conv" for n in group_of[add].nodes)
    # a fused group is one row of the fit: the Conv's features, the BN/Relu fused into it cost nothing
    for seconds, feats in p.rows():
        assert seconds > 0 and feats


def test_depthwise_and_transformer_fusions_are_grouped(models):
    p = measure_model(models["mobilenet"], None, FAST)
    _check_partition(p)
    classes = {f.op_class for f in p.features.values()}
    assert {"conv", "depthwise", "pool", "matmul"} <= classes
    t = measure_model(models["transformer"], {"x": (1, 16, 32)}, FAST)
    group_of = _check_partition(t)
    # MatMul + Add become Reshape -> Gemm -> Reshape in onnxruntime: one group, three kernels
    gemm_groups = {id(g): g for g in t.groups if any(t.kernel_ops[k] == "Gemm" for k in g.kernels)}
    assert gemm_groups
    for g in gemm_groups.values():
        ops = sorted(t.op_types[n] for n in g.nodes)
        assert "MatMul" in ops and "Add" in ops
    # shape arithmetic on static shapes is folded: no group holds a Shape or a Gather of a shape
    assert not any(t.op_types[n] in ("Shape",) for n in group_of)


def _proto_graph(nodes, inputs, outputs, inits=()):
    return helper.make_graph(nodes, "g", inputs, outputs, list(inits))


def test_mapping_follows_nchwc_names_through_fused_residual_adds():
    """An optimized graph as onnxruntime writes it: NCHWc kernels named '<original output>_nchwc', the second
    conv fusing the residual Add and Relu (Sum input, activation), Reorder kernels at the ends."""
    t = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 4, 4])  # noqa: E731
    w = numpy_helper.from_array(np.zeros((8, 8, 3, 3), np.float32), "w")
    orig = _proto_graph([
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "x"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu2"),
    ], [t("x")], [t("y")], [w])
    opt = _proto_graph([
        helper.make_node("ReorderInput", ["x"], ["tok0"], name="ReorderInput", domain="com.microsoft.nchwc"),
        helper.make_node("Conv", ["tok0", "w"], ["tok1"], name="r1_nchwc", domain="com.microsoft.nchwc", activation="Relu"),
        helper.make_node("Conv", ["tok1", "w", "", "tok0"], ["tok2"], name="c2_nchwc", domain="com.microsoft.nchwc", activation="Relu"),
        helper.make_node("ReorderOutput", ["tok2"], ["y"], name="ReorderOutput", domain="com.microsoft.nchwc"),
    ], [t("x")], [t("y")], [w])
    seconds = {"ReorderInput": 1.0, "r1_nchwc": 10.0, "c2_nchwc": 20.0, "ReorderOutput": 2.0}
    groups, kernel_ops, unmapped, notes = map_kernels(orig, opt, seconds)
    by_nodes = {tuple(sorted(g.nodes)): g for g in groups}
    assert unmapped == 0.0 and not notes
    assert kernel_ops["c2_nchwc"] == "com.microsoft.nchwc.Conv"
    first = by_nodes[("bn1", "conv1", "relu1")]
    second = by_nodes[("add", "conv2", "relu2")]
    assert set(first.kernels) == {"ReorderInput", "r1_nchwc"} and first.seconds == 11.0
    assert set(second.kernels) == {"c2_nchwc", "ReorderOutput"} and second.seconds == 22.0


def test_initializers_listed_as_inputs_are_measured_as_constants(models, tmp_path):
    # an IR >= 4 export listing its weights as graph inputs: onnxruntime would not fold the BatchNormalization
    # into the Conv; deployed parts list only real inputs, and so does the profiler
    proto = onnx.load(str(models["residual"]))
    proto.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in proto.graph.initializer)
    path = tmp_path / "inputs.onnx"
    onnx.save(proto, str(path))
    p = measure_model(path, None, FAST)
    group_of = _check_partition(p)
    bn = next(n for n, op in p.op_types.items() if op == "BatchNormalization")
    assert any(p.op_types[n] == "Conv" for n in group_of[bn].nodes)
    assert all(len([n for n in g.nodes if n in p.features]) >= 1 for g in p.groups)


def test_calibration_graphs_cover_the_classes_cnns_fuse_away():
    cal = measure_calibration(FAST)
    classes = set()
    for p in cal:
        group_of = _check_partition(p)
        # one op per kernel: every costed node is a group of its own (nothing merged by CSE or fusion)
        assert all(len([n for n in group_of[name].nodes if n in p.features]) == 1 for name in p.features)
        classes |= {f.op_class for f in p.features.values()}
    assert {"elementwise", "data", "reduce", "norm", "pool", "resize", "matmul"} <= classes
    assert not classes & {"conv", "depthwise"}  # convolutions come from the user's models


def test_profile_without_calibration_has_only_the_models_classes(models):
    run = profile_device([(models["residual"], {})], "only", FAST, calibration=False)
    assert set(dict(run.profile.fits)) <= {"conv", "pool", "elementwise", "matmul", "data"}
    assert run.profile.fit("norm") is None and run.calibration == []
    assert "no calibration graphs" in " ".join(run.profile.sources)
    # classes without a table use the analytical fallback, fitted to the same runs
    assert run.profile.rate("norm") > 0 and run.profile.memory_bytes_per_s > 0


def test_profiler_bias_is_a_few_microseconds():
    bias = measure_profiler_bias(Settings(threads=1, warmup=2), nodes=100, runs=8)
    assert -10e-6 <= bias <= 10e-6


def test_settings_are_validated():
    with pytest.raises(SplitcError, match="--threads -1"):
        Settings(threads=-1)
    with pytest.raises(SplitcError, match="--optimization 'max'"):
        Settings(optimization="max")
    with pytest.raises(SplitcError, match="--runs 0"):
        Settings(runs=0)


def test_cli_profile_writes_a_profile_that_compiles_and_lists(models, tmp_path):
    out = tmp_path / "box.toml"
    args = [str(models["residual"]), str(models["mobilenet"]), "--name", "box", "-o", str(out),
            "--threads", "1", "--warmup", "1", "--runs", "3"]
    proc = run_cli("profile", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["name"] == "box" and len(summary["models"]) == 2
    assert {"conv", "depthwise", "norm", "reduce", "resize"} <= set(summary["fits"])  # the last from calibration
    for m in summary["models"]:
        assert m["kernels"] > 0 and m["measured_s"] > 0 and m["predicted_s"] > 0
    data = tomllib.loads(out.read_text())
    assert data["measured"]["threads"] == 1 and data["measured"]["optimization"] == "all"
    assert set(data["measured"]["models"]) == {"residual.onnx", "mobilenet.onnx"}
    profile = load_target(str(out))
    assert profile.fit("conv") is not None and profile.encode_bytes_per_s > 0
    # the cluster link codec measured too: numpy + zstd of a dense frame codes faster than the onnxruntime + sparse-trying
    # 2-tier codec of a ReLU frame (2.6-3.5x on this machine)
    assert profile.cluster_encode_bytes_per_s > profile.encode_bytes_per_s
    assert profile.cluster_decode_bytes_per_s > profile.decode_bytes_per_s

    # the fitted profile predicts the groups it was fitted on (whatever the machine's load, the fit sees the
    # same per-kernel medians)
    plan = compile_model(models["mobilenet"], None, CompileOptions(target=f"{out},cloud", link="4g")).plan
    predicted = sum(n["latency_s"]["box"] for n in plan["nodes"])
    fitted_on = summary["models"][1]["predicted_s"]
    assert predicted == pytest.approx(fitted_on, rel=1e-6)

    listed = run_cli("targets", str(out))
    assert listed.returncode == 0, listed.stderr
    assert "box" in listed.stdout and "fitted" in listed.stdout and "depthwise" in listed.stdout

    again = one_error(run_cli("profile", *args))
    assert "already exists" in again and "--force" in again
    assert run_cli("profile", *args, "--force", "-q").returncode == 0


def test_cli_profile_errors_are_one_line(models, tmp_path):
    base = [str(models["chain"]), "--name", "x", "--runs", "1", "--warmup", "0"]
    assert "a profile is a .toml file" in one_error(run_cli("profile", *base, "-o", str(tmp_path / "x.json")))
    assert "--name 'a b'" in one_error(run_cli("profile", str(models["chain"]), "--name", "a b", "-o", str(tmp_path / "y.toml")))
    line = one_error(run_cli("profile", *base, "-o", str(tmp_path / "z.toml"), "--input-shape", "nope=1x3"))
    assert "none of the models has" in line and "nope" in line
    assert "no such file" in one_error(run_cli("profile", str(tmp_path / "missing.onnx"), "--name", "m", "-o", str(tmp_path / "m.toml")))
    symbolic = run_cli("profile", str(models["symbolic"]), "--name", "t", "-o", str(tmp_path / "t.toml"), "--runs", "1")
    assert "--input-shape" in one_error(symbolic)
    assert not (tmp_path / "t.toml").exists()


def test_input_shapes_go_to_the_models_that_have_the_input():
    from splitc.tools.profiler import assign_input_shapes

    inputs = {"a.onnx": {"x"}, "nets/b.onnx": {"images", "input:0"}}
    # a plain NAME applies only where the input exists: b, without 'x', is left alone
    assert assign_input_shapes({"x": (1, 8, 32)}, inputs) == {"a.onnx": {"x": (1, 8, 32)}, "nets/b.onnx": {}}
    # MODEL:NAME (as given or the file name) scopes it, and wins over a plain NAME for that model
    got = assign_input_shapes({"images": (1, 3, 64, 64), "b.onnx:images": (1, 3, 32, 32), "a.onnx:x": (1, 4, 32)}, inputs)
    assert got == {"a.onnx": {"x": (1, 4, 32)}, "nets/b.onnx": {"images": (1, 3, 32, 32)}}
    assert assign_input_shapes({"nets/b.onnx:images": (1, 3, 8, 8)}, inputs)["nets/b.onnx"] == {"images": (1, 3, 8, 8)}
    # a ':' inside an input name is not a model
    assert assign_input_shapes({"input:0": (1, 2)}, inputs)["nets/b.onnx"] == {"input:0": (1, 2)}
    assert assign_input_shapes({"b.onnx:input:0": (1, 2)}, inputs)["nets/b.onnx"] == {"input:0": (1, 2)}
    with pytest.raises(SplitcError, match="b.onnx has no input 'x' \\(its inputs: images, input:0\\)"):
        assign_input_shapes({"b.onnx:x": (1,)}, inputs)
    with pytest.raises(SplitcError, match="names nope, which none of the models has"):
        assign_input_shapes({"nope": (1,)}, inputs)


def test_cli_profile_takes_a_shape_per_model(models, tmp_path):
    # the same input name 'x' at two sequence lengths, one per model; a third model has no 'x' at all
    short, long = tmp_path / "short.onnx", tmp_path / "long.onnx"
    short.write_bytes(models["symbolic"].read_bytes())
    long.write_bytes(models["symbolic"].read_bytes())
    out = tmp_path / "p.toml"
    proc = run_cli("profile", str(short), str(long), str(models["chain"]), "--name", "p", "-o", str(out),
                   "--input-shape", "short.onnx:x=1x8x32", "--input-shape", f"{long}:x=1x64x32",
                   "--runs", "1", "--warmup", "0", "--threads", "1", "--no-calibration", "--json")
    assert proc.returncode == 0, proc.stderr
    predicted = {Path(m["model"]).name: m["predicted_s"] for m in json.loads(proc.stdout)["models"]}
    # the same fitted per-node models price the same graph: only the shapes differ (8x the tokens; swapped or
    # shared shapes would give <= or ==)
    assert predicted["long.onnx"] > predicted["short.onnx"] > 0
    assert "no input 'y'" in one_error(run_cli("profile", str(short), "--name", "q", "-o", str(tmp_path / "q.toml"),
                                               "--input-shape", "short.onnx:y=1x8x32"))


def test_sessions_never_spin_between_runs():
    """The profiled and the plain session run interleaved: a pool left spinning after its run would take a core
    from the other one (2-thread runs measured 3-5x slower on 2 cores, and the fit 40-70% under)."""
    from splitc.tools.profiler import session_options

    for spinning in (False, True):
        options = session_options(Settings(threads=2, spinning=spinning))
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")


def test_feeds_for_gives_every_input_its_shape(models):
    from splitc.tools.profiler import feeds_for

    feeds = feeds_for(models["symbolic"], {"x": (1, 8, 32)})
    assert {k: v.shape for k, v in feeds.items()} == {"x": (1, 8, 32)}


def test_typical_kernel_times_add_up_to_a_typical_run():
    """On a busy machine every run is preempted somewhere, each kernel rarely: the kernels' own medians would
    sum to an unloaded run and the fit would undershoot every measured run."""
    from splitc.tools.profiler import _kernel_durations, typical_kernel_seconds

    kernels = [f"k{i}" for i in range(10)]
    runs = []
    for r in range(12):
        run = {k: 0.001 for k in kernels}
        run[kernels[r % 10]] += 0.005  # this run's preemption lands in one kernel
        runs.append(run)
    runs[3] = {k: 0.02 for k in kernels}  # one run stalled throughout: an outlier, trimmed
    typical = typical_kernel_seconds(runs)
    assert sum(typical.values()) == pytest.approx(0.015)  # what a typical run's kernels took
    assert sorted(typical) == kernels and min(typical.values()) == pytest.approx(0.001)
    # per run from a trace: kernels inside warm-up runs are left out
    trace = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 50} for t in (0, 100, 200)]
    trace += [{"cat": "Node", "name": "conv_kernel_time", "ts": t + 10, "dur": d} for t, d in ((0, 7), (100, 3), (200, 5))]
    assert [dict(r) for r in _kernel_durations(trace, 1)] == [{"conv": pytest.approx(3e-6)}, {"conv": pytest.approx(5e-6)}]


def test_cli_profile_names_the_profile_after_its_file_by_default(models, tmp_path):
    # README: `splitc profile model.onnx -o mine.toml`, then `--target mine.toml,cloud`: --name is optional
    out = tmp_path / "mine.toml"
    proc = run_cli("profile", str(models["chain"]), "-o", str(out), "--runs", "1", "--warmup", "0", "--no-calibration", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "mine"
    assert load_target(str(out)).name == "mine"
