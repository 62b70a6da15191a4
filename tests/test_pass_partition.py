"""PartitionPass: the policy's placement written on every costed node, the PartitionResult on the graph.

Run on ONNX text with the annotations it reads (ReplicablePass, TensorBytesPass, FlopsPass, LatencyPass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from splitc.compiler import resolve_targets
from splitc.cost.passes.flops import FlopsPass
from splitc.cost.passes.latency import LatencyPass
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.cost.quantizers import CodecSpec, TensorCodec
from splitc.cost.targets import parse_link
from splitc.frontend.passes.replicable import ReplicablePass
from splitc.ir import metadata as ann
from splitc.partition.passes.partition import PartitionPass, PartitionResult
from splitc.partition.problem import Goal, fixed

try:
    from golden import assert_model, parse
    from test_pass_split import SMALL, W
except ImportError:  # tests/ imported as a package
    from tests.golden import assert_model, parse
    from tests.test_pass_split import SMALL, W

TARGETS = resolve_targets("rpi4,cloud")
LINK = parse_link("4g")


def annotated():
    model = parse(SMALL, W)
    for p in (ReplicablePass(), TensorBytesPass("small.onnx"), FlopsPass(), LatencyPass(TARGETS)):
        p(model)
    return model


def placements(model) -> dict[str, str | None]:
    return {n.name: (n.meta[ann.PLACEMENT].target if ann.PLACEMENT in n.meta else None) for n in model.graph}


def test_golden_annotations_of_a_fixed_placement():
    model = annotated()
    PartitionPass(TARGETS, LINK, "int8", policy=fixed(lambda cg: [0, 0, 1, 1, 1]))(model)
    # the replicable constant runs wherever it is needed: no placement
    assert placements(model) == {"shape": None, "relu": "rpi4", "mul": "rpi4", "resh": "cloud", "neg": "cloud", "add": "cloud"}
    result = model.graph.meta[ann.PARTITION]
    assert isinstance(result, PartitionResult) and result.goal == Goal()
    assert result.solution.placement == (0, 0, 1, 1, 1)
    assert [n.name for n in result.cost_graph.nodes] == ["relu", "mul", "resh", "neg", "add"]
    cut = {t.name: (t.raw_bytes, t.encoded_bytes, t.codec) for t in result.cost_graph.tensors}
    assert cut == {"x": (16, 9, "int8-dynamic+zstd"), "a": (16, 9, "int8-dynamic+zstd"), "m": (16, 9, "int8-dynamic+zstd"),
                   "r": (16, 9, "int8-dynamic+zstd"), "n": (16, 9, "int8-dynamic+zstd"), "y": (16, 9, "int8-dynamic+zstd")}
    assert set(result.baselines) >= {"device_only", "cloud_only"}
    assert result.baselines["device_only"].placement == (0,) * 5
    assert_model(model, SMALL, W)  # annotations only


def test_the_default_policy_is_the_exact_optimizer_and_beats_every_baseline():
    model = annotated()
    PartitionPass(TARGETS, LINK, "fp32")(model)
    result = model.graph.meta[ann.PARTITION]
    assert result.solution.method.startswith("ilp/")
    assert all(result.solution.cost.total_s <= b.cost.total_s * (1 + 1e-9) for b in result.baselines.values())
    assert placements(model) == {n.name: (None if n.name == "shape" else TARGETS[t].name)
                                 for n, t in zip(model.graph, (None, *result.solution.placement))}


def test_codecs_given_to_the_pass_or_carried_by_the_model():
    codec = TensorCodec(CodecSpec("u4", "static", 4), np.array(0.05, np.float32), np.array(0, np.uint8), None)
    given = annotated()
    PartitionPass(TARGETS, LINK, "int8", policy=fixed(lambda cg: [0] * 5), codecs={"a": codec})(given)
    carried = annotated()
    carried.graph.meta[ann.CODECS] = {"a": codec}
    PartitionPass(TARGETS, LINK, "int8", policy=fixed(lambda cg: [0] * 5))(carried)
    for model in (given, carried):
        a = next(t for t in model.graph.meta[ann.PARTITION].cost_graph.tensors if t.name == "a")
        assert (a.encoded_bytes, a.codec) == (2, "u4+zstd")  # 4 values x 4 bits


def test_the_pass_is_a_frozen_dataclass_of_its_options():
    p = PartitionPass(TARGETS, LINK, "int8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.boundary = "fp32"  # type: ignore[misc]
    assert p == PartitionPass(TARGETS, LINK, "int8") and p != PartitionPass(TARGETS, LINK, "fp32")
