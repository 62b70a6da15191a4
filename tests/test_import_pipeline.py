"""The import pipeline as a whole: an unsorted graph comes out sorted, and control flow (an If whose branches read
outer-scope values) stays whole through import, the cost graph and the split. One pass at a time: tests/test_pass_*.py."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from splitc.compiler import (
    CompileOptions,
    annotate,
    compile_model,
    import_model,
    resolve_targets,
)
from splitc.cost.targets import parse_link
from splitc.errors import SplitcWarning
from splitc.frontend.passes.replicable import is_replicable
from splitc.ir.graph import node_inputs
from splitc.partition.passes.partition import build_cost_graph

try:
    from fixtures_text import (
        IF_MODEL,
        chain_model,
        model_proto,
        run_reference,
        save,
        server_from,
    )
    from golden import by_name, imported
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import (
        IF_MODEL,
        chain_model,
        model_proto,
        run_reference,
        save,
        server_from,
    )
    from tests.golden import by_name, imported

TARGETS = resolve_targets("rpi4,cloud")


def test_unsorted_graph_imports_sorted(tmp_path):
    proto = chain_model()
    nodes = list(proto.graph.node)[::-1]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)  # really unsorted
    model = imported(tmp_path, proto)
    assert [n.name for n in model.graph] == ["conv1", "relu1", "conv2", "relu2", "flat", "fc"]
    seen = {v.name for v in model.graph.inputs} | set(model.graph.initializers)
    for node in model.graph:
        assert all(v.name in seen for v in node.inputs if v is not None), node.name
        seen.update(o.name for o in node.outputs)


# --------------------------------------------------------------------------- control flow stays whole

def test_if_node_inputs_include_outer_scope_values():
    model = ir.from_proto(model_proto(IF_MODEL))
    nodes = by_name(model)
    assert [v.name for v in nodes["cond"].inputs] == ["c"]
    assert sorted(v.name for v in node_inputs(nodes["cond"])) == ["a", "b", "c"]
    a = nodes["relu"].outputs[0]  # read inside the If's body: the If is one of its top-level consumers
    assert {n.name for n in model.graph if a in node_inputs(n)} == {"sig", "cond"}


def test_if_model_splits_only_around_the_if(tmp_path):
    proto = model_proto(IF_MODEL)
    path = save(proto, tmp_path / "if.onnx")
    model = import_model(path)
    assert not is_replicable(by_name(model)["cond"])  # its body reads a dynamic tensor
    # the cost graph sees the If as one node reading c, a and b
    with pytest.warns(SplitcWarning, match="'If'"):
        annotate(model, TARGETS)
    cg = build_cost_graph(model, TARGETS, parse_link("4g"), "fp32")
    assert [n.name for n in cg.nodes] == ["relu", "sig", "cond", "tanh"]
    readers = {t.name: [cg.nodes[c].name for c in t.consumers] for t in cg.tensors}
    assert readers["a"] == ["sig", "cond"] and readers["b"] == ["cond"] and readers["c"] == ["cond"]

    with pytest.warns(SplitcWarning):
        result = compile_model(path, tmp_path / "out", CompileOptions(boundary="fp32"), policy=server_from("cond"))
    assert result.plan["cut"] == ["a", "b", "c"]
    head, tail = result.split.parts[0], result.split.parts[1]
    assert [n.name for n in head.graph] == ["relu", "sig"]
    assert [n.name for n in tail.graph] == ["cond", "tanh"]
    body = {g.name: [n.name for n in g] for g in (a.value for a in by_name(tail)["cond"].attributes.values())}
    assert body == {"then_g": ["then_add"], "else_g": ["else_mul"]}  # the body is intact

    from splitc.runtimes import SplitModel

    runtime = SplitModel(tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(runtime.run(feeds).outputs["y"], run_reference(proto, feeds)["y"])


def test_if_model_optimal_plan_never_cuts_inside(tmp_path):
    path = save(model_proto(IF_MODEL), tmp_path / "if.onnx")
    with pytest.warns(SplitcWarning):
        result = compile_model(path, None, CompileOptions(link="up=1Gbps,down=1Gbps,rtt=0ms"))
    cg = result.partition.cost_graph
    assert [n.op_type for n in cg.nodes] == ["Relu", "Sigmoid", "If", "Tanh"]
    assert math.isfinite(result.partition.solution.cost.total_s) and result.partition.solution.cost.feasible
