"""Partition pass: build the plain cost graph from the annotated IR, ask the policy, record placements.

The decision is a callback (``policy``: CostGraph -> Solution); this pass is the mechanics
around it, so any optimizer can be plugged in and each side is testable alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

from splitc import annotations as ann
from splitc.costgraph import CNode, CostGraph, CTensor
from splitc.graphutil import graph_inputs, node_inputs
from splitc.optimizer import Solution, baselines, solve_ilp
from splitc.passes.replicable import is_replicable
from splitc.targets import DeviceProfile, Link

PARTITION = "splitc.partition"  # on ir.Graph.meta: PartitionResult

_FLOAT = {"float", "float16", "bfloat16", "double"}


@dataclass(frozen=True)
class PartitionResult:
    cost_graph: CostGraph
    solution: Solution
    baselines: dict[str, Solution]


def encoded_bytes(info: ann.TensorInfo, boundary: str) -> tuple[int, str]:
    """Bytes on the wire for one tensor under the boundary codec (before entropy coding)."""
    if boundary == "int8" and info.dtype in _FLOAT:
        n = info.bytes // {"float": 4, "float16": 2, "bfloat16": 2, "double": 8}[info.dtype]
        return n + 5, "int8-dynamic+zstd"  # uint8 payload + fp32 scale + uint8 zero point
    return info.bytes, "raw+zstd"


def build_cost_graph(model: ir.Model, targets: tuple[DeviceProfile, ...], link: Link, boundary: str) -> CostGraph:
    graph = model.graph
    nodes = [n for n in graph if not is_replicable(n)]
    index = {id(n): i for i, n in enumerate(nodes)}
    cnodes = tuple(
        CNode(n.name, n.op_type, tuple(ann.get(n, ann.LATENCY, ann.NodeLatency).on(t.name) for t in targets)) for n in nodes
    )
    consumers: dict[int, list[int]] = {}
    values: dict[int, ir.Value] = {}
    for i, n in enumerate(nodes):
        for v in node_inputs(n):
            producer = v.producer()
            if v.is_initializer() or (producer is not None and is_replicable(producer)):
                continue
            consumers.setdefault(id(v), []).append(i)
            values[id(v)] = v
    outputs = {id(v) for v in graph.outputs}
    tensors = []
    candidates = list(graph_inputs(graph)) + [o for n in nodes for o in n.outputs]
    for v in candidates:
        if id(v) not in consumers and id(v) not in outputs:
            continue
        info = ann.get(v, ann.TENSOR, ann.TensorInfo)
        producer = v.producer()
        enc, codec = encoded_bytes(info, boundary)
        if id(v) in outputs:
            enc, codec = info.bytes, "raw+zstd"  # results come back losslessly
            if producer is None:
                continue  # an input passed straight through: already on the device
        tensors.append(
            CTensor(
                v.name,
                index[id(producer)] if producer is not None else None,
                tuple(sorted(set(consumers.get(id(v), ())))),
                id(v) in outputs,
                info.bytes,
                enc,
                codec,
            )
        )
    tied = []
    for i, n in enumerate(nodes):
        rule = ann.get(n, ann.COST, ann.NodeCost).rule
        if rule.startswith("fused_into:") and n.inputs[0] is not None and id(n.inputs[0].producer()) in index:
            tied.append((index[id(n.inputs[0].producer())], i))
    return CostGraph(
        tuple(t.name for t in targets),
        cnodes,
        tuple(tensors),
        link,
        tuple(t.encode_bytes_per_s for t in targets),
        tuple(t.decode_bytes_per_s for t in targets),
        tuple(tied),
    )


@dataclass
class PartitionPass(ir.passes.InPlacePass):
    targets: tuple[DeviceProfile, ...] = ()
    link: Link | None = None
    boundary: str = "int8"
    policy: Callable[[CostGraph], Solution] = field(default=solve_ilp)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        cg = build_cost_graph(model, self.targets, self.link, self.boundary)
        solution = self.policy(cg)
        placed = dict(zip((n.name for n in cg.nodes), solution.placement))
        for node in model.graph:
            if node.name in placed:
                node.meta[ann.PLACEMENT] = ann.Placement(self.targets[placed[node.name]].name)
        model.graph.meta[PARTITION] = PartitionResult(cg, solution, baselines(cg))
        return ir.passes.PassResult(model, True)
