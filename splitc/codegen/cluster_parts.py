"""Per-slot ONNX parts of a cluster plan (issue 14), cut from the original model by node names.

- :func:`single_part`: the nodes as a model of their own (a "single" or "data" stage; replicas are one file);
- :func:`splitc.codegen.cluster_channels.channel_part`: one Conv/Gemm/MatMul computing output channels [c0, c1)
  (weights and bias sliced), with the per-channel ops after it sliced consistently;
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

__all__ = ["PER_CHANNEL", "Source", "reads", "single_part"]


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


# ops that treat every channel alone (and, on NCHW, every row alone: splitc.codegen.cluster_tiles)
PER_CHANNEL = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
               "Identity", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Gelu", "Mish", "Celu", "ThresholdedRelu", "Dropout",
               "Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Max", "Min", "BatchNormalization"}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out
