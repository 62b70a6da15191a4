"""Every metadata key splitc attaches to the IR, and the typed annotations of the nodes and values.

Every pass that annotates writes a frozen dataclass under one of the keys below, and every
consumer reads it back through :func:`get`, so a missing annotation is a clear error naming
the pass that should have run. The graph-level results (``PARTITION``, ``PARTS``, ``CODECS``) are typed
where their stage defines them (``PartitionResult``, ``SplitResult``, ``TensorCodec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import onnx_ir as ir

SOURCE = "splitc.source"  # on ir.Model.meta: the model file's name, for messages
TENSOR = "splitc.tensor"  # on ir.Value: TensorInfo
COST = "splitc.cost"  # on ir.Node: NodeCost
LATENCY = "splitc.latency"  # on ir.Node: NodeLatency
REPLICABLE = "splitc.replicable"  # on ir.Node: Replicable
PLACEMENT = "splitc.placement"  # on ir.Node: Placement
CODECS = "splitc.codecs"  # on ir.Graph.meta: tensor name -> TensorCodec (calibration), read by PartitionPass and SplitPass
PARTITION = "splitc.partition"  # on ir.Graph.meta: PartitionResult (PartitionPass)
INPUT_CODECS = "splitc.input_codecs"  # on ir.Graph.meta: input name -> splitc.cost.input_codec.InputCodec (image inputs)
WIRE_SIZES = "splitc.wire_sizes"  # on ir.Graph.meta: tensor name -> splitc.cost.wire_sizes.WireSize (measured)
PARTS = "splitc.parts"  # on ir.Graph.meta: SplitResult (SplitPass)
CLUSTER = "splitc.cluster"  # on ir.Graph.meta: ClusterPlans (splitc.partition.passes.cluster.ClusterPass)


@dataclass(frozen=True)
class TensorInfo:
    """Static facts about one tensor (written by TensorBytesPass)."""

    dtype: str
    shape: tuple[int, ...]
    bytes: int


@dataclass(frozen=True)
class NodeCost:
    """Work done by one node (written by FlopsPass)."""

    flops: float
    bytes_moved: int
    op_class: str
    rule: str  # which cost rule produced it ("default" when the op has none)


@dataclass(frozen=True)
class NodeLatency:
    """Predicted seconds of one node on each target (written by LatencyPass)."""

    seconds: tuple[tuple[str, float], ...]

    def on(self, target: str) -> float:
        return dict(self.seconds)[target]


@dataclass(frozen=True)
class Replicable:
    """The node depends on no graph input: each part recomputes it instead of receiving it."""

    reason: str


@dataclass(frozen=True)
class Placement:
    """Which target runs the node (written by PartitionPass)."""

    target: str


T = TypeVar("T")


def get(obj: ir.Node | ir.Value, key: str, kind: type[T]) -> T:
    value = obj.meta.get(key)
    if not isinstance(value, kind):
        raise LookupError(f"{obj.name!r} has no {key} annotation; run the pass that writes it first")
    return value
