"""Per-slot ONNX parts of a cluster plan (issue 14), cut from the original model by node names.

- :func:`single_part`: the nodes as a model of their own (a "single" or "data" stage; replicas are one file);
- :func:`channel_part`: one Conv/Gemm/MatMul computing output channels [c0, c1) (weights and bias sliced), with
  the per-channel ops after it (BatchNormalization, bias Add, Mul, activations, pools) sliced consistently;
- :func:`splitc.codegen.cluster_tiles.tile_part`: a fused-layer spatial tile (rows with halo in, rows out).

Merges are not parts: the hub concatenates the parts' outputs with numpy in slot order, on the axis the plan
names (``merge.axis``: 2 for tiles, the channel axis for channel splits; see :mod:`splitc.runtimes.cluster_plan`).
A Concat model per merge would cost a session and a copy through onnxruntime for what is one ``np.concatenate``.

Parts keep the source's opset, IR version and names: a part's inputs and outputs are the original tensors'
names (a tile's input is the stage input's rows, its output the stage output's rows). Constants and shape
arithmetic the nodes read (nodes that read no graph input) are copied into every part that needs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitc.errors import SplitcError

__all__ = ["Source", "channel_anchor", "channel_axis", "channel_part", "single_part"]


class Source:
    """The original model indexed once: nodes by name, producers, constants, value types (shapes inferred if absent)."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        known = {v.name for v in [*graph.input, *graph.value_info, *graph.output] if v.type.tensor_type.HasField("shape")}
        if any(o not in known for n in graph.node for o in n.output if o):
            model = onnx.shape_inference.infer_shapes(model, data_prop=True)
            graph = model.graph
        self.model = model
        self.nodes = {n.name: n for n in graph.node}
        if "" in self.nodes or len(self.nodes) != len(graph.node):
            raise SplitcError(f"model '{graph.name}': cluster parts need unique, non-empty node names (compile names them)")
        self.order = {n.name: i for i, n in enumerate(graph.node)}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.inits = {t.name: t for t in graph.initializer}
        self.types = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
        dynamic = {i.name for i in graph.input if i.name not in self.inits}
        for n in graph.node:  # topological: a node is dynamic when it reads a graph input, directly or not
            if any(i in dynamic for i in reads(n)):
                dynamic.update(o for o in n.output if o)
        self.dynamic = dynamic
        self._consts: dict[str, np.ndarray | None] = {}

    def node(self, name: str) -> onnx.NodeProto:
        if name not in self.nodes:
            raise SplitcError(f"model '{self.model.graph.name}': no node '{name}' (the plan names a node the model lacks)")
        return self.nodes[name]

    def shape(self, tensor: str) -> tuple[int, ...]:
        if tensor in self.inits:
            return tuple(self.inits[tensor].dims)
        vi = self.types.get(tensor)
        dims = vi.type.tensor_type.shape.dim if vi is not None else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            raise SplitcError(f"model '{self.model.graph.name}': tensor '{tensor}' has no static shape; fix the inputs' "
                              "shapes (--input-shape)")
        return tuple(d.dim_value for d in dims)

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None (read-only; each initializer decoded once)."""
        if tensor not in self._consts:
            self._consts[tensor] = self._const(tensor)
        return self._consts[tensor]

    def _const(self, tensor: str) -> np.ndarray | None:
        if tensor in self.inits:
            t = self.inits[tensor]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            if t.raw_data and t.data_location == onnx.TensorProto.DEFAULT and dtype.itemsize > 0 and np.little_endian:
                return np.frombuffer(t.raw_data, dtype=dtype).reshape(tuple(t.dims))  # a view: no copy of big weights
            return numpy_helper.to_array(t)
        p = self.producer.get(tensor)
        if p is not None and p.op_type == "Constant" and p.attribute and p.attribute[0].name == "value":
            return numpy_helper.to_array(p.attribute[0].t)
        return None

    def closure(self, names: Iterable[str]) -> list[onnx.NodeProto]:
        """The named nodes and, transitively, the static producers (constants, shape arithmetic) they read; in
        graph order."""
        keep = {self.node(n).name for n in names}
        stack = list(keep)
        while stack:
            for i in reads(self.nodes[stack.pop()]):
                p = self.producer.get(i)
                if p is not None and i not in self.dynamic and p.name not in keep:
                    keep.add(p.name)
                    stack.append(p.name)
        return sorted((self.nodes[n] for n in keep), key=lambda n: self.order[n.name])

    def boundary(self, nodes: Sequence[onnx.NodeProto]) -> tuple[list[str], list[str]]:
        """(dynamic tensors the nodes read and do not produce, in first-use order; tensors they produce that
        other nodes or the graph outputs read)."""
        made = {o for n in nodes for o in n.output if o}
        inside = {n.name for n in nodes}
        ins = list(dict.fromkeys(i for n in nodes for i in reads(n) if i in self.dynamic and i not in made))
        used_outside = {i for n in self.model.graph.node if n.name not in inside for i in reads(n)}
        used_outside |= {o.name for o in self.model.graph.output}
        outs = [o for n in nodes for o in n.output if o in used_outside]
        return ins, outs

    def value_info(self, tensor: str, shape: Sequence[int] | None = None) -> onnx.ValueInfoProto:
        if shape is None:
            if tensor in self.types:
                return self.types[tensor]
            return helper.make_empty_tensor_value_info(tensor)
        elem = self.types[tensor].type.tensor_type.elem_type if tensor in self.types else onnx.TensorProto.FLOAT
        return helper.make_tensor_value_info(tensor, elem, list(shape))

    def model_of(self, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
                 outputs: Sequence[onnx.ValueInfoProto], extra: Sequence[onnx.TensorProto] = (),
                 name: str = "part") -> onnx.ModelProto:
        """A model of ``nodes`` with the source's initializers they read (plus ``extra``), versions and functions."""
        nodes = _pruned(nodes, {o.name for o in outputs})
        read = {i for n in nodes for i in reads(n)}
        extra_names = {t.name for t in extra}
        inits = [t for t in self.model.graph.initializer if t.name in read and t.name not in extra_names] + list(extra)
        made = {o for n in nodes for o in n.output}
        vis = [self.types[t] for t in sorted(made) if t in self.types and t not in {o.name for o in outputs}]
        graph = helper.make_graph(list(nodes), f"{self.model.graph.name}_{name}", list(inputs), list(outputs),
                                  initializer=inits, value_info=vis)
        src = self.model
        part = helper.make_model(graph, opset_imports=list(src.opset_import), producer_name="splitc.cluster")
        part.ir_version = src.ir_version
        part.functions.extend(f for f in src.functions if any(n.op_type == f.name and n.domain == f.domain for n in nodes))
        if src.ir_version < 4:  # initializers are graph inputs too
            part.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)
        return part


def _pruned(nodes: Sequence[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose results nothing reads (a constant whose sliced copy replaced it)."""
    needed, keep = set(outputs), []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(reads(n))
    return keep[::-1]


def reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads, including what its subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    out = [i for i in node.input if i]
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            inner = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            out += [i for n in g.node for i in reads(n) if i not in inner]
    return out


def single_part(src: Source, names: Sequence[str], outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """The nodes ``names`` as a model: inputs the dynamic tensors they read from outside, outputs ``outputs``
    (default: what they produce that anything outside reads)."""
    nodes = src.closure(names)
    ins, outs = src.boundary(nodes)
    outs = list(outputs) if outputs is not None else outs
    made = {o for n in nodes for o in n.output}
    missing = [o for o in outs if o not in made]
    if missing or not outs:
        raise SplitcError(f"model '{src.model.graph.name}': the part's nodes do not compute {missing or 'anything used'}")
    return src.model_of(nodes, [src.value_info(i) for i in ins], [src.value_info(o) for o in outs], name="single")


# -- channel split -------------------------------------------------------------------------------------------

ANCHORS = ("Conv", "Gemm", "MatMul")
# ops that treat every channel alone: sliced constants along the channel axis are all they need
PER_CHANNEL = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
               "Identity", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Gelu", "Mish", "Celu", "ThresholdedRelu", "Dropout",
               "Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Max", "Min", "BatchNormalization"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}  # channel axis 1


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _const_input(src: Source, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
    value = src.const(node.input[index]) if len(node.input) > index and node.input[index] else None
    if value is None:
        raise SplitcError(f"node '{node.name}' ({node.op_type}): its {what} '{node.input[index]}' is not a constant; "
                          "a channel split slices constant weights only")
    return value


def channel_part(src: Source, names: Sequence[str], channels: tuple[int, int],
                 outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """Output channels [c0, c1) of the one Conv/Gemm/MatMul among ``names``: its weights (and bias) sliced, the
    per-channel ops after it sliced alike; nodes before it run whole. The part's outputs keep their names."""
    nodes = src.closure(names)
    anchor = channel_anchor(src, names)
    rank = len(src.shape(anchor.output[0]))
    axis, size = channel_axis(src, anchor)
    c0, c1 = channels
    if not 0 <= c0 < c1 <= size:
        raise SplitcError(f"node '{anchor.name}': channels [{c0}, {c1}) are not inside its {size} output channels")
    tag = f"__ch{c0}_{c1}"
    extra: list[onnx.TensorProto] = []

    def sliced(node: onnx.NodeProto, index: int, array: np.ndarray, at: int) -> None:
        name = node.input[index] + tag
        if name not in {t.name for t in extra}:
            extra.append(numpy_helper.from_array(np.ascontiguousarray(np.take(array, range(c0, c1), axis=at)), name))
        node.input[index] = name

    out_nodes, split = [], set()
    for n in nodes:
        n = _copy(n)
        if n.name == anchor.name:
            _slice_anchor(src, n, sliced, c0, c1)
            split.update(n.output)
        elif any(i in split for i in n.input):
            _slice_follower(src, n, split, sliced, axis, rank, size)
            split.update(o for o in n.output if o)
        out_nodes.append(n)
    ins, outs = src.boundary(nodes)
    outs = list(outputs) if outputs is not None else outs
    bad = [o for o in outs if o not in split]
    if bad or not outs:
        raise SplitcError(f"node '{anchor.name}': the channel split's outputs {bad or outs} do not come from its "
                          "sliced channels")
    out_vis = []
    for o in outs:
        shape = list(src.shape(o))
        shape[axis] = c1 - c0
        out_vis.append(src.value_info(o, shape))
    part = src.model_of(out_nodes, [src.value_info(i) for i in ins], out_vis, extra, name=f"ch{c0}_{c1}")
    del part.graph.value_info[:]  # the sliced tensors' shapes changed; onnxruntime infers them
    return part


def channel_axis(src: Source, anchor: onnx.NodeProto) -> tuple[int, int]:
    """(the axis a Conv/Gemm/MatMul's output channels are on, their number): 1 for Conv and Gemm, the last for
    MatMul."""
    shape = src.shape(anchor.output[0])
    axis = len(shape) - 1 if anchor.op_type == "MatMul" else 1
    return axis, shape[axis]


def channel_anchor(src: Source, names: Sequence[str]) -> onnx.NodeProto:
    """The one Conv/Gemm/MatMul reading a dynamic tensor among ``names``."""
    anchors = [n for n in src.closure(names) if n.op_type in ANCHORS and any(i in src.dynamic for i in reads(n))]
    if len(anchors) != 1:
        raise SplitcError(f"model '{src.model.graph.name}': a channel split needs exactly one Conv/Gemm/MatMul in its "
                          f"nodes, found {len(anchors)} ({', '.join(n.name for n in anchors) or 'none'})")
    return anchors[0]


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _slice_anchor(src: Source, n: onnx.NodeProto, sliced, c0: int, c1: int) -> None:
    if n.op_type == "Conv":
        if _attr(n, "group", 1) != 1:
            raise SplitcError(f"node '{n.name}' (grouped Conv, group {_attr(n, 'group')}): a channel split handles "
                              "group 1 only; plan it as a spatial or single stage")
        sliced(n, 1, _const_input(src, n, 1, "weight"), 0)
        if len(n.input) > 2 and n.input[2]:
            sliced(n, 2, _const_input(src, n, 2, "bias"), 0)
    elif n.op_type == "Gemm":
        w = _const_input(src, n, 1, "weight")
        sliced(n, 1, w, 0 if _attr(n, "transB", 0) else 1)
        if len(n.input) > 2 and n.input[2]:
            c = _const_input(src, n, 2, "bias")
            if c.ndim >= 1 and c.shape[-1] > 1:
                sliced(n, 2, c, c.ndim - 1)
    else:  # MatMul
        w = _const_input(src, n, 1, "weight")
        if w.ndim < 2:
            raise SplitcError(f"node '{n.name}' (MatMul with a 1-D weight): its output has no channel axis to split")
        sliced(n, 1, w, w.ndim - 1)


def _slice_follower(src: Source, n: onnx.NodeProto, split: set, sliced, axis: int, rank: int, size: int) -> None:
    """A node after the anchor reading its channels: per-channel ops only; their constants sliced on the axis."""
    where = f"node '{n.name}' ({n.op_type}) after the channel-split"
    if n.op_type in POOLS or n.op_type == "BatchNormalization":
        if axis != 1:
            raise SplitcError(f"{where} works on axis 1, not the split axis {axis}")
    elif n.op_type not in PER_CHANNEL:
        raise SplitcError(f"{where} mixes channels; end the channel stage before it")
    for j, name in enumerate(n.input):
        if not name or name in split:
            continue
        if name in src.dynamic:
            raise SplitcError(f"{where} also reads '{name}', which is not split by channel")
        value = src.const(name)
        if value is None:
            raise SplitcError(f"{where} reads '{name}', which is not a constant")
        if n.op_type == "BatchNormalization":
            sliced(n, j, value, 0)
            continue
        at = axis - (rank - value.ndim)
        if at >= 0 and value.shape[at] == size and size > 1:
            sliced(n, j, value, at)
        elif at >= 0 and value.shape[at] != 1:
            raise SplitcError(f"{where}: constant '{name}' {list(value.shape)} does not broadcast per channel")
