"""Cluster pass: the annotated IR -> the block chain (splitc.partition.blocks, plain numbers) -> the plans of every
sub-multiset of the cluster's devices (splitc.partition.cluster). The only IR-aware piece of cluster planning.

Blocks are cut at single-tensor cuts: a topological sweep counting the tensors live between consecutive nodes (for a
true single-tensor cut every node before it is an ancestor of the cut tensor and every node after it a descendant,
so any topological order finds every cut). A cut is never placed between a kernel and what onnxruntime fuses into it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import onnx_ir as ir

from splitc.cost.cluster import ClusterSpec
from splitc.cost.fit import conv_kernel
from splitc.cost.targets import DeviceProfile
from splitc.errors import SplitcError
from splitc.frontend.passes.replicable import is_replicable
from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs, node_inputs, static_dims
from splitc.partition.blocks import Block, BlockChain, Layer
from splitc.partition.cluster import ClusterPlan, full_counts, plan_all

UNARY = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Identity",
         "Abs", "Neg", "Exp", "Sqrt", "Erf", "Gelu", "Mish", "Celu", "ThresholdedRelu", "Dropout", "BatchNormalization"}
BINARY = {"Add", "Sub", "Mul", "Div", "PRelu", "Pow", "Max", "Min"}  # with a constant broadcast per channel or scalar
POOLS = {"MaxPool", "AveragePool", "LpPool"}


@dataclass(frozen=True)
class ClusterPlans:
    chain: BlockChain
    spec: ClusterSpec
    plans: dict[tuple[int, ...], ClusterPlan]  # devices per group (then the server) -> its best plan
    best: ClusterPlan  # the plan of the whole cluster


def _weight_like(v: ir.Value) -> bool:
    p = v.producer()
    return v.is_initializer() or v.const_value is not None or (p is not None and is_replicable(p))


def _bytes(v: ir.Value) -> int:
    info = v.meta.get(ann.TENSOR)
    if isinstance(info, ann.TensorInfo):
        return info.bytes
    return v.const_value.nbytes if v.const_value is not None else 0


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else default


def _axis(node: ir.Node, rank: int, default: int = 0) -> int:
    attr = node.attributes.get("axis")
    return (attr.as_int() if attr is not None else default) % rank


def _channel_slice(node: ir.Node) -> bool:
    """A Slice whose constant ``axes`` name the channel axis only (its starts/ends/steps then leave H whole)."""
    axes = node.inputs[3] if len(node.inputs) > 3 else None
    if axes is None or axes.const_value is None:
        return False
    return [int(a) % 4 for a in axes.const_value.numpy().reshape(-1)] == [1]


def _geometry(node: ir.Node, dyn: list[ir.Value], outs: list[ir.Value]) -> dict | None:
    """H geometry of an H-local layer over NCHW (every dynamic input and output 4-d), or None."""
    shapes = [static_dims(v) for v in [*dyn, *outs]]
    if not dyn or not outs or any(sh is None or len(sh) != 4 for sh in shapes):
        return None
    xs, ys = shapes[0], shapes[len(dyn)]
    g = {"in_h": xs[2], "out_h": ys[2]}
    op = node.op_type
    if op == "Conv" or op in POOLS:
        if len(dyn) != 1 or len(outs) != 1:
            return None
        w = static_dims(node.inputs[1]) if op == "Conv" and len(node.inputs) > 1 and node.inputs[1] is not None else None
        k = (w[2] if w and len(w) == 4 else 0) if op == "Conv" else _ints(node, "kernel_shape", [0])[0]
        s, d = _ints(node, "strides", [1, 1])[0], _ints(node, "dilations", [1, 1])[0]
        attr = node.attributes.get("auto_pad")
        auto = attr.as_string() if attr is not None else "NOTSET"
        if k <= 0:
            return None
        if auto in ("NOTSET", "VALID"):
            pads = _ints(node, "pads", [0, 0, 0, 0]) if auto == "NOTSET" else [0, 0, 0, 0]
            top, bottom = pads[0], pads[len(pads) // 2]
        else:
            total = max((ys[2] - 1) * s + (k - 1) * d + 1 - xs[2], 0)
            top = total // 2 if auto == "SAME_UPPER" else total - total // 2
            bottom = total - top
        return {**g, "kernel_h": k, "stride_h": s, "pad_top": top, "pad_bottom": bottom, "dilation": d}
    if any(sh[2] != ys[2] for sh in shapes):  # row r of every output reads row r of every dynamic input
        return None
    if op in UNARY and len(dyn) == 1:
        return g
    if op in BINARY:
        consts = [static_dims(v) for v in node.inputs if v is not None and _weight_like(v)]
        if len(dyn) == 1 and len(consts) == 1 and consts[0] is not None and (len(consts[0]) < 2 or consts[0][-2] == 1):
            return g
        if len(dyn) == 2 and not consts and len(outs) == 1:  # two activations of the same H (a skip, a SiLU)
            return g
    if op == "Concat" and _axis(node, 4) == 1 and len(outs) == 1 and len(dyn) == len(node.inputs):
        return g
    if op == "Split" and _axis(node, 4) == 1 and len(dyn) == 1:
        return g
    if op == "Slice" and len(dyn) == 1 and _channel_slice(node):
        return g
    return None


def _channel_head(node: ir.Node) -> bool:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or not _weight_like(w):
        return False
    if node.op_type == "Conv":
        group = node.attributes.get("group")
        return group is None or group.as_int() == 1
    return node.op_type == "Gemm" or (node.op_type == "MatMul" and len(static_dims(w) or ()) == 2)


def _layer(node: ir.Node, dyn: list[ir.Value], outs: list[ir.Value], profiles: tuple[DeviceProfile, ...]) -> Layer:
    seconds = ann.get(node, ann.LATENCY, ann.NodeLatency)
    cost = ann.get(node, ann.COST, ann.NodeCost)
    try:
        lat = tuple(seconds.on(p.name) for p in profiles)
    except KeyError:
        raise SplitcError(f"node '{node.name}' has no latency on the cluster's profiles "
                          f"({', '.join(p.name for p in profiles)}): annotate the model with them as targets") from None
    fixed = tuple(min(t, p.latency(0.0, 0, cost.op_class, conv_kernel(node))) for t, p in zip(lat, profiles))
    geo = _geometry(node, dyn, outs)
    ys = static_dims(outs[0]) if outs else None
    return Layer(node.name, node.op_type, lat, fixed, sum(_bytes(v) for v in dyn), sum(_bytes(v) for v in outs),
                 sum(_bytes(v) for v in node.inputs if v is not None and _weight_like(v)),
                 (ys[1] if node.op_type == "Conv" else ys[-1]) if ys else 0, **(geo or {}),
                 inputs=tuple(v.name for v in dyn), outputs=tuple(v.name for v in outs))


def build_chain(model: ir.Model, profiles: tuple[DeviceProfile, ...]) -> BlockChain:
    graph = model.graph
    nodes = [n for n in graph if not is_replicable(n)]
    if not nodes:
        raise SplitcError(f"{model.meta.get(ann.SOURCE, 'model')}: no node computes on the input; nothing to place on a cluster")
    outputs = {id(v) for v in graph.outputs}
    dyn = [[v for v in node_inputs(n) if not _weight_like(v)] for n in nodes]
    last: dict[int, int] = {id(v): len(nodes) for v in graph.outputs}
    for k, ins in enumerate(dyn):
        for v in ins:
            if id(v) not in outputs:
                last[id(v)] = k  # the last reader: k only grows
    used = [[o for o in n.outputs if id(o) in last] for n in nodes]
    live = {id(v): v for v in graph_inputs(graph) if id(v) in last}
    first_inputs = tuple(live.values())
    cuts, cut_tensors, peaks, peak = [0], [], [], 0
    for k, n in enumerate(nodes):
        peak = max(peak, sum(_bytes(v) for v in live.values()) + sum(_bytes(o) for o in used[k]))
        live.update((id(o), o) for o in used[k])
        for v in dyn[k]:
            if last.get(id(v)) == k:
                live.pop(id(v), None)
        fused = k + 1 < len(nodes) and ann.get(nodes[k + 1], ann.COST, ann.NodeCost).rule.startswith("fused_into:")
        if k + 1 < len(nodes) and len(live) == 1 and not fused and next(iter(live)) not in outputs:
            cuts.append(k + 1)
            cut_tensors.append(next(iter(live.values())))
            peaks.append(peak)
            peak = 0
    cuts.append(len(nodes))
    peaks.append(peak)
    blocks = []
    for b, (s, e) in enumerate(itertools.pairwise(cuts)):
        ins = first_inputs if b == 0 else (cut_tensors[b - 1],)
        outs = tuple(graph.outputs) if e == len(nodes) else (cut_tensors[b],)
        layers = tuple(_layer(nodes[k], dyn[k], used[k], profiles) for k in range(s, e))
        chain = all(len(dyn[k]) == 1 and len(used[k]) == 1 and (dyn[k][0] is used[k - 1][0] if k > s else dyn[k][0] is ins[0])
                    for k in range(s, e)) and len(ins) == 1
        # spatial: a DAG of H-local layers (one input at the cut; skips, SiLUs, channel concats and splits inside)
        spatial = len(ins) == 1 and all(layer.out_h > 0 for layer in layers)
        channel = chain and _channel_head(nodes[s]) and all(n.op_type in UNARY | BINARY for n in nodes[s + 1:e]) \
            and layers[0].out_channels > 0
        blocks.append(Block(tuple(n.name for n in nodes[s:e]), tuple(v.name for v in ins), tuple(v.name for v in outs),
                            layers, sum(_bytes(v) for v in ins), sum(_bytes(v) for v in outs),
                            sum(layer.weight_bytes for layer in layers), peaks[b], spatial, channel))
    return BlockChain(tuple(p.name for p in profiles), tuple(blocks))


def plan_cluster(model: ir.Model, spec: ClusterSpec) -> ClusterPlans:
    """The block chain of an annotated model (annotated with ``spec.profiles`` as targets) and the best plan of every
    sub-multiset of the cluster's devices; a one-line error when nothing fits the whole cluster."""
    chain = build_chain(model, spec.profiles)
    plans = plan_all(chain, spec)
    return ClusterPlans(chain, spec, plans, plans[full_counts(spec)])


@dataclass(frozen=True)
class ClusterPass(ir.passes.InPlacePass):
    spec: ClusterSpec | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.graph.meta[ann.CLUSTER] = plan_cluster(model, self.spec)
        return ir.passes.PassResult(model, False)
