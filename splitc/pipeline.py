"""The compile pipeline as data, one list of passes per stage (the way TVM's ``relax/pipeline.py`` lists its passes).

    IMPORT     ONNX -> IR: fix input shapes, sort, name, infer shapes, fold shape arithmetic, mark what is replicable
    ANNOTATE   bytes per tensor, FLOPs per node, latency per node on each target (splitc.cost)
    PARTITION  the cost graph, the policy's placement, the baselines (splitc.partition)
    CODEGEN    the parts with their boundary ops (splitc.codegen)

Each stage is a function from its options to a list of passes; :func:`run_passes` runs one. ``splitc.compiler``
strings the stages together; the passes never call each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedNodesPass, TopologicalSortPass

from splitc.codegen.passes.split import SplitPass
from splitc.cost.passes.flops import FlopsPass
from splitc.cost.passes.latency import LatencyPass
from splitc.cost.passes.tensor_bytes import TensorBytesPass
from splitc.cost.targets import DeviceProfile, Link
from splitc.errors import SplitcError
from splitc.frontend.passes.fix_input_shapes import FixInputShapesPass
from splitc.frontend.passes.infer_shapes import InferShapesPass
from splitc.frontend.passes.materialize_shapes import MaterializeShapesPass
from splitc.frontend.passes.replicable import ReplicablePass
from splitc.partition.costgraph import CostGraph
from splitc.partition.passes.partition import PartitionPass
from splitc.partition.problem import Goal, Solution


def IMPORT(model_name: str, input_shapes: Mapping[str, tuple[int, ...]]) -> list[ir.passes.PassBase]:  # noqa: N802
    return [
        FixInputShapesPass(dict(input_shapes), model_name),
        TopologicalSortPass(),
        NameFixPass(),
        InferShapesPass(model_name),
        MaterializeShapesPass(),
        RemoveUnusedNodesPass(),
        ReplicablePass(),
    ]


def ANNOTATE(model_name: str, targets: tuple[DeviceProfile, ...]) -> list[ir.passes.PassBase]:  # noqa: N802
    return [TensorBytesPass(model_name), FlopsPass(), LatencyPass(targets)]


def PARTITION(targets: tuple[DeviceProfile, ...], links: tuple[Link, ...], boundary: str, goal: Goal, *,  # noqa: N802
              allow_return: bool = False, time_limit_s: float | None = None,
              policy: Callable[[CostGraph], Solution] | None = None) -> list[ir.passes.PassBase]:
    return [PartitionPass(targets, links, boundary, policy=policy, goal=goal, allow_return=allow_return,
                          time_limit_s=time_limit_s)]


def CODEGEN(boundary: str) -> list[ir.passes.PassBase]:  # noqa: N802
    return [SplitPass(boundary)]


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.Model:
    """Run a pipeline; a user-facing error raised inside a pass surfaces as itself, not wrapped."""
    try:
        return ir.passes.PassManager(passes)(model).model
    except ir.passes.PassError as e:
        cause = e
        while cause.__cause__ is not None and isinstance(cause, ir.passes.PassError):
            cause = cause.__cause__
        if isinstance(cause, SplitcError):
            raise cause from None
        raise
