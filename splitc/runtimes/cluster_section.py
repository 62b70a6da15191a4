"""The plan.json "cluster" section as the cluster runtime reads it: untrusted input, every field it uses checked.

Part files must resolve inside the output folder, slots must be devices of the section, rows and shares are
bounded integers; a bad field is one line naming it (``plan.json: cluster.plans[0].stages[1].parts[0].file
'../x.onnx' leaves the output folder``). The section's layout is in splitc/runtimes/cluster.py and
/tmp/cluster_design.md; the workers check part paths again on their side.
"""

from __future__ import annotations

from pathlib import Path

from splitc.errors import SplitcError
from splitc.runtimes.cluster_codec import CODECS
from splitc.runtimes.jsonguard import JSONLimitError, loads
from splitc.runtimes.planfile import MAX_DEPTH, MAX_PLAN_BYTES, _Check

STRATEGIES = ("single", "data", "spatial", "channel")
MAX_ROWS = 1 << 31
MAX_SHARE = 1 << 16


def read_plan(folder: str | Path) -> dict:
    """``folder``/plan.json as a JSON object, read within the plan's size and depth limits."""
    path = Path(folder) / "plan.json"
    if not path.is_file():
        raise SplitcError(f"{folder}: no plan.json here; point at a directory written by 'splitc compile --cluster'")
    if path.stat().st_size > MAX_PLAN_BYTES:
        raise SplitcError(f"{path}: more than the {MAX_PLAN_BYTES} bytes a plan may have")
    try:
        return loads(path.read_bytes(), max_bytes=MAX_PLAN_BYTES, max_depth=MAX_DEPTH)
    except JSONLimitError as e:
        raise SplitcError(f"{path}: {e}") from None


def load_section(folder: str | Path, plan: dict | None = None) -> tuple[dict, list[str]]:
    """(the "cluster" section of ``folder``/plan.json, the model's output names or []), checked. ``plan``: that
    plan.json as :func:`read_plan` gave it, when the caller has it already."""
    plan = read_plan(folder) if plan is None else plan
    c = _Check(Path(folder))
    c.obj(plan, "the plan")
    if "cluster" not in plan:
        raise SplitcError(f"{Path(folder) / 'plan.json'}: no 'cluster' section; compile with --cluster cluster.toml to run on a cluster")
    outputs = [c.name(c.obj(o, f"model.outputs[{i}]").get("name"), f"model.outputs[{i}].name")
               for i, o in enumerate(c.items(c.obj(plan.get("model", {}), "model").get("outputs", []), "model.outputs"))]
    return check(plan["cluster"], c), outputs


def check(section, c: _Check) -> dict:
    c.obj(section, "cluster")
    devices = {}
    for i, d in enumerate(c.items(section.get("devices"), "cluster.devices", 1)):
        where = f"cluster.devices[{i}]"
        slot = c.name(c.obj(d, where).get("slot"), f"{where}.slot")
        if slot in devices:
            c.fail(f"{where}.slot", slot, "names a device twice")
        devices[slot] = c.name(d.get("group"), f"{where}.group")
    c.choice(section.get("hub"), "cluster.hub", list(devices))
    for i, plan in enumerate(c.items(section.get("plans"), "cluster.plans", 1)):
        where = f"cluster.plans[{i}]"
        slots = [c.choice(s, f"{where}.devices[{j}]", list(devices)) for j, s in enumerate(c.items(c.obj(plan, where).get("devices"), f"{where}.devices", 1))]
        if len(set(slots)) != len(slots):
            c.fail(f"{where}.devices", slots, "names a device twice")
        for j, stage in enumerate(c.items(plan.get("stages"), f"{where}.stages", 1)):
            _stage(c, stage, f"{where}.stages[{j}]", slots)
    return section


def _stage(c: _Check, stage, where: str, slots: list[str]) -> None:
    c.obj(stage, where)
    strategy = c.choice(stage.get("strategy"), f"{where}.strategy", STRATEGIES)
    first, last = (c.integer(b, f"{where}.blocks[{k}]", 0, MAX_ROWS) for k, b in enumerate(_pair(c, stage.get("blocks"), f"{where}.blocks")))
    for key in ("inputs", "outputs"):
        for k, t in enumerate(c.items(stage.get(key), f"{where}.{key}", 1)):
            c.name(t, f"{where}.{key}[{k}]")
    parts = c.items(stage.get("parts"), f"{where}.parts", 1)
    if strategy == "single" and len(parts) != 1:
        c.fail(f"{where}.parts", parts, "of a single-device stage has more than one part")
    if strategy == "data":
        shares = c.items(stage.get("shares"), f"{where}.shares", 1)
        if len(shares) != len(parts):
            c.fail(f"{where}.shares", shares, f"does not give one share per part ({len(parts)})")
        for k, s in enumerate(shares):
            c.integer(s, f"{where}.shares[{k}]", 1, MAX_SHARE)
    if strategy in ("spatial", "channel") and len(parts) > 1:
        axis = c.obj(stage.get("merge"), f"{where}.merge").get("axis")
        c.choice(axis, f"{where}.merge.axis", (2,) if strategy == "spatial" else (1, -1))
    for k, p in enumerate(parts):
        w = f"{where}.parts[{k}]"
        c.obj(p, w)
        c.choice(p.get("slot"), f"{w}.slot", slots)
        c.path(p.get("file"), f"{w}.file")
        if "codec" in p:  # the boundary codec of the hub<->device edge; absent: fp32
            c.choice(p["codec"], f"{w}.codec", CODECS)
        for key in ("inputs", "outputs"):
            names = [c.name(t, f"{w}.{key}[{m}]") for m, t in enumerate(c.items(p.get(key), f"{w}.{key}", 1))]
            if strategy != "data" and key == "outputs" and sorted(names) != sorted(stage["outputs"]):
                c.fail(f"{w}.outputs", names, f"are not the stage's outputs {stage['outputs']}")
        if strategy == "spatial":
            for key in ("input_rows", "output_rows"):
                lo, hi = (c.integer(r, f"{w}.{key}[{m}]", 0, MAX_ROWS) for m, r in enumerate(_pair(c, p.get(key), f"{w}.{key}")))
                if lo >= hi:
                    c.fail(f"{w}.{key}", [lo, hi], "is not a row range [first, last) with first < last")
    if strategy == "spatial":  # the tiles' output rows cover [0, H) in order: the hub concatenates them as they come
        ends = [0] + [p["output_rows"][1] for p in parts[:-1]]
        if [p["output_rows"][0] for p in parts] != ends:
            rows = [p["output_rows"] for p in parts]
            raise SplitcError(f"{c.file}: {where}.parts: output_rows {rows} do not tile the stage output in order from row 0")
    if first > last:
        c.fail(f"{where}.blocks", [first, last], "is not a block range [first, last)")


def _pair(c: _Check, node, where: str) -> list:
    if not isinstance(node, list) or len(node) != 2:
        c.fail(where, node, "is not a pair [first, last]")
    return node
