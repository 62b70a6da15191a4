"""plan.json as the runtime reads it: input, not code. Every field the runtime uses is checked before anything
is opened, loaded or allocated, and a bad one is named: ``plan.json: stages[1].artifact '../x' leaves the output
folder``.

The runtime installs without the compiler (no jsonschema): this is a small structural check of the fields read by
splitc/runtimes/ (ort.py, tvm.py) and ``splitc run``, not the full schema (splitc/schema/plan.schema.json, which
the compiler's tests check its plans against). Paths must resolve, symlinks followed, inside the plan's folder;
tensor shapes are bounded (MAX_ELEMENTS per tensor, MAX_TOTAL_BYTES per set of inputs, outputs or hop).
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from splitc.errors import SplitcError
from splitc.runtimes.jsonguard import JSONLimitError, loads

MAX_PLAN_BYTES = 256 << 20
MAX_DEPTH = 32
MAX_ELEMENTS = 1 << 31  # per tensor
MAX_TOTAL_BYTES = 1 << 32  # the model's inputs together, its outputs together, one hop's wire tensors together
MAX_NAME = 4096
MAX_ITEMS = 1 << 20  # stages, hops, wire tensors, targets, ...
NUMPY_DTYPES = {"float32": 4, "float16": 2, "float64": 8, "uint8": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8,
                "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}
ONNX_NAMES = {"float": "float32", "double": "float64"}  # plan.json's model inputs use ONNX's names
_HEX64 = re.compile(r"[0-9a-f]{64}")


class _Check:
    def __init__(self, folder: Path, name: str = "plan.json"):
        self.folder, self.base, self.file = folder, folder.resolve(), name

    def fail(self, where: str, value, why: str):
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise SplitcError(f"{self.file}: {where} {shown[:80]} {why}")

    def obj(self, node, where: str) -> dict:
        if not isinstance(node, dict):
            self.fail(where, node, "is not an object")
        return node

    def items(self, node, where: str, minimum: int = 0) -> list:
        if not isinstance(node, list):
            self.fail(where, node, "is not a list")
        if not minimum <= len(node) <= MAX_ITEMS:
            self.fail(where, node, f"has {len(node)} items (at least {minimum}, at most {MAX_ITEMS})")
        return node

    def name(self, node, where: str) -> str:
        if not isinstance(node, str) or not node or len(node) > MAX_NAME or not node.isprintable():
            self.fail(where, node, f"is not a name (printable text, 1 to {MAX_NAME} characters)")
        return node

    def integer(self, node, where: str, lo: int = 0, hi: int = 1 << 62) -> int:
        if type(node) is not int or not lo <= node <= hi:
            self.fail(where, node, f"is not an integer in [{lo}, {hi}]")
        return node

    def number(self, node, where: str, lo: float = 0.0) -> float:
        if type(node) not in (int, float) or not math.isfinite(node) or node < lo:
            self.fail(where, node, f"is not a finite number >= {lo:g}")
        return float(node)

    def choice(self, node, where: str, allowed) -> object:
        if type(node) not in (str, int) or node not in allowed:
            self.fail(where, node, f"is not one of {', '.join(map(str, allowed))}")
        return node

    def path(self, node, where: str) -> Path:
        """``node`` as a path inside the folder, symlinks resolved; a one-line error if it leaves it."""
        if not isinstance(node, str) or not node or len(node) > MAX_NAME or "\0" in node:
            self.fail(where, node, "is not a file name")
        if PurePosixPath(node).is_absolute() or PureWindowsPath(node).anchor:
            self.fail(where, node, "is an absolute path; plan paths are relative to the output folder")
        resolved = (self.folder / node).resolve()
        if not resolved.is_relative_to(self.base):
            self.fail(where, node, "leaves the output folder")
        return resolved

    def tensor(self, node, where: str, onnx_names: bool) -> int:
        """A tensor spec {name, dtype, shape}: its size in bytes, bounded. ``onnx_names``: "float", "double" allowed."""
        self.obj(node, where)
        self.name(node.get("name"), f"{where}.name")
        dtype = node.get("dtype")
        if isinstance(dtype, str) and onnx_names:
            dtype = ONNX_NAMES.get(dtype, dtype)
        if not isinstance(dtype, str) or dtype not in NUMPY_DTYPES:
            self.fail(f"{where}.dtype", node.get("dtype"), f"is not a dtype the runtime handles ({', '.join(NUMPY_DTYPES)})")
        shape = self.items(node.get("shape"), f"{where}.shape")
        if len(shape) > 32:
            self.fail(f"{where}.shape", shape, "has more than 32 dimensions")
        for j, d in enumerate(shape):
            self.integer(d, f"{where}.shape[{j}]", 0, MAX_ELEMENTS)
        if math.prod(shape) > MAX_ELEMENTS:
            raise SplitcError(f"{self.file}: {where}.shape {shape} has {math.prod(shape)} elements, more than {MAX_ELEMENTS}")
        return math.prod(shape) * NUMPY_DTYPES[dtype]

    def tensors(self, node, where: str, onnx_names: bool = False) -> list:
        total = sum(self.tensor(t, f"{where}[{i}]", onnx_names) for i, t in enumerate(self.items(node, where)))
        if total > MAX_TOTAL_BYTES:
            raise SplitcError(f"{self.file}: {where} add up to {total} bytes, more than {MAX_TOTAL_BYTES}")
        names = [t["name"] for t in node]
        if len(set(names)) != len(names):
            self.fail(where, node, "names a tensor twice")
        return node


def validate(plan, folder: str | Path, name: str = "plan.json") -> dict:
    """``plan`` (parsed plan.json of ``folder``) if every field the runtime reads is sound; SplitcError naming the first that is not."""
    c = _Check(Path(folder), name)
    c.obj(plan, "the plan")
    targets = [c.name(c.obj(t, f"targets[{i}]").get("name"), f"targets[{i}].name")
               for i, t in enumerate(c.items(plan.get("targets"), "targets", 1))]
    if len(set(targets)) != len(targets):
        c.fail("targets", targets, "names a target twice")
    links = c.items(plan.get("links"), "links")
    for i, link in enumerate(links):
        c.obj(link, f"links[{i}]")
        for key, lo, hi in (("message_bytes", 0.0, 1e9), ("segment_header_bytes", 0.0, 1e6), ("mss_bytes", 1.0, 1e9)):
            if key in link and c.number(link[key], f"links[{i}].{key}", lo) > hi:  # the wire's framing (Link.wire_bytes)
                c.fail(f"links[{i}].{key}", link[key], f"is above {hi:g}")
    model = c.obj(plan.get("model"), "model")
    if "path" in model and not isinstance(model["path"], str):
        c.fail("model.path", model["path"], "is not a path")
    if not isinstance(model.get("sha256"), str) or not _HEX64.fullmatch(model["sha256"]):
        c.fail("model.sha256", model.get("sha256"), "is not a sha256 (64 hex digits)")
    c.tensors(model.get("inputs"), "model.inputs", onnx_names=True)
    for i, o in enumerate(c.items(model.get("outputs"), "model.outputs", 1)):
        c.name(c.obj(o, f"model.outputs[{i}]").get("name"), f"model.outputs[{i}].name")
    indices = set()
    for i, s in enumerate(c.items(plan.get("stages"), "stages")):
        where = f"stages[{i}]"
        c.obj(s, where)
        index = c.integer(s.get("index"), f"{where}.index", 0, MAX_ITEMS)
        if index in indices:
            c.fail(f"{where}.index", index, "is used by an earlier stage")
        indices.add(index)
        c.choice(s.get("target"), f"{where}.target", targets)
        if s.get("artifact") is not None:
            c.path(s["artifact"], f"{where}.artifact")
        for key in ("inputs", "outputs"):
            for j, t in enumerate(c.items(s.get(key, []), f"{where}.{key}")):
                c.name(t, f"{where}.{key}[{j}]")
    for i, hop in enumerate(c.items(plan.get("boundary"), "boundary")):
        where = f"boundary[{i}]"
        c.obj(hop, where)
        c.name(hop.get("tensor"), f"{where}.tensor")
        c.choice(hop.get("from"), f"{where}.from", targets)
        c.choice(hop.get("to"), f"{where}.to", targets)
        if hop["from"] == hop["to"]:
            c.fail(f"{where}.to", hop["to"], "is where the hop starts")
        c.integer(hop.get("link", 0), f"{where}.link", 0, len(links) - 1)
        if "direction" in hop:
            c.choice(hop["direction"], f"{where}.direction", ("up", "down"))
        if "stage" in hop:
            c.choice(hop["stage"], f"{where}.stage", sorted(indices))
        c.integer(hop.get("raw_bytes"), f"{where}.raw_bytes")
        if not isinstance(hop.get("codec", ""), str):
            c.fail(f"{where}.codec", hop["codec"], "is not a codec name")
        c.tensors(hop.get("wire"), f"{where}.wire")
        for j, w in enumerate(hop["wire"]):
            bits = c.choice(w.get("bits", 8), f"{where}.wire[{j}].bits", (1, 2, 4, 8))
            if type(bits) is not int or (bits != 8 and w["dtype"] != "uint8"):
                c.fail(f"{where}.wire[{j}].bits", bits, "packs only uint8 symbols")
    for target, files in c.obj(plan.get("artifacts", {}), "artifacts").items():
        for j, file in enumerate(files if isinstance(files, list) else [files]):
            c.path(file, f"artifacts.{target}" + (f"[{j}]" if isinstance(files, list) else ""))
    if "boundary_codec" in plan and not isinstance(plan["boundary_codec"], str):
        c.fail("boundary_codec", plan["boundary_codec"], "is not a codec name")
    if "tvm_artifacts" in plan:
        _tvm(c, plan["tvm_artifacts"], indices)
    if plan.get("sweep") is not None:
        _sweep(c, plan["sweep"])
    return plan


def _tvm(c: _Check, node, stages: set[int]) -> None:
    for target, entry in c.obj(node, "tvm_artifacts").items():
        many = isinstance(entry, list)
        for j, r in enumerate(entry if many else [entry]):
            where = f"tvm_artifacts.{target}" + (f"[{j}]" if many else "")
            c.obj(r, where)
            c.path(r.get("library"), f"{where}.library")
            c.choice(r.get("stage"), f"{where}.stage", sorted(stages))
            c.choice(r.get("device", "cpu"), f"{where}.device", ("cpu", "cuda"))
            c.tensors(r.get("inputs"), f"{where}.inputs")
            c.tensors(r.get("outputs"), f"{where}.outputs")


def _sweep(c: _Check, node) -> None:
    sweep = c.obj(node, "sweep")
    lohi = c.items(sweep.get("range_bps"), "sweep.range_bps", 2)
    if len(lohi) != 2:
        c.fail("sweep.range_bps", lohi, "is not [low, high]")
    for j, v in enumerate(lohi):
        c.number(v, f"sweep.range_bps[{j}]")
    for i, iv in enumerate(c.items(sweep.get("intervals"), "sweep.intervals")):
        where = f"sweep.intervals[{i}]"
        c.obj(iv, where)
        c.number(iv.get("min_up_bps"), f"{where}.min_up_bps")
        c.number(iv.get("max_up_bps"), f"{where}.max_up_bps")
        c.path(iv.get("plan"), f"{where}.plan")


def load(folder: str | Path) -> dict:
    """``folder``/plan.json, parsed within bounds and validated; SplitcError (one line) otherwise."""
    folder = Path(folder)
    path = folder / "plan.json"
    if not path.is_file():
        raise SplitcError(f"{folder}: no plan.json here; point at a directory written by 'splitc compile'")
    size = path.stat().st_size
    if size > MAX_PLAN_BYTES:
        raise SplitcError(f"{path}: {size} bytes, more than the {MAX_PLAN_BYTES} a plan may have")
    try:
        plan = loads(path.read_bytes(), max_bytes=MAX_PLAN_BYTES, max_depth=MAX_DEPTH)
    except JSONLimitError as e:
        raise SplitcError(f"{path}: {e}") from None
    return validate(plan, folder)
