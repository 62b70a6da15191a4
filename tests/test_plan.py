"""plan.json: valid against its schema, self-sufficient (the total recomputes from it alone), honest baselines."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from splitc.compiler import CompileOptions, compile_model
from splitc.codegen.plan import recompute_total

try:
    from fixtures_text import server_from
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import server_from


def residual_model(path):
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
             for n, s in (("w1", (16, 3, 3, 3)), ("w2", (16, 16, 3, 3)), ("w3", (16, 16, 3, 3)), ("fc", (16, 10)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4, strides=[2, 2], name="stem"),
        helper.make_node("Relu", ["a"], ["a_r"], name="stem_relu"),
        helper.make_node("Conv", ["a_r", "w2"], ["b"], pads=[1] * 4, name="c1"),
        helper.make_node("Relu", ["b"], ["b_r"], name="c1_relu"),
        helper.make_node("Conv", ["b_r", "w3"], ["c"], pads=[1] * 4, name="c2"),
        helper.make_node("Add", ["c", "a_r"], ["s"], name="skip"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


SCHEMA = json.loads((resources.files("splitc") / "schema" / "plan.schema.json").read_text())


@pytest.mark.parametrize("link", ["3g", "4g", "wifi", "up=1Gbps,down=1Gbps,rtt=0.2ms"])
@pytest.mark.parametrize("boundary", ["int8", "fp32"])
def test_plan_is_valid_and_self_sufficient(tmp_path, link, boundary):
    model = residual_model(tmp_path / "res.onnx")
    result = compile_model(model, tmp_path / "out", CompileOptions(link=link, boundary=boundary))
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    jsonschema.validate(plan, SCHEMA)
    assert plan == json.loads(json.dumps(result.plan))
    assert recompute_total(plan) == pytest.approx(plan["predicted"]["total_s"], rel=1e-12)
    for name, base in plan["baselines"].items():
        assert plan["predicted"]["total_s"] <= base["total_s"] * (1 + 1e-9), name
    assert set(plan["artifacts"].values()) <= {p.name for p in (tmp_path / "out").iterdir()}
    placed = {n["name"]: n["target"] for n in plan["nodes"]}
    for b in plan["boundary"]:  # every crossing goes between the tiers its producer and consumers are on
        t = next(t for t in plan["tensors"] if t["name"] == b["tensor"])
        src = placed[t["producer"]] if t["producer"] else plan["targets"][0]["name"]
        assert src == b["from"]
        assert b["to"] in {placed[c] for c in t["consumers"]} | ({plan["targets"][0]["name"]} if t["is_output"] else set())


def test_fast_link_splits_and_slow_link_stays_on_device(tmp_path):
    model = residual_model(tmp_path / "res.onnx")
    slow = compile_model(model, None, CompileOptions(link="3g")).plan
    assert slow["boundary"] == [] and slow["artifacts"] == {"rpi4": "head.onnx"}
    fast = compile_model(model, None, CompileOptions(link="up=10Gbps,down=10Gbps,rtt=0.01ms")).plan
    assert fast["boundary"] and set(fast["artifacts"]) == {"rpi4", "cloud"}
    assert fast["predicted"]["total_s"] < fast["baselines"]["device_only"]["total_s"]


def test_residual_tensor_sent_once(tmp_path):
    """The stem output feeds both the conv branch and the skip Add: sent once when both are on the server."""
    model = residual_model(tmp_path / "res.onnx")
    result = compile_model(model, None, CompileOptions(link="up=1Gbps,down=1Gbps,rtt=0.01ms", boundary="fp32"),
                           policy=server_from("c1"))  # the stem on the device, its two readers on the server
    plan = result.plan
    assert [(b["tensor"], b["from"], b["to"]) for b in plan["boundary"]] == [("a_r", "rpi4", "cloud"), ("logits", "cloud", "rpi4")]
    assert plan["cut"] == ["a_r"]
    tail = result.split.parts[1]
    assert [v.name for v in tail.graph.inputs] == ["a_r"]
    assert sorted(n.name for n in tail.graph if "a_r" in [v.name for v in n.inputs if v is not None]) == ["c1", "skip"]


def test_plan_text_is_indented_for_people_and_compact_for_huge_plans():
    import json

    from splitc.codegen.emit import plan_text

    small = {"schema": "splitc.plan/1", "nodes": [{"name": f"n{i}"} for i in range(3)]}
    huge = {"schema": "splitc.plan/1", "nodes": [{"name": f"n{i}"} for i in range(2001)]}
    assert plan_text(small).count("\n") > 3 and json.loads(plan_text(small)) == small
    assert plan_text(huge).count("\n") == 1 and json.loads(plan_text(huge)) == huge  # the C encoder: one line
