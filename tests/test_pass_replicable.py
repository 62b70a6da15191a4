"""ReplicablePass: nodes that depend on no graph input are marked (and why); it changes no graph."""

from __future__ import annotations

import numpy as np
import pytest

from splitc.compiler import annotate, resolve_targets
from splitc.cost.targets import parse_link
from splitc.errors import SplitcWarning
from splitc.frontend.passes.replicable import ReplicablePass, is_replicable
from splitc.ir import metadata as ann
from splitc.partition.passes.partition import build_cost_graph

try:
    from fixtures_text import model_proto
    from golden import assert_model, by_name, imported, parse
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_proto
    from tests.golden import assert_model, by_name, imported, parse

TARGETS = resolve_targets("rpi4,cloud")

REPLICABLE = """
<ir_version: 8, opset_import: ["" : 17]>
rep (float[2,3] x) => (float[2,3] y, float[2,3] noisy) {
  [k] k = Constant <value=float[1] {2.0}> ()
  [shp] shp = Constant <value=int64[2] {2, 3}> ()
  [fill] z = ConstantOfShape <value=float[1] {0.5}> (shp)
  [wt] wt = Transpose <perm=[1,0]> (w)
  [wsum] w2 = Add (z, k)
  [wmix] w3 = Add (w2, wt)
  [mul] a = Mul (x, w3)
  [shape] s = Shape (a)
  [reshape] r = Reshape (a, s)
  [relu] y = Relu (r)
  [rand] rn = RandomNormal <shape=[2,3]> ()
  [noise] noisy = Add (y, rn)
}
"""
W = {"w": np.ones((3, 2), np.float32)}
CONSTANT, WEIGHTS = "constant", "depends only on weights and static shapes"


def test_golden_annotations_on_the_pass_alone():
    model = parse(REPLICABLE, W)
    assert ReplicablePass()(model).modified
    marks = {n.name: (n.meta[ann.REPLICABLE].reason if is_replicable(n) else None) for n in model.graph}
    # Shape of a dynamic tensor reads it (MaterializeShapesPass folds it first in the pipeline); RandomNormal reads
    # nothing but would differ if computed twice
    assert marks == {"k": CONSTANT, "shp": CONSTANT, "fill": CONSTANT, "wt": WEIGHTS, "wsum": WEIGHTS, "wmix": WEIGHTS,
                     "mul": None, "shape": None, "reshape": None, "relu": None, "rand": None, "noise": None}
    assert_model(model, REPLICABLE, W)  # annotations only: the graph is unchanged


def test_a_stale_mark_is_removed():
    model = parse(REPLICABLE, W)
    by_name(model)["mul"].meta[ann.REPLICABLE] = ann.Replicable(CONSTANT)
    ReplicablePass()(model)
    assert not is_replicable(by_name(model)["mul"])


def test_replicable(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, W))
    nodes = by_name(model)
    replicable = {name for name, n in nodes.items() if is_replicable(n)}
    assert replicable == {"k", "shp", "fill", "wt", "wsum", "wmix", "shape"}
    assert nodes["k"].meta[ann.REPLICABLE].reason == "constant"
    assert nodes["fill"].meta[ann.REPLICABLE].reason == "constant"
    assert nodes["wmix"].meta[ann.REPLICABLE].reason == "depends only on weights and static shapes"
    # RandomNormal reads nothing, but computing it twice would differ: never replicated
    assert not is_replicable(nodes["rand"])


def test_replicable_nodes_stay_out_of_the_cost_graph(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, W))
    with pytest.warns(SplitcWarning, match="'RandomNormal'"):
        annotate(model, TARGETS)
    cg = build_cost_graph(model, TARGETS, parse_link("4g"), "int8")
    assert [n.name for n in cg.nodes] == ["mul", "reshape", "relu", "rand", "noise"]
    # a replicable tensor (w3, the reshape target) is never a cost-graph tensor
    assert {t.name for t in cg.tensors} == {"x", "a", "r", "y", "rn", "noisy"}


