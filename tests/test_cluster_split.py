"""Cluster split (issue 14): the parts of every plan of a real block chain (zoo yolo16 through import, annotate and
the cluster planner's chain), written content-addressed, and the plan.json "cluster" section naming them. Each plan,
run stage by stage as the hub does (rows sent, numpy merges), reproduces the original model; the section passes the
runtime's checks (splitc.runtimes.cluster_section, splitc.runtimes.cluster_plan) and a tampered one does not."""

from __future__ import annotations

import copy
import dataclasses
import json
from importlib import resources

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from splitc.codegen.cluster_parts import Source
from splitc.codegen.cluster_tiles import tile_part
from splitc.codegen.output import current_umask
from splitc.codegen.passes.cluster_split import cluster_section
from splitc.compiler import annotate, import_model
from splitc.cost.cluster import parse_cluster
from splitc.errors import SplitcError
from splitc.partition.blocks import tile
from splitc.partition.cluster_cost import ClusterPlan, ClusterStage
from splitc.partition.passes.cluster import plan_cluster
from splitc.runtimes.cluster_plan import validate, verify_part
from splitc.runtimes.cluster_section import load_section
from splitc.runtimes.ort import session
from splitc.tools import zoo

CLUSTER = {"network": {"kind": "lan", "rate": "200mbit"},
           "device": [{"name": "pi", "profile": "rpi4", "count": 3, "memory_mb": 1024}]}


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    onnx.save_model(zoo.yolo16(size=37, width=0.25), str(root / "m.onnx"))
    spec = parse_cluster(CLUSTER, "cluster.toml")
    model = annotate(import_model(root / "m.onnx"), spec.profiles)
    return model, plan_cluster(model, spec)


def _plan(devices, *stages) -> ClusterPlan:
    return ClusterPlan(tuple(devices), tuple(ClusterStage(*s) for s in stages), 0.1, 0.05, ((devices[0], 1000),))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, chain_model):
    root = tmp_path_factory.mktemp("cluster")
    source = zoo.yolo16(size=37, width=0.25)
    model, plans = chain_model
    ops = [[n for n in b.nodes] for b in plans.chain.blocks]
    assert len(ops) == 16 and ops[3] == ["maxpool_1"] and ops[4][0] == "conv_2"  # 37 -> 18 -> 9 rows at block 3
    # every strategy, over the real chain: tiles of blocks 0-3 (9 output rows), the 32 channels of conv_2 (block 4)
    # on three devices, replicas of blocks 5-11 on two, the rest alone; a 2-device plan sharing the last stage
    three = _plan(["pi/0", "pi/1", "pi/2"], (0, 4, "spatial", ("pi/0", "pi/1", "pi/2"), (3, 1, 5)),
                  (4, 5, "channel", ("pi/0", "pi/1", "pi/2"), (10, 12, 10)), (5, 12, "data", ("pi/1", "pi/0"), (2, 1)),
                  (12, 16, "single", ("pi/2",), (1,)))
    two = _plan(["pi/0", "pi/1"], (0, 4, "spatial", ("pi/1", "pi/0"), (1, 8)), (4, 12, "single", ("pi/0",), (1,)),
                (12, 16, "single", ("pi/1",), (1,)))
    plans = dataclasses.replace(plans, plans={(3,): three, (2,): two, (1,): plans.plans[(1,)]}, best=three)
    out = root / "out"
    out.mkdir()
    section = cluster_section(model, plans, out)
    x = np.random.default_rng(0).standard_normal((1, 3, 37, 37)).astype(np.float32)
    (want,) = session(source.SerializeToString(), "disable").run(None, {"input": x})
    return out, section, x, want


def _hub(out, plan, x) -> np.ndarray:
    """What the hub does: per stage, each part gets its rows (spatial) or the whole input; outputs concatenated."""
    env = {"input": x}
    for stage in plan["stages"]:
        results = []
        for p in stage["parts"]:
            rows = p.get("input_rows")
            feeds = {n: env[n] if rows is None else env[n][:, :, rows[0]:rows[1]] for n in p["inputs"]}
            sess = session(str(verify_part(out, p)), "disable")
            results.append(dict(zip(p["outputs"], sess.run(None, feeds))))
        (name,) = stage["outputs"]
        if stage["strategy"] == "data":  # every replica computes the same frame
            assert all(np.array_equal(r[name], results[0][name]) for r in results)
            env[name] = results[0][name]
        else:
            axis = stage["merge"]["axis"] if stage["merge"] else 0
            env[name] = np.concatenate([r[name] for r in results], axis=axis)
    return env["features"]


def test_every_plan_reproduces_the_original(compiled):
    out, section, x, want = compiled
    assert [len(p["devices"]) for p in section["plans"]] == [3, 2, 1]
    for plan in section["plans"]:
        got = _hub(out, plan, x)
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    tiles = section["plans"][0]["stages"][0]["parts"]
    assert [p["output_rows"] for p in tiles] == [[0, 3], [3, 4], [4, 9]]
    assert tiles[0]["input_rows"][0] == 0 and tiles[-1]["input_rows"][1] == 37  # only the border tiles reach the border
    assert [p["channels"] for p in section["plans"][0]["stages"][1]["parts"]] == [[0, 10], [10, 22], [22, 32]]
    assert section["plans"][0]["stages"][1]["merge"] == {"axis": 1}
    assert section["tensors"]["maxpool_1"] == {"dtype": "float32", "shape": [1, 16, 9, 9]}


@pytest.mark.parametrize(("first", "last"), [(0, 1), (0, 4), (2, 8), (0, 16), (11, 16)])
def test_tiles_read_the_rows_the_planner_prices(chain_model, first, last):
    """The cost model (splitc.partition.blocks.tile) and the parts agree on every tile's input rows."""
    model, plans = chain_model
    src = Source(ir.to_proto(model))
    blocks = plans.chain.blocks[first:last]
    layers = [layer for b in blocks for layer in b.layers]
    names = [n for b in blocks for n in b.nodes]
    h = layers[-1].out_h
    for a, b in {(0, h), (0, 1), (h - 1, h), (h // 3, h // 3 + 1), (h // 4, 3 * h // 4 + 1)}:
        _, rows = tile_part(src, names, (a, b), output=blocks[-1].output)
        assert rows == tile(layers, a, b, 0).in_rows, (a, b)


def test_parts_are_content_addressed_and_shared(compiled):
    out, section, _, _ = compiled
    parts = [p for plan in section["plans"] for s in plan["stages"] for p in s["parts"]]
    files = {p["file"] for p in parts}
    assert {f"parts/{f.name}" for f in (out / "parts").iterdir()} == files  # nothing else written, nothing missing
    for p in parts:
        assert p["file"] == f"parts/{p['sha256'][:16]}.onnx"
        assert (out / p["file"]).stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 0600
    data = section["plans"][0]["stages"][2]["parts"]
    assert data[0]["file"] == data[1]["file"]  # replicas: one file
    assert section["plans"][0]["stages"][3]["parts"][0]["file"] == section["plans"][1]["stages"][2]["parts"][0]["file"]
    # the same tile computed for the two plans (rows [1, 9) is not [3, 4)): different parts, different files
    assert len({p["file"] for p in section["plans"][0]["stages"][0]["parts"] + section["plans"][1]["stages"][0]["parts"]}) == 5


def test_section_follows_the_plan_schema(compiled):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("splitc") / "schema" / "plan.schema.json").read_text())
    _, section, _, _ = compiled
    jsonschema.validate(section, schema["properties"]["cluster"])
    bad = copy.deepcopy(section)
    bad["plans"][0]["stages"][0]["parts"][0]["file"] = "../x.onnx"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema["properties"]["cluster"])


def test_section_passes_the_runtime_checks_and_runs_on_the_cluster_runtime(compiled):
    out, section, x, want = compiled
    (out / "plan.json").write_text(json.dumps({"model": {"outputs": [{"name": "features"}]}, "cluster": section}))
    loaded, outputs = load_section(out)
    assert validate(loaded, out, model_inputs=["input"]) is loaded and outputs == ["features"]
    from splitc.runtimes.cluster import ClusterRunner

    with ClusterRunner(out, spawn=True) as runner:
        got = [r["features"] for r in runner.stream([{"input": x}] * 3, max_in_flight=2)]
    for g in got:
        assert float(np.abs(g - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize(("path", "value", "message"), [
    (("plans", 0, "stages", 0, "shares"), [3, 2, 4], r"stages\[0\].parts\[1\].output_rows list is not \[3, 5\]"),
    (("plans", 0, "stages", 0, "shares"), [3, 1, 6], r"stages\[0\].shares list do not add up to the output's 9 on axis 2"),
    (("plans", 0, "stages", 0, "parts", 2, "output_rows"), [4, 8], r"parts\[2\].output_rows list is not \[4, 9\]"),
    (("plans", 0, "stages", 0, "parts", 2, "input_rows"), [30, 40], r"input_rows .* inside the input's 37 rows"),
    (("plans", 0, "stages", 1, "shares"), [10, 12, 11], r"shares .* do not add up to the output's 32 on axis 1"),
    (("plans", 0, "stages", 1, "merge"), {"axis": 2}, r"merge.axis 2 is not one of 1, -1"),
    (("plans", 0, "stages", 2, "blocks"), [6, 12], r"stages\[2\].blocks .* continue the previous stage's blocks at 5"),
    (("plans", 0, "stages", 2, "parts", 1, "file"), "parts/other.onnx", r"not replicas of one file"),
    (("plans", 0, "stages", 3, "inputs"), ["nowhere"], r"not made by an earlier stage"),
    (("plans", 0, "stages", 3, "parts", 0, "sha256"), "f00", r"sha256 'f00' is not a sha256"),
    (("plans", 0, "stages", 3, "shares"), [2], r"single-device stage is not \[1\]"),
    (("plans", 0, "predicted", "latency_s"), float("nan"), r"predicted.latency_s nan is not a finite number"),
    (("tensors", "maxpool_1", "shape"), [1, 16, -9, 9], r"tensors.maxpool_1.shape\[2\] -9 is not an integer"),
])
def test_a_tampered_section_is_one_line(compiled, path, value, message):
    out, section, _, _ = compiled
    bad = copy.deepcopy(section)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SplitcError, match=message) as e:
        validate(bad, out, model_inputs=["input"])
    assert "\n" not in str(e.value)


def test_a_swapped_part_file_is_refused(compiled, tmp_path):
    out, section, _, _ = compiled
    part = dict(section["plans"][0]["stages"][3]["parts"][0])
    (tmp_path / "parts").mkdir()
    (tmp_path / part["file"]).write_bytes((out / part["file"]).read_bytes() + b"\0")
    with pytest.raises(SplitcError, match="its sha256 is not the plan's"):
        verify_part(tmp_path, part)
    assert verify_part(out, part) == out / part["file"]
