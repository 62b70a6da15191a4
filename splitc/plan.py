"""plan.json: what was decided and why. Its schema is ``splitc/schema/plan.schema.json``.

Anyone holding only plan.json can recompute ``predicted.total_s`` with :func:`recompute_total`.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

import splitc
from splitc import annotations as ann
from splitc.costgraph import CostGraph
from splitc.graphutil import graph_inputs
from splitc.optimizer import Solution
from splitc.passes.partition import PartitionResult
from splitc.passes.replicable import is_replicable
from splitc.passes.split import SplitResult
from splitc.targets import DeviceProfile, Link

SCHEMA = "splitc.plan/1"


def _io(v: ir.Value) -> dict:
    info = ann.get(v, ann.TENSOR, ann.TensorInfo)
    return {"name": v.name, "dtype": info.dtype, "shape": list(info.shape)}


def _summary(cg: CostGraph, sol: Solution, targets) -> dict:
    c = sol.cost
    cut = [n.name for n, p in zip(cg.nodes, sol.placement) if p == 0]
    return {
        "total_s": c.total_s,
        "compute_s": {t.name: s for t, s in zip(targets, c.compute_s)},
        "transfer_s": c.transfer_s,
        "rtt_s": c.rtt_s,
        "device_nodes": len(cut),
        "server_nodes": len(cg.nodes) - len(cut),
    }


def build_plan(model, model_path: Path, sha256: str, targets: tuple[DeviceProfile, ...], link: Link, options,
               partition: PartitionResult, split: SplitResult, artifacts: dict[str, str]) -> dict:
    graph = model.graph
    cg, sol = partition.cost_graph, partition.solution
    tier_of = {n.name: targets[p].name for n, p in zip(cg.nodes, sol.placement)}
    nodes = []
    for node in graph:
        cost = ann.get(node, ann.COST, ann.NodeCost)
        lat = ann.get(node, ann.LATENCY, ann.NodeLatency)
        nodes.append({
            "name": node.name,
            "op_type": node.op_type,
            "target": tier_of.get(node.name, "replicated" if is_replicable(node) else None),
            "latency_s": dict(lat.seconds) if node.name in tier_of else {t.name: 0.0 for t in targets},
            "flops": cost.flops,
            "op_class": cost.op_class,
            "cost_rule": cost.rule,
        })
    tensors = []
    for t in cg.tensors:
        tensors.append({
            "name": t.name,
            "bytes": t.raw_bytes,
            "producer": cg.nodes[t.producer].name if t.producer is not None else None,
            "consumers": [cg.nodes[c].name for c in t.consumers],
            "is_output": t.is_output,
        })
    boundary = []
    by_name = {t.name: t for t in cg.tensors}
    for c in split.crossings:
        enc, wire_s, dec = cg.send_parts(by_name[c.tensor], c.src, c.dst)
        boundary.append({
            "tensor": c.tensor,
            "from": targets[c.src].name,
            "to": targets[c.dst].name,
            "raw_bytes": c.raw_bytes,
            "encoded_bytes": c.encoded_bytes,
            "codec": c.codec,
            "encode_s": enc,
            "transfer_s": wire_s,
            "decode_s": dec,
            "is_output": c.is_output,
            "wire": [{"name": w.name, "dtype": w.dtype, "shape": list(w.shape)} for w in c.wire],
        })
    return {
        "schema": SCHEMA,
        "splitc_version": splitc.__version__,
        "model": {
            "path": str(model_path.resolve()),
            "file": model_path.name,
            "sha256": sha256,
            "ir_version": model.ir_version,
            "opset": model.opset_imports.get("", None),
            "inputs": [_io(v) for v in graph_inputs(graph)],
            "outputs": [_io(v) for v in graph.outputs],
        },
        "targets": [
            {"name": t.name, "role": "device" if i == 0 else "server", "description": t.description,
             "encode_bytes_per_s": t.encode_bytes_per_s, "decode_bytes_per_s": t.decode_bytes_per_s}
            for i, t in enumerate(targets)
        ],
        "links": [{"from": targets[0].name, "to": targets[1].name, "name": link.name, "up_bps": link.up_bps,
                   "down_bps": link.down_bps, "rtt_s": link.rtt_s}],
        "objective": options.objective,
        "boundary_codec": options.boundary,
        "cost_model": ("total_s = sum(nodes[].latency_s[nodes[].target]) + sum(boundary[].encode_s + transfer_s + decode_s)"
                       " + links[0].rtt_s * (number of directions, up and down, that boundary[] uses)"),
        "nodes": nodes,
        "tensors": tensors,
        "boundary": boundary,
        "cut": sorted({c.tensor for c in split.crossings if not c.is_output}),
        "predicted": _summary(cg, sol, targets),
        "baselines": {name: _summary(cg, s, targets) for name, s in partition.baselines.items()},
        "solver": {"method": sol.method, "status": sol.status, "solve_s": sol.solve_s},
        "artifacts": artifacts,
    }


def recompute_total(plan: dict) -> float:
    """The predicted end-to-end seconds, from plan.json alone."""
    compute = sum(n["latency_s"][n["target"]] for n in plan["nodes"] if n["target"] in n["latency_s"])
    transfer = sum(b["encode_s"] + b["transfer_s"] + b["decode_s"] for b in plan["boundary"])
    device = plan["targets"][0]["name"]
    directions = {b["to"] == device for b in plan["boundary"]}
    return compute + transfer + plan["links"][0]["rtt_s"] * len(directions)
