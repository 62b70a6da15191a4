"""LatencyPass: per node, its predicted seconds on each target from the node's cost and the target's profile."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from splitc.compiler import annotate, resolve_targets
from splitc.cost.passes.flops import FlopsPass
from splitc.cost.passes.latency import LatencyPass
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.errors import SplitcWarning
from splitc.frontend.passes.replicable import ReplicablePass, is_replicable
from splitc.ir import metadata as ann

try:
    from fixtures_text import chain_model, model_proto
    from golden import assert_model, by_name, imported, parse
    from test_pass_replicable import REPLICABLE
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import chain_model, model_proto
    from tests.golden import assert_model, by_name, imported, parse
    from tests.test_pass_replicable import REPLICABLE

TARGETS = resolve_targets("rpi4,cloud")
CONV = """
<ir_version: 8, opset_import: ["" : 17]>
op (float[1,3,8,8] x) => (float[1,4,8,8] y) {
  [op] y = Conv <pads=[1,1,1,1]> (x, w, b)
}
"""


def test_latency_equals_profile(tmp_path):
    model = imported(tmp_path, model_proto(REPLICABLE, {"w": np.ones((3, 2), np.float32)}))
    with pytest.warns(SplitcWarning, match="'RandomNormal'"):
        annotate(model, TARGETS)
    for node in model.graph:
        cost, lat = node.meta[ann.COST], node.meta[ann.LATENCY]
        assert [t for t, _ in lat.seconds] == ["rpi4", "cloud"]
        for target in TARGETS:
            if is_replicable(node):
                assert lat.on(target.name) == 0.0
            else:
                expected = target.latency(cost.flops, cost.bytes_moved, cost.op_class)
                assert expected > 0
                assert lat.on(target.name) == expected


def _profile(name: str, conv: float, memory: float, overhead: float):
    from splitc.cost.targets import OP_CLASSES, parse_profile

    compute = {c: 1e9 for c in OP_CLASSES} | {"conv": conv, "memory_bytes_per_s": memory, "op_overhead_s": overhead}
    return parse_profile({"name": name, "compute": compute, "codec": {"encode_bytes_per_s": 1e9, "decode_bytes_per_s": 1e9}}, name)


def test_latency_golden_numbers():
    text = CONV
    inits = {"w": np.ones((4, 3, 3, 3), np.float32), "b": np.ones(4, np.float32)}
    model = parse(text, inits)
    ReplicablePass()(model)
    TensorBytesPass("op.onnx")(model)
    slow_compute = _profile("slow-compute", conv=1e9, memory=1e9, overhead=1e-5)
    slow_memory = _profile("slow-memory", conv=1e12, memory=1e8, overhead=0.0)
    FlopsPass()(model)
    LatencyPass((slow_compute, slow_memory))(model)
    lat = by_name(model)["op"].meta[ann.LATENCY]
    assert_model(model, text, inits)  # annotations only
    # 14080 FLOPs, 2240 bytes: overhead + max(flops / rate, bytes / bandwidth)
    assert lat.seconds == (("slow-compute", pytest.approx(1e-5 + 14080 / 1e9)), ("slow-memory", pytest.approx(2240 / 1e8)))


def test_latency_pass_requires_costs(tmp_path):
    model = imported(tmp_path, chain_model())
    with pytest.raises(ir.passes.PreconditionError) as err:
        LatencyPass(TARGETS)(model)
    assert isinstance(err.value.__cause__, LookupError)
    assert "'conv1' has no splitc.cost annotation" in str(err.value.__cause__)
