"""Checks on a loaded ONNX graph that passes and onnxruntime would otherwise fail on without a word:
inputs and outputs exist, the graph has no cycle, onnxruntime runs its opsets. Each failure is one line."""

from __future__ import annotations

import onnx

from splitc.errors import SplitcError


def check_graph(proto: onnx.ModelProto, name: str) -> None:
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    if not [v for v in graph.input if v.name not in initializers]:
        raise SplitcError(f"{name}: the graph has no inputs (it computes a constant): there is nothing to split")
    if not graph.output:
        raise SplitcError(f"{name}: the graph has no outputs: there is nothing to compute; is the export complete?")
    cycle = find_cycle(graph)
    if cycle:
        raise SplitcError(f"{name}: the graph has a cycle ({' -> '.join(cycle)}); ONNX graphs must be acyclic")
    check_opsets(proto, name)


def _label(graph: onnx.GraphProto, i: int) -> str:
    node = graph.node[i]
    return f"'{node.name}'" if node.name else f"#{i} ({node.op_type})"


def _outer_reads(graph: onnx.GraphProto):
    """Every name a graph's nodes read, subgraphs included (a node depends on what its bodies read)."""
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _outer_reads(sub)


def find_cycle(graph: onnx.GraphProto) -> list[str]:
    """The nodes of one cycle of the main graph, in order (first repeated at the end), or [] if it is acyclic."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    preds = []
    for node in graph.node:
        reads = set(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                reads.update(_outer_reads(sub))
        preds.append({producer[r] for r in reads if r in producer})
    succs: list[list[int]] = [[] for _ in graph.node]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    indeg = [len(ps) for ps in preds]
    ready = [i for i, d in enumerate(indeg) if d == 0]
    while ready:
        i = ready.pop()
        for s in succs[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    left = {i for i, d in enumerate(indeg) if d > 0}
    if not left:
        return []
    # every node left has a predecessor left: walk back until one repeats
    seen: dict[int, int] = {}
    i = min(left)
    while i not in seen:
        seen[i] = len(seen)
        i = min(p for p in preds[i] if p in left)
    walk = list(seen)[seen[i]:]
    return [_label(graph, j) for j in reversed(walk + [i])]


def check_opsets(proto: onnx.ModelProto, name: str) -> None:
    """Refuse opsets (and IR versions) onnxruntime cannot load (the parts could not run), naming the newest it supports."""
    import onnxruntime as ort

    f = onnx.TensorProto.FLOAT
    probe = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
                               [onnx.helper.make_tensor_value_info("x", f, [1])], [onnx.helper.make_tensor_value_info("y", f, [1])]),
        opset_imports=list(proto.opset_import))
    probe.ir_version = proto.ir_version  # the parts keep the source's IR version and opsets: they must load
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        text = " ".join(str(e).split())
        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
        support = text[text.find("Current official support"):].rstrip(".") if "Current official support" in text else text[-200:]
        raise SplitcError(f"{name}: onnxruntime {ort.__version__} cannot load IR version {proto.ir_version} with opset(s)"
                          f" {opsets} ({support}); re-export the model with a supported opset") from None
