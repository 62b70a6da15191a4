"""Cluster split (issue 14): the per-slot ONNX parts of every precomputed cluster plan and plan.json's "cluster"
section that names them.

Per stage of a plan (blocks [first, last) of the chain, a strategy, slots and shares):
- single: one part (the blocks' nodes) on its slot; data: the same part on every replica slot (one file);
- spatial: slot k computes output rows [sum(shares[:k]), sum(shares[:k+1])) (axis 2) from the input rows its
  tile needs (``input_rows``: the hub sends those rows only; splitc.codegen.cluster_tiles);
- channel: slot k computes output channels likewise (``channels``; splitc.codegen.cluster_channels).
Merges run at the hub in numpy (``merge.axis``: 2 for tiles, 1 for Conv/Gemm channels, -1 for MatMul outputs).

Part files are content-addressed, ``parts/<first 16 hex digits of the sha256>.onnx`` with the full digest in the
section, so a part that several plans share (a stage unchanged when a device leaves) is written once, and a part
is built once per (blocks, strategy, range). ``tensors`` gives the dtype and shape of every stage input and output,
so a reader can check rows and shares against them (splitc.runtimes.cluster_plan). Each part names its ``codec``, how
its inputs and outputs cross the hub<->device link ("int8" with cluster.toml's [network] boundary = "int8", except on
the hub's own slot; else "fp32"; splitc.runtimes.cluster_codec), and the section its ``boundary``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir

from splitc.codegen.cluster_channels import channel_anchor, channel_axis, channel_part
from splitc.codegen.cluster_parts import Source, single_part
from splitc.codegen.cluster_tiles import tile_part
from splitc.codegen.output import current_umask
from splitc.errors import SplitcError
from splitc.partition.cluster_cost import ClusterPlan, ClusterStage
from splitc.partition.passes.cluster import ClusterPlans

__all__ = ["PARTS_DIR", "cluster_section"]

PARTS_DIR = "parts"
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64",
           onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32",
           onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool"}


class _Writer:
    """Saves part bytes under ``directory``/parts once per content; a part built once per key."""

    def __init__(self, directory: Path):
        self.root = Path(directory)
        (self.root / PARTS_DIR).mkdir(exist_ok=True)
        self.built: dict[tuple, dict] = {}

    def part(self, key: tuple, build: Callable[[], tuple[onnx.ModelProto, dict]]) -> dict:
        if key not in self.built:
            model, extra = build()
            data = model.SerializeToString()
            try:
                onnx.checker.check_model(data)
            except onnx.checker.ValidationError as e:
                raise SplitcError(f"internal error: cluster part {key} fails onnx.checker: {str(e).splitlines()[0]}") from None
            sha = hashlib.sha256(data).hexdigest()
            rel = f"{PARTS_DIR}/{sha[:16]}.onnx"
            path = self.root / rel
            if not path.exists():
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
                try:
                    if hasattr(os, "fchmod"):  # mkstemp made it 0600; outputs follow the umask
                        os.fchmod(fd, 0o666 & ~current_umask())
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            self.built[key] = {"file": rel, "sha256": sha, "inputs": [i.name for i in model.graph.input],
                               "outputs": [o.name for o in model.graph.output], **extra}
        return self.built[key]


def _bounds(shares) -> list[tuple[int, int]]:
    edges, total = [], 0
    for s in shares:
        edges.append((total, total + s))
        total += s
    return edges


def _stage(src: Source, writer: _Writer, plans: ClusterPlans, stage: ClusterStage, tensors: dict) -> dict:
    blocks = plans.chain.blocks[stage.first:stage.last]
    names = [n for b in blocks for n in b.nodes]
    inputs, outputs = list(blocks[0].inputs), list(blocks[-1].outputs)
    span = (stage.first, stage.last)
    merge = None
    if stage.strategy in ("single", "data"):
        part = writer.part((span, "whole"), lambda: (single_part(src, names, outputs), {}))
        parts = [{"slot": s, **part} for s in stage.slots]
    elif stage.strategy == "spatial":
        parts = []
        for slot, rows in zip(stage.slots, _bounds(stage.shares)):
            def build(rows=rows):
                model, (lo, hi) = tile_part(src, names, rows, output=outputs[0])
                return model, {"input_rows": [lo, hi], "output_rows": list(rows)}
            parts.append({"slot": slot, **writer.part((span, "rows", rows), build)})
        merge = {"axis": 2}
    elif stage.strategy == "channel":
        anchor = channel_anchor(src, names)
        axis, _ = channel_axis(src, anchor)
        parts = []
        for slot, ch in zip(stage.slots, _bounds(stage.shares)):
            def build(ch=ch):
                return channel_part(src, names, ch, outputs), {"channels": list(ch)}
            parts.append({"slot": slot, **writer.part((span, "channels", ch), build)})
        merge = {"axis": 1 if axis == 1 else -1}
    else:
        raise SplitcError(f"cluster plan: stage {list(span)} has an unknown strategy '{stage.strategy}'")
    # the codec of each hub<->device edge, both ways: [network] boundary, except on the hub's own slot
    spec = plans.spec
    parts = [{**p, "codec": "int8" if spec.boundary == "int8" and p["slot"] != spec.hub else "fp32"} for p in parts]
    for name in {*inputs, *outputs}:
        tensors.setdefault(name, {"dtype": _dtype(src, name), "shape": list(src.shape(name))})
    return {"strategy": stage.strategy, "blocks": list(span), "slots": list(stage.slots), "shares": list(stage.shares),
            "inputs": inputs, "outputs": outputs, "parts": parts, "merge": merge}


def _dtype(src: Source, name: str) -> str:
    vi = src.types.get(name)
    elem = vi.type.tensor_type.elem_type if vi is not None else onnx.TensorProto.FLOAT
    if elem not in _DTYPES:
        raise SplitcError(f"tensor '{name}': its type {onnx.TensorProto.DataType.Name(elem)} cannot cross a cluster stage")
    return _DTYPES[elem]


def _plan(src: Source, writer: _Writer, plans: ClusterPlans, plan: ClusterPlan, tensors: dict) -> dict:
    fps = plan.fps
    return {"devices": list(plan.devices), "objective": plan.objective, "exact": plan.exact,
            "predicted": {"latency_s": plan.latency_s, "period_s": plan.period_s,
                          "fps": fps if fps != float("inf") else None},
            "memory_bytes": dict(plan.memory_bytes),
            "stages": [_stage(src, writer, plans, s, tensors) for s in plan.stages]}


def cluster_section(model: ir.Model | onnx.ModelProto, plans: ClusterPlans, directory: str | Path) -> dict:
    """Write the parts of every plan of ``plans`` under ``directory``/parts and return plan.json's "cluster"
    section. ``model``: the annotated model the block chain names (its node names)."""
    src = Source(model if isinstance(model, onnx.ModelProto) else ir.to_proto(model))
    writer = _Writer(Path(directory))
    spec = plans.spec
    devices = [{"slot": s, "group": g.name, "profile": g.profile.name, "memory_bytes": g.memory_bytes,
                "worker": g.worker} for g in spec.groups for s in g.slots()]
    if spec.server is not None:
        devices.append({"slot": spec.slots()[-1], "group": spec.slots()[-1].split("/")[0], "profile": spec.server.name,
                        "memory_bytes": None, "worker": True})
    tensors: dict[str, dict] = {}
    ordered = [plans.best] + [p for p in plans.plans.values() if p is not plans.best]
    section_plans = [_plan(src, writer, plans, p, tensors) for p in ordered]
    return {"hub": spec.hub, "objective": spec.objective, "boundary": spec.boundary, "devices": devices, "tensors": tensors, "plans": section_plans}
