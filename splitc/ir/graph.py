"""Small graph queries shared by the passes (no policy here)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx_ir as ir


def _subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.value
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.value


def node_inputs(node: ir.Node) -> list[ir.Value]:
    """A node's inputs, including the outer-scope values its subgraphs (If/Loop/Scan) read.

    Control-flow nodes are kept whole: the values their bodies capture are dependencies of
    the node itself, so a cut never falls inside a body.
    """
    seen: dict[int, ir.Value] = {}
    for v in node.inputs:
        if v is not None:
            seen.setdefault(id(v), v)
    for sub in _subgraphs(node):
        inner: set[int] = set()
        for inner_node in ir.traversal.RecursiveGraphIterator(sub):
            inner.update(id(o) for o in inner_node.outputs)
        for g in _all_graphs(sub):
            inner.update(id(v) for v in g.inputs)
            inner.update(id(v) for v in g.initializers.values())
        for inner_node in ir.traversal.RecursiveGraphIterator(sub):
            for v in inner_node.inputs:
                if v is not None and id(v) not in inner:
                    seen.setdefault(id(v), v)
    return list(seen.values())


def _all_graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    yield graph
    for node in ir.traversal.RecursiveGraphIterator(graph):
        yield from _subgraphs(node)


def _owner_of(sub: ir.Graph, top: ir.Graph) -> ir.Node | None:
    for node in ir.traversal.RecursiveGraphIterator(top):
        if any(g is sub for g in _subgraphs(node)):
            return node
    return None


def graph_inputs(graph: ir.Graph) -> list[ir.Value]:
    """Real inputs: in IR version < 4 initializers are listed as inputs too."""
    return [v for v in graph.inputs if not v.is_initializer()]


def static_dims(value: ir.Value) -> tuple[int, ...] | None:
    shape = value.shape
    if shape is None or not shape.is_static():
        return None
    return tuple(int(d) for d in shape.dims)


def tensor_bytes(dtype: ir.DataType, dims: tuple[int, ...]) -> int:
    return int(math.ceil(math.prod(dims) * dtype.itemsize))
