"""Partition pass: build the plain cost graph from the annotated IR, ask the policy, record placements.

The decision is a callback (``policy``: CostGraph -> Solution); this pass is the mechanics
around it, so any optimizer can be plugged in and each side is testable alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

from splitc.ir import metadata as ann
from splitc.partition.costgraph import CNode, CostGraph, CTensor, CWeight
from splitc.ir.graph import graph_inputs, node_inputs
from splitc.partition.baselines import baselines
from splitc.partition.optimizer import Goal, Solution, solve
from splitc.frontend.passes.replicable import is_replicable
from splitc.cost.targets import DeviceProfile, Link


_FLOAT = {"float", "float16", "bfloat16", "double"}


@dataclass(frozen=True)
class PartitionResult:
    cost_graph: CostGraph
    solution: Solution
    baselines: dict[str, Solution]
    goal: Goal = Goal()


def encoded_bytes(info: ann.TensorInfo, boundary: str, codec=None) -> tuple[int, str]:
    """Bytes on the wire for one tensor under the boundary codec (before entropy coding); with a calibrated
    ``codec`` (splitc.cost.quantizers.TensorCodec), its mean payload measured on the calibration data."""
    if codec is not None and info.dtype in _FLOAT:
        n = info.bytes // {"float": 4, "float16": 2, "bfloat16": 2, "double": 8}[info.dtype]
        return (codec.measured_bytes if codec.measured_bytes is not None else (n * codec.bits + 7) // 8), codec.name
    if boundary == "int8" and info.dtype in _FLOAT:
        n = info.bytes // {"float": 4, "float16": 2, "bfloat16": 2, "double": 8}[info.dtype]
        return n + 5, "int8-dynamic+zstd"  # uint8 payload + fp32 scale + uint8 zero point
    return info.bytes, "raw+zstd"


def _measured(v: ir.Value, is_input: bool, enc: int, codec: str, down: int | None, meta, targets):
    """An image input's codec (bytes, name, per-tier coder seconds: splitc.cost.input_codec), or the payload sizes
    measured on calibration data (splitc.cost.wire_sizes), in place of the estimates."""
    ic = (meta.get(ann.INPUT_CODECS) or {}).get(v.name) if is_input else None
    if ic is not None and ic.compressed:
        return ic.bytes, ic.codec.name, down, ic.coder_s(targets)
    size = (meta.get(ann.WIRE_SIZES) or {}).get(v.name)
    if size is not None:
        enc = size.payload(codec) or enc
        down = (size.payload("raw+zstd") or down) if down is not None else None
    return enc, codec, down, None


def build_cost_graph(model: ir.Model, targets: tuple[DeviceProfile, ...], links: Link | tuple[Link, ...], boundary: str,
                     allow_return: bool = False, codecs: dict | None = None) -> CostGraph:
    graph = model.graph
    nodes = [n for n in graph if not is_replicable(n)]
    index = {id(n): i for i, n in enumerate(nodes)}
    cnodes = tuple(
        CNode(n.name, n.op_type, tuple(ann.get(n, ann.LATENCY, ann.NodeLatency).on(t.name) for t in targets)) for n in nodes
    )
    consumers: dict[int, list[int]] = {}
    readers: dict[int, tuple[ir.Value, list[int]]] = {}  # weights: initializers or tensors computed from them
    for i, n in enumerate(nodes):
        for v in node_inputs(n):
            producer = v.producer()
            if v.is_initializer() or (producer is not None and is_replicable(producer)):
                readers.setdefault(id(v), (v, []))[1].append(i)
                continue
            consumers.setdefault(id(v), []).append(i)
    outputs = {id(v) for v in graph.outputs}
    tensors = []
    for v in list(graph_inputs(graph)) + [o for n in nodes for o in n.outputs]:
        if id(v) not in consumers and id(v) not in outputs:
            continue
        producer = v.producer()
        if producer is None and not consumers.get(id(v)):
            continue  # an input passed straight through: already on the device
        info = ann.get(v, ann.TENSOR, ann.TensorInfo)
        enc, codec = encoded_bytes(info, boundary, (codecs or {}).get(v.name))
        down = info.bytes if id(v) in outputs else None  # results come back losslessly
        enc, codec, down, coder = _measured(v, producer is None, enc, codec, down, graph.meta, targets)
        factor = getattr((codecs or {}).get(v.name), "coder_factor", (1.0, 1.0))
        tensors.append(CTensor(
            v.name,
            index[id(producer)] if producer is not None else None,
            tuple(sorted(set(consumers.get(id(v), ())))),
            id(v) in outputs,
            info.bytes,
            enc,
            codec,
            down,
            coder,
            tuple(factor) if coder is None else (1.0, 1.0),
        ))
    weights = []
    for v, who in readers.values():
        info = v.meta.get(ann.TENSOR)
        nbytes = info.bytes if info is not None else (v.const_value.nbytes if v.const_value is not None else 0)
        weights.append(CWeight(v.name, int(nbytes), tuple(sorted(set(who)))))
    tied = []
    for i, n in enumerate(nodes):
        rule = ann.get(n, ann.COST, ann.NodeCost).rule
        if rule.startswith("fused_into:") and n.inputs[0] is not None and id(n.inputs[0].producer()) in index:
            tied.append((index[id(n.inputs[0].producer())], i))
    return CostGraph(
        tuple(t.name for t in targets),
        cnodes,
        tuple(tensors),
        links if isinstance(links, tuple) else (links,),
        tuple(t.encode_bytes_per_s for t in targets),
        tuple(t.decode_bytes_per_s for t in targets),
        tuple(tied),
        tuple(weights),
        tuple(t.busy_power_w for t in targets),
        allow_return,
        tuple(t.idle_power_w for t in targets),
    )


@dataclass(frozen=True)
class PartitionPass(ir.passes.InPlacePass):
    targets: tuple[DeviceProfile, ...] = ()
    link: Link | tuple[Link, ...] | None = None
    boundary: str = "int8"
    policy: Callable[[CostGraph], Solution] | None = None
    goal: Goal = field(default_factory=Goal)
    allow_return: bool = False
    time_limit_s: float | None = None
    codecs: dict | None = None  # tensor name -> splitc.cost.quantizers.TensorCodec (calibrated boundaries)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        codecs = self.codecs if self.codecs is not None else model.graph.meta.get(ann.CODECS)
        cg = build_cost_graph(model, self.targets, self.link, self.boundary, self.allow_return, codecs)
        policy = self.policy or (lambda g: solve(g, self.goal, self.time_limit_s))
        solution = policy(cg)
        placed = dict(zip((n.name for n in cg.nodes), solution.placement))
        for node in model.graph:
            if node.name in placed:
                node.meta[ann.PLACEMENT] = ann.Placement(self.targets[placed[node.name]].name)
        model.graph.meta[ann.PARTITION] = PartitionResult(cg, solution, baselines(cg, self.goal), self.goal)
        return ir.passes.PassResult(model, True)
