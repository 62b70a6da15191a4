"""Run the TVM libraries written by ``splitc compile --emit onnx,tvm``.

``SplitModel(out_dir, runtime="tvm")`` runs the same stages, boundary hops and wire codec as the
onnxruntime path; only each stage's part is the compiled library named in plan.json's
``tvm_artifacts`` instead of its ONNX file. The quantize / dequantize boundary ops are inside the
libraries, so the same wire tensors cross each link, in the same codec.

TVM is imported only when a library is loaded, and this module imports nothing from
``splitc.runtimes`` (numpy, the standard library and ``splitc.errors`` only): the runtime package
does not need TVM, and a device-side script can load this file alone (scripts/tvm_device_run.py).
On a device the TVM runtime suffices: ``TVM_USE_RUNTIME_LIB=1`` makes ``import tvm`` load
libtvm_runtime without the compiler.
"""

from __future__ import annotations

import json
import platform
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError

ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}  # what platform.machine() or a triple may say -> our name


def elf_arch(path: str | Path) -> str | None:
    """The architecture an ELF file is built for, from its header's e_machine; None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(order + "H", head, 18)
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


def arch_name(machine: str) -> str:
    machine = machine.lower()
    return ARCH_ALIASES.get(machine, machine)


def host_arch() -> str:
    return arch_name(platform.machine())


TVM_INSTALL = "pip install 'splitc[tvm]'"


def import_tvm(what: str = "--runtime tvm", frontend: bool = False):
    """Apache TVM, or a one-line error naming ``what`` needed it; ``frontend``: also its ONNX importer (compiling)."""
    try:
        import tvm  # noqa: PLC0415

        if frontend:
            from tvm.relax.frontend.onnx import from_onnx  # noqa: F401, PLC0415
    except ImportError as e:
        raise SplitcError(f"{what} needs Apache TVM 0.27 ({e}): {TVM_INSTALL}") from None
    return tvm


@dataclass(frozen=True)
class _Value:
    name: str


class TVMPart:
    """One compiled part, with the slice of onnxruntime.InferenceSession's interface SplitModel uses."""

    def __init__(self, library: str | Path, record: dict, threads: int = 0):
        library = Path(library)
        if not library.is_file():
            raise SplitcError(f"{library}: missing (plan.json names it for stage {record.get('stage')})")
        arch, host = elf_arch(library), host_arch()
        if arch is None:
            raise SplitcError(f"{library}: not a shared library (no ELF header)")
        if arch != host:
            raise SplitcError(f"{library.name} is compiled for {arch} (target {json.dumps(record.get('target'))}); this machine is {host}:"
                              " run it on that device, or recompile for this one (--device-target host / --cloud-target host)")
        tvm = import_tvm()
        if threads > 0:
            tvm.get_global_func("runtime.config_threadpool")(1, threads)
        self.record = record
        self.inputs = [_Value(i["name"]) for i in record["inputs"]]
        self.outputs = [_Value(o["name"]) for o in record["outputs"]]
        self._dtypes = {i["name"]: np.dtype(i["dtype"]) for i in record["inputs"]}
        self.device = tvm.cuda(0) if record.get("device") == "cuda" else tvm.cpu(0)
        if not self.device.exist:
            raise SplitcError(f"{library.name} runs on {record.get('device')}, and this machine has none")
        from tvm.runtime.vm import VirtualMachine  # noqa: PLC0415

        self._tvm = tvm
        self.module = _load_module(tvm, library)
        self.vm = VirtualMachine(self.module, self.device)
        self._main = self.vm["main"]

    def get_inputs(self) -> list[_Value]:
        return self.inputs

    def get_outputs(self) -> list[_Value]:
        return self.outputs

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # np.array(copy=None, order="C"), not ascontiguousarray: that turns a 0-d scale into shape (1,)
        args = [self._tvm.runtime.tensor(np.array(feeds[v.name], dtype=self._dtypes[v.name], order="C", copy=None), device=self.device)
                for v in self.inputs]
        result = self._main(*args)
        values = [result] if isinstance(result, self._tvm.runtime.Tensor) else list(result)
        if len(values) != len(self.outputs):
            raise SplitcError(f"{self.record['library']}: returned {len(values)} outputs, plan.json lists {len(self.outputs)}")
        produced = {v.name: x.numpy() for v, x in zip(self.outputs, values)}
        return [produced[n] for n in (names if names is not None else [v.name for v in self.outputs])]


_LOADED: dict[str, tuple[int, ...]] = {}  # library path -> identity of the file dlopen'ed from it


def _load_module(tvm, library: Path):
    """tvm.runtime.load_module, except that a library rewritten at a path already loaded in this
    process (a recompile with --force) is loaded from a fresh copy: dlopen would hand back the old one."""
    st = library.stat()
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if _LOADED.setdefault(str(library.resolve()), identity) == identity:
        return tvm.runtime.load_module(str(library))
    with tempfile.TemporaryDirectory(prefix="splitc-tvm-") as tmp:  # mapped once loaded: the copy can go
        copy = Path(tmp) / f"{st.st_ino}-{st.st_mtime_ns}-{library.name}"
        shutil.copyfile(library, copy)
        return tvm.runtime.load_module(str(copy))


def records(plan: dict) -> list[dict]:
    """plan.json's ``tvm_artifacts`` as a flat list of records (a target with several stages has a list)."""
    found = []
    for entry in plan.get("tvm_artifacts", {}).values():
        found += entry if isinstance(entry, list) else [entry]
    return found


def open_parts(out_dir: str | Path, plan: dict, threads: int = 0) -> dict[int, TVMPart]:
    """Stage index -> loaded TVMPart, for every stage of the plan that runs something."""
    out = Path(out_dir)
    if "tvm_artifacts" not in plan:
        raise SplitcError(f"{out}: compiled without TVM libraries; recompile with --emit onnx,tvm")
    import_tvm()  # first: without TVM, what to install is the news
    by_stage = {r["stage"]: r for r in records(plan)}
    missing = [s["index"] for s in plan["stages"] if s.get("artifact") is not None and s["index"] not in by_stage]
    if missing:
        raise SplitcError(f"{out}: plan.json's tvm_artifacts has no library for stage(s) {missing}")
    return {index: TVMPart(library_path(out, r), r, threads) for index, r in sorted(by_stage.items())}


def library_path(out_dir: str | Path, record: dict) -> Path:
    """The record's library, resolved (symlinks too) and inside ``out_dir``: loading a library runs its constructors."""
    out = Path(out_dir)
    library = (out / str(record["library"])).resolve()
    if Path(str(record["library"])).is_absolute() or not library.is_relative_to(out.resolve()):
        raise SplitcError(f"{out}/plan.json: TVM library '{record['library']}' leaves the output folder")
    return library


ATOL = 1e-4  # relative to max(1, |onnxruntime|)
MAX_FLIPS = 1e-3  # fraction of a quantized tensor's elements allowed one step off


@dataclass(frozen=True)
class PartCheck:
    """One output of one stage, TVM library vs onnxruntime part on the same inputs."""

    stage: int
    library: str
    name: str
    max_abs: float
    max_ref: float
    flips: int  # quantized (uint8 wire) outputs: elements one step off
    size: int
    passed: bool


def compare_parts(tvm_model, ort_model, feeds: dict[str, np.ndarray]) -> list[PartCheck]:
    """Run ``ort_model`` (a SplitModel on the ONNX parts) on ``feeds``, recording every stage's inputs and
    outputs, then each of ``tvm_model``'s libraries on exactly those inputs, and compare output by output.

    Outputs must agree within ATOL x max(1, |onnxruntime|). A quantized boundary tensor (``X__q`` with
    ``X__scale``, ``X__zero_point``) is compared by what it means, ``(q - zero_point) x scale``: an
    element may be one quantization step off where its value sat within float noise (far below ATOL)
    of a rounding boundary, which tips either way, at no more than MAX_FLIPS of the elements. A step
    is the error the int8 boundary has anyway; the flips are counted and reported.
    """
    recorded: dict[int, tuple[dict, dict]] = {}

    class _Recorder:
        def __init__(self, index, sess):
            self.index, self.sess = index, sess

        def get_inputs(self):
            return self.sess.get_inputs()

        def get_outputs(self):
            return self.sess.get_outputs()

        def run(self, names, inputs):
            out = self.sess.run(names, inputs)
            recorded[self.index] = (dict(inputs), dict(zip(names, out)))
            return out

    sessions = ort_model.sessions
    ort_model.sessions = {i: _Recorder(i, sess) for i, sess in sessions.items()}
    try:
        ort_model.run(feeds)
    finally:
        ort_model.sessions = sessions
    checks = []
    for index, (inputs, ref) in sorted(recorded.items()):
        part = tvm_model.sessions[index]
        got = dict(zip(ref, part.run(list(ref), inputs)))
        for name, r in ref.items():
            g = got[name]
            if g.shape != r.shape or g.dtype != r.dtype:
                raise SplitcError(f"{part.record['library']}: output '{name}' is {g.dtype}{list(g.shape)}, the ONNX part gives {r.dtype}{list(r.shape)}")
            checks.append(check_output(index, part.record["library"], name, got, ref))
    return checks


def check_output(index: int, library: str, name: str, got: dict, ref: dict) -> PartCheck:
    """Output ``name`` of a part's outputs ``got`` (TVM) against ``ref`` (onnxruntime), as compare_parts judges it."""
    r, g = ref[name], got[name]
    base = name[: -len("__q")] if name.endswith("__q") else None
    if base is not None and f"{base}__scale" in ref and f"{base}__zero_point" in ref:  # a quantized tensor: compare what it means
        def value(outs):
            return (outs[name].astype(np.float64) - outs[f"{base}__zero_point"].astype(np.float64)) * float(outs[f"{base}__scale"])

        vr, vg = value(ref), value(got)
        step = float(ref[f"{base}__scale"])
        diff = np.abs(vg - vr)
        max_ref = float(np.max(np.abs(vr))) if vr.size else 0.0
        off = diff > ATOL * max(1.0, max_ref)
        flips = int(np.count_nonzero(off))
        max_abs = float(diff.max()) if diff.size else 0.0
        passed = flips <= max(1, int(MAX_FLIPS * r.size)) and max_abs <= step * (1 + 1e-3) + ATOL * max(1.0, max_ref)
        return PartCheck(index, library, name, max_abs, max_ref, flips, int(r.size), passed)
    diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_ref = float(np.max(np.abs(r))) if r.size else 0.0
    if name.endswith("__zero_point") and r.dtype == np.uint8:  # judged with its tensor, above
        return PartCheck(index, library, name, max_abs, max_ref, int(np.count_nonzero(diff)), int(r.size), max_abs <= 1)
    return PartCheck(index, library, name, max_abs, max_ref, 0, int(r.size), max_abs <= ATOL * max(1.0, max_ref))
