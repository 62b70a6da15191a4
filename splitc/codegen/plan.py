"""plan.json: what was decided and why. Its schema is ``splitc/schema/plan.schema.json``.

Anyone holding only plan.json can recompute ``predicted.total_s`` with :func:`recompute_total`.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

import splitc
from splitc.ir import metadata as ann
from splitc.partition.costgraph import CostGraph
from splitc.ir.graph import graph_inputs
from splitc.partition.optimizer import Goal, Solution
from splitc.partition.passes.partition import PartitionResult
from splitc.frontend.passes.replicable import is_replicable
from splitc.codegen.passes.split import SplitResult
from splitc.cost.targets import DeviceProfile, Link

SCHEMA = "splitc.plan/1"


def io_spec(v: ir.Value) -> dict:
    info = ann.get(v, ann.TENSOR, ann.TensorInfo)
    return {"name": v.name, "dtype": info.dtype, "shape": list(info.shape)}


def summary(cg: CostGraph, sol: Solution, goal: Goal | None = None) -> dict:
    c = sol.cost
    wire = lambda link, n: round(cg.links[link].wire_bytes(n)) if n else 0  # noqa: E731  (one message when used)
    out = {
        "total_s": c.total_s,
        "compute_s": dict(zip(cg.tiers, c.compute_s)),
        "transfer_s": c.transfer_s,
        "rtt_s": c.rtt_s,
        "energy_j": c.energy_j,
        "period_s": c.period_s,
        "fps": 1.0 / c.period_s if c.period_s > 0 else None,
        "device_memory_bytes": c.device_memory_bytes,
        "link_bytes": [{"up": u, "down": d, "wire_up": wire(i, u), "wire_down": wire(i, d)} for i, (u, d) in enumerate(c.link_bytes)],
        "nodes_per_target": {t: sum(1 for p in sol.placement if p == i) for i, t in enumerate(cg.tiers)},
        "device_nodes": sum(1 for p in sol.placement if p == 0),
        "server_nodes": sum(1 for p in sol.placement if p == cg.k - 1),
    }
    if goal is not None:
        out["meets_limits"] = goal.met_by(c)
    return out


def _radio(link: Link) -> dict | None:
    r = link.radio
    return None if r is None else {"alpha_up_w_per_mbps": r.alpha_up_w_per_mbps, "alpha_down_w_per_mbps": r.alpha_down_w_per_mbps,
                                   "beta_w": r.beta_w}


def build_plan(model, model_path: Path, sha256: str, targets: tuple[DeviceProfile, ...], links: tuple[Link, ...], options,
               partition: PartitionResult, split: SplitResult, artifacts: dict[int, str]) -> dict:
    graph = model.graph
    cg, sol, goal = partition.cost_graph, partition.solution, partition.goal
    tier_of = {n.name: targets[p].name for n, p in zip(cg.nodes, sol.placement)}
    stage_of = {n.name: s for n, s in zip(cg.nodes, split.schedule.stage_of)}
    nodes = []
    for node in graph:
        cost = ann.get(node, ann.COST, ann.NodeCost)
        lat = ann.get(node, ann.LATENCY, ann.NodeLatency)
        nodes.append({
            "name": node.name,
            "op_type": node.op_type,
            "target": tier_of.get(node.name, "replicated" if is_replicable(node) else None),
            "stage": stage_of.get(node.name),
            "latency_s": dict(lat.seconds) if node.name in tier_of else {t.name: 0.0 for t in targets},
            "flops": cost.flops,
            "op_class": cost.op_class,
            "cost_rule": cost.rule,
        })
    tensors = [{
        "name": t.name,
        "bytes": t.raw_bytes,
        "producer": cg.nodes[t.producer].name if t.producer is not None else None,
        "consumers": [cg.nodes[c].name for c in t.consumers],
        "is_output": t.is_output,
    } for t in cg.tensors]
    boundary = []
    by_name = {t.name: t for t in cg.tensors}
    for c in split.crossings:
        enc, wire_s, dec = cg.hop_parts(by_name[c.tensor], c.link, c.dst > c.src)
        wire_bytes = cg.links[c.link].wire_bytes(by_name[c.tensor].encoded_bytes if c.dst > c.src or by_name[c.tensor].encoded_down_bytes
                                                 is None else by_name[c.tensor].encoded_down_bytes, messages=0)
        boundary.append({
            "tensor": c.tensor,
            "from": targets[c.src].name,
            "to": targets[c.dst].name,
            "link": c.link,
            "direction": "up" if c.dst > c.src else "down",
            "stage": c.stage,
            "raw_bytes": c.raw_bytes,
            "encoded_bytes": c.encoded_bytes,
            "codec": c.codec,
            "encode_s": enc,
            "transfer_s": wire_s,
            "wire_bytes": round(wire_bytes),
            "decode_s": dec,
            "is_output": c.is_output,
            "wire": [{"name": w.name, "dtype": w.dtype, "shape": list(w.shape), **({"bits": w.bits} if w.bits != 8 else {})}
                     for w in c.wire],
            **({"quant": {**c.quant.plan_entry(), "error": c.quant.error}} if getattr(c, "quant", None) is not None else {}),
        })
    stages = [{"index": s.index, "target": targets[s.tier].name, "artifact": artifacts.get(s.index),
               "inputs": list(s.inputs), "outputs": list(s.outputs)} for s in split.stages]
    by_target: dict[str, list[str]] = {}
    for s in stages:
        if s["artifact"]:
            by_target.setdefault(s["target"], []).append(s["artifact"])
    return {
        "schema": SCHEMA,
        "splitc_version": splitc.__version__,
        "model": {
            "path": str(model_path.resolve()),
            "file": model_path.name,
            "sha256": sha256,
            "ir_version": model.ir_version,
            "opset": model.opset_imports.get("", None),
            "inputs": [io_spec(v) for v in graph_inputs(graph)],
            "outputs": [io_spec(v) for v in graph.outputs],
        },
        "targets": [
            {"name": t.name, "role": "device" if i == 0 else ("server" if i == len(targets) - 1 else "edge"),
             "description": t.description, "encode_bytes_per_s": t.encode_bytes_per_s, "decode_bytes_per_s": t.decode_bytes_per_s,
             "busy_power_w": t.busy_power_w, "idle_power_w": t.idle_power_w}
            for i, t in enumerate(targets)
        ],
        "links": [{"from": targets[i].name, "to": targets[i + 1].name, "name": l.name, "up_bps": l.up_bps,
                   "down_bps": l.down_bps, "rtt_s": l.rtt_s, "radio": _radio(l), "message_bytes": l.message_bytes,
                   "segment_header_bytes": l.segment_header_bytes, "mss_bytes": l.mss_bytes,
                   "message_s": {"up": l.message_s("up"), "down": l.message_s("down")}} for i, l in enumerate(links)],
        "objective": goal.objective,
        "limits": {k: v for k, v in {"deadline_s": goal.deadline_s, "max_energy_j": goal.max_energy_j,
                                     "max_device_memory_bytes": goal.max_device_memory, "max_cloud_s": goal.max_cloud_s}.items()
                   if v is not None},
        "allow_return": cg.allow_return,
        "boundary_codec": options.boundary,
        "input_codec": [ic.record(targets) for ic in (graph.meta.get(ann.INPUT_CODECS) or {}).values()],
        "wire_sizes": "measured on calibration data" if graph.meta.get(ann.WIRE_SIZES) else "estimated (int8: raw/4, fp32: raw)",
        "cost_model": ("total_s = sum(nodes[].latency_s[nodes[].target]) + sum(boundary[].encode_s + transfer_s + decode_s)"
                       " + sum over links of (links[l].rtt_s / 2 + links[l].message_s[direction]) x (directions, up and down,"
                       " that boundary[] uses on link l); boundary[].transfer_s = wire_bytes x 8 / rate, wire_bytes ="
                       " encoded_bytes x (1 + segment_header_bytes / mss_bytes), and each direction used is one message of"
                       " message_bytes framing (message_s)"),
        "nodes": nodes,
        "tensors": tensors,
        "boundary": boundary,
        "stages": stages,
        "cut": sorted({c.tensor for c in split.crossings if not c.is_output}),
        "predicted": summary(cg, sol, goal),
        "baselines": {name: summary(cg, s, goal) for name, s in partition.baselines.items()},
        "solver": {"method": sol.method, "status": sol.status, "gap": sol.gap, "bound": sol.bound, "solve_s": sol.solve_s,
                   "notes": list(sol.notes)},
        "artifacts": {t: files[0] if len(files) == 1 else files for t, files in by_target.items()},
    }


def recompute_total(plan: dict) -> float:
    """The predicted end-to-end seconds, from plan.json alone."""
    compute = sum(n["latency_s"][n["target"]] for n in plan["nodes"] if n["target"] in n["latency_s"])
    transfer = sum(b["encode_s"] + b["transfer_s"] + b["decode_s"] for b in plan["boundary"])
    used = {(b.get("link", 0), b.get("direction", "down" if b["to"] == plan["targets"][0]["name"] else "up")) for b in plan["boundary"]}
    # half an RTT each way, and one message's framing (plans before it was priced have no message_s: 0)
    return compute + transfer + sum(plan["links"][link]["rtt_s"] / 2 + plan["links"][link].get("message_s", {}).get(d, 0.0)
                                    for link, d in used)
