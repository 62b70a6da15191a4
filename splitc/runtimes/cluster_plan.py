"""The plan.json "cluster" section checked for consistency, beyond its fields' types (splitc.runtimes.cluster_section):
what splitc.codegen.passes.cluster_split promises, so a tampered or hand-edited section is one line, not a wrong
frame. Per plan: stages chain over the blocks from 0, read only tensors an earlier stage (or the model) makes, and
use only the plan's devices; per stage: one part per slot in slot order, shares positive and bounded; spatial tiles
cover the output's H exactly (row counts = shares, in order) and read rows inside the input's H; channel parts cover
the output's channels on the merge axis (counts = shares); data replicas run one file; part digests are sha256.
:func:`verify_part` checks a part file's bytes against its digest before it is loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

from splitc.errors import SplitcError
from splitc.runtimes.planfile import MAX_TOTAL_BYTES, _Check

__all__ = ["consistent", "validate", "verify_part"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SHARE = 1 << 16  # as splitc.runtimes.cluster_section


def validate(section, folder: str | Path, name: str = "plan.json", model_inputs=()) -> dict:
    """``section`` if its fields are sound (cluster_section.check) and consistent; SplitcError naming the first
    field that is not. ``model_inputs``: tensor names the first stage may read besides ``tensors``."""
    # imported here: cluster_section may import consistent()
    from splitc.runtimes.cluster_section import check

    c = _Check(Path(folder), name)
    check(section, c)
    return consistent(section, c, model_inputs)


def consistent(section: dict, c: _Check, model_inputs=()) -> dict:
    """The consistency checks alone, on a section whose fields' types cluster_section.check has checked."""
    tensors = {}
    for t, spec in c.obj(section.get("tensors", {}), "cluster.tensors").items():
        c.tensor({"name": t, **c.obj(spec, f"cluster.tensors.{t}")}, f"cluster.tensors.{t}", onnx_names=False)
        tensors[t] = spec["shape"]
    for i, plan in enumerate(section["plans"]):
        where = f"cluster.plans[{i}]"
        _predicted(c, plan, where)
        made, end = set(model_inputs), 0
        for j, stage in enumerate(plan["stages"]):
            w = f"{where}.stages[{j}]"
            first, last = stage["blocks"]
            if first != end or last == first:
                c.fail(f"{w}.blocks", stage["blocks"], f"does not continue the previous stage's blocks at {end}")
            end = last
            unknown = [t for t in stage["inputs"] if j and t not in made]
            if unknown:
                c.fail(f"{w}.inputs", unknown, "are not made by an earlier stage")
            made.update(stage["inputs"] if j == 0 else ())
            _stage(c, stage, w, plan["devices"], tensors)
            made.update(stage["outputs"])
    return section


def _predicted(c: _Check, plan: dict, where: str) -> None:
    pred = c.obj(plan.get("predicted", {}), f"{where}.predicted")
    for key, value in pred.items():
        if value is not None:
            c.number(value, f"{where}.predicted.{key}")
    for slot, b in c.obj(plan.get("memory_bytes", {}), f"{where}.memory_bytes").items():
        c.choice(slot, f"{where}.memory_bytes", plan["devices"])
        c.integer(b, f"{where}.memory_bytes.{slot}", 0, MAX_TOTAL_BYTES * 64)


def _stage(c: _Check, stage: dict, where: str, devices: list, tensors: dict) -> None:
    strategy, parts = stage["strategy"], stage["parts"]
    slots = [c.choice(s, f"{where}.slots[{k}]", devices) for k, s in enumerate(c.items(stage.get("slots"), f"{where}.slots", 1))]
    shares = [c.integer(s, f"{where}.shares[{k}]", 1, MAX_SHARE) for k, s in enumerate(c.items(stage.get("shares"), f"{where}.shares", 1))]
    if len(set(slots)) != len(slots) or len(shares) != len(slots) or [p["slot"] for p in parts] != slots:
        c.fail(f"{where}.parts", parts, f"are not one part per slot of {slots} in order, with one share each")
    for k, p in enumerate(parts):
        if not isinstance(p.get("sha256"), str) or not _HEX64.fullmatch(p["sha256"]):
            c.fail(f"{where}.parts[{k}].sha256", p.get("sha256"), "is not a sha256 (64 hex digits)")
    if strategy == "single" and shares != [1]:
        c.fail(f"{where}.shares", shares, "of a single-device stage is not [1]")
    if strategy == "data" and len({p["file"] for p in parts}) != 1:
        c.fail(f"{where}.parts", parts, "of a data-parallel stage are not replicas of one file")
    if strategy not in ("spatial", "channel"):
        return
    if len(stage["outputs"]) != 1 or stage["outputs"][0] not in tensors:
        c.fail(f"{where}.outputs", stage["outputs"], "are not one tensor listed in cluster.tensors")
    shape = tensors[stage["outputs"][0]]
    axis = c.obj(stage.get("merge"), f"{where}.merge").get("axis")
    c.choice(axis, f"{where}.merge.axis", (2,) if strategy == "spatial" else (1, -1))
    if not -len(shape) <= axis < len(shape):
        c.fail(f"{where}.merge.axis", axis, f"is not an axis of the output {shape}")
    if sum(shares) != shape[axis]:
        c.fail(f"{where}.shares", shares, f"do not add up to the output's {shape[axis]} on axis {axis}")
    key = "output_rows" if strategy == "spatial" else "channels"
    edges = [0, *itertools.accumulate(shares)]
    for k, p in enumerate(parts):
        got = p.get(key)
        if got != [edges[k], edges[k + 1]]:
            c.fail(f"{where}.parts[{k}].{key}", got, f"is not [{edges[k]}, {edges[k + 1]}], its share of the output")
        if strategy == "spatial":
            h_in = _input_h(c, stage, where, tensors)
            lo, hi = p["input_rows"]
            if hi > h_in or hi - lo > h_in:
                c.fail(f"{where}.parts[{k}].input_rows", p["input_rows"], f"are not inside the input's {h_in} rows")


def _input_h(c: _Check, stage: dict, where: str, tensors: dict) -> int:
    if len(stage["inputs"]) != 1 or stage["inputs"][0] not in tensors or len(tensors[stage["inputs"][0]]) < 3:
        c.fail(f"{where}.inputs", stage["inputs"], "are not one tensor with an H axis listed in cluster.tensors")
    return tensors[stage["inputs"][0]][2]


def verify_part(folder: str | Path, part: dict, chunk: int = 1 << 22) -> Path:
    """The part's file, after checking its bytes hash to its ``sha256`` (a file swapped after compile is refused)."""
    path = Path(folder) / part["file"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    if digest.hexdigest() != part["sha256"]:
        raise SplitcError(f"{path}: its sha256 is not the plan's {part['sha256'][:16]}...; recompile, or restore the file")
    return path
