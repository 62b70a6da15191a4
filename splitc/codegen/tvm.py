"""Compile the emitted ONNX parts with TVM, each for its own tier's hardware.

``splitc compile ... --emit onnx,tvm`` imports every part (``head.onnx``, ``tail.onnx``) with
``tvm.relax.frontend.onnx.from_onnx`` (weights become constants of the library), builds it with
``tvm.compile`` for its tier's target and exports one shared library per part
(``head.tvm.so``, ``tail.tvm.so``). The device part is cross-compiled and linked with the GNU
toolchain of its triple (``aarch64-linux-gnu-g++`` for a Raspberry Pi 4). The boundary op is
inside the parts (quantize at the end of the head, dequantize at the start of the tail), so the
libraries exchange exactly the wire tensors the ONNX parts do and the runtime codec is shared.

What a device needs to load its library is recorded in plan.json under ``tvm_artifacts``:
the file, the target (a TVM JSON target dict), the TVM version, the TVM device ("cpu" or "cuda")
and the part's inputs and outputs in calling order. ``splitc.runtimes.tvm`` loads them with the
TVM runtime alone.

TVM is optional (``pip install 'splitc[tvm]'``): it is imported only when TVM output is asked for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from splitc.errors import SplitcError
from splitc.runtimes.tvm import arch_name, host_arch
from splitc.runtimes.tvm import import_tvm as _import_tvm


def import_tvm(what: str = "TVM output"):
    return _import_tvm(what, frontend=True)

EMITS = ("onnx", "tvm")

_A72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
_A57 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a57", "mattr": ["+neon"]}
# x86-64-v3 (AVX2, FMA): every x86 server CPU since Haswell / Zen 1.
_X86 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"}

# Named TVM targets. A device tier picks by its profile's name (--device-target auto), the server
# tier by --cloud-target (llvm or cuda).
TARGETS: dict[str, dict] = {
    "rpi4": _A72,  # Raspberry Pi 4: 4x Cortex-A72, NEON
    "jetson-nano": _A57,  # Jetson Nano CPU: 4x Cortex-A57, NEON
    "jetson-nano-cuda": {"kind": "cuda", "arch": "sm_53", "host": _A57},  # its Maxwell GPU
    "cloud": _X86,
    "cloud-cuda": {"kind": "cuda", "arch": "sm_75", "host": _X86},  # T4-class GPU server
}
CLOUD_TARGETS = {"llvm": "cloud", "cuda": "cloud-cuda"}


def parse_emit(spec: str) -> tuple[str, ...]:
    """``onnx`` or ``onnx,tvm``. The ONNX parts are always written: TVM compiles them, plan.json names them."""
    kinds = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [k for k in kinds if k not in EMITS]
    if bad or not kinds:
        raise SplitcError(f"--emit '{spec}': choose from {', '.join(EMITS)}, comma separated (e.g. --emit onnx,tvm)")
    return tuple(k for k in EMITS if k in kinds or k == "onnx")


def host_target() -> dict:
    """An llvm target for this machine's CPU (what --device-target host / --cloud-target host mean)."""
    tvm = import_tvm("--emit tvm")
    return {"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu())}


def resolve_target(spec: str, *, role: str, profile: str) -> dict:
    """The TVM target dict for one tier.

    ``spec``: ``auto`` (device: the profile's name in TARGETS), ``host``, a name in TARGETS,
    ``llvm`` / ``cuda`` (server), or a JSON target dict.
    """
    flag = "--device-target" if role == "device" else "--cloud-target"
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            target = json.loads(spec)
        except ValueError as e:
            raise SplitcError(f"{flag} '{spec}': not a JSON target dict ({e})") from None
        if not isinstance(target, dict) or "kind" not in target:
            raise SplitcError(f"{flag} '{spec}': a JSON target needs a 'kind', e.g. {json.dumps(_A72)}")
        return target
    if spec == "host":
        return host_target()
    if role == "device" and spec == "auto":
        spec = profile
        if spec not in TARGETS:
            known = ", ".join(k for k in TARGETS if not k.startswith("cloud"))
            raise SplitcError(f"no TVM target is known for device profile '{profile}': pass --device-target"
                              f" ({known}, host, or a JSON target dict)")
    if role == "server" and spec in CLOUD_TARGETS:
        spec = CLOUD_TARGETS[spec]
    if spec not in TARGETS:
        choices = ("auto, " if role == "device" else "llvm, cuda, ") + ", ".join(TARGETS) + ", host or a JSON target dict"
        raise SplitcError(f"{flag} '{spec}': choose {choices}")
    return dict(TARGETS[spec])


def _llvm_host(target: dict) -> dict:
    return target.get("host", target) if target["kind"] != "llvm" else target


def target_arch(target: dict) -> str:
    """The CPU architecture the library's host code runs on: x86_64, aarch64, ..."""
    triple = _llvm_host(target).get("mtriple")
    if not triple:
        return host_arch()
    return arch_name(triple.split("-")[0])


def _linker(target: dict) -> tuple[str | None, str | None]:
    """(cross compiler command or None for the host's, triple) to link the library for ``target``."""
    arch = target_arch(target)
    if arch == host_arch():
        return None, None
    triple = _llvm_host(target)["mtriple"]
    gnu = "-".join([arch, *triple.split("-")[1:]]) if triple.count("-") >= 2 else f"{arch}-linux-gnu"
    return f"{gnu}-g++", gnu


def check(options, targets) -> dict[str, dict] | None:
    """Validate the TVM options before compiling anything: tier name -> target dict, or None without --emit tvm.

    The first tier (the device) takes ``options.device_target``, the last (the server)
    ``options.cloud_target``, a tier between them the target named like its profile.
    Raises a one-line SplitcError when TVM, a target or a cross toolchain is missing.
    """
    if "tvm" not in parse_emit(options.emit):
        return None
    import_tvm("--emit tvm")
    chosen = {}
    for i, tier in enumerate(targets):
        if i == len(targets) - 1:
            chosen[tier.name] = resolve_target(options.cloud_target, role="server", profile=tier.name)
        else:
            chosen[tier.name] = resolve_target(options.device_target if i == 0 else "auto", role="device", profile=tier.name)
    for name, target in chosen.items():
        _target(target, name)
        cxx, gnu = _linker(target)
        if cxx is not None and shutil.which(cxx) is None:
            raise SplitcError(f"the {name} library is for {gnu}, but the cross toolchain '{cxx}' is not installed:"
                              f" apt-get install g++-{gnu.replace('_', '-')} (or --device-target host to compile for this machine)")
        if cxx is None:
            from tvm.support.cc import get_cc  # noqa: PLC0415

            if not get_cc():
                raise SplitcError(f"linking the {name} library needs a C++ compiler and none is on PATH: apt-get install g++")
    return chosen


def _target(target: dict, name: str):
    tvm = import_tvm("--emit tvm")
    try:
        return tvm.target.Target(target)
    except Exception as e:  # noqa: BLE001 - TVM raises its own error types for bad targets
        raise SplitcError(f"TVM target for {name} {json.dumps(target)} is invalid: {str(e).strip().splitlines()[-1]}") from None


def compile_parts(tmp: Path, plan: dict, chosen: dict[str, dict]) -> dict[str, dict | list[dict]]:
    """Compile each stage's ONNX part in ``tmp`` to ``<part>.tvm.so`` beside it.

    Returns plan.json's ``tvm_artifacts``: target name -> record (a list of records when that
    target runs several stages, as ``artifacts`` does).
    """
    import onnx  # noqa: PLC0415

    tvm = import_tvm("--emit tvm")
    from tvm.relax.frontend.onnx import from_onnx  # noqa: PLC0415
    from tvm.support import cc  # noqa: PLC0415

    by_target: dict[str, list[dict]] = {}
    for stage in plan["stages"]:
        file, name = stage.get("artifact"), stage["target"]
        if file is None:
            continue
        target = chosen[name]
        proto = onnx.load(str(tmp / file))
        initializers = {t.name for t in proto.graph.initializer}
        inputs = [_io(v) for v in proto.graph.input if v.name not in initializers]
        outputs = [_io(v) for v in proto.graph.output]
        library = f"{Path(file).stem}.tvm.so"
        try:
            mod = from_onnx(proto, keep_params_in_input=False)
            params = mod["main"].params
            if len(params) != len(inputs):
                raise SplitcError(f"internal error: TVM imported {file} with {len(params)} inputs, it has {len(inputs)}")
            executable = tvm.compile(mod, target=_target(target, name), relax_pipeline=pipeline(target))
            cxx, _ = _linker(target)
            fcompile = cc.cross_compiler(cxx) if cxx else None
            executable.export_library(str(tmp / library), fcompile=fcompile)
        except SplitcError:
            raise
        except Exception as e:  # noqa: BLE001 - TVM's import/build errors, surfaced as one line
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            raise SplitcError(f"TVM could not compile {file} for {name} ({json.dumps(target)}):"
                              f" {type(e).__name__}: {lines[-1] if lines else ''}") from None
        by_target.setdefault(name, []).append({
            "library": library,
            "target": target,
            "stage": stage["index"],
            "onnx": file,
            "device": "cuda" if target["kind"] == "cuda" else "cpu",
            "arch": target_arch(target),
            "tvm_version": str(tvm.__version__),
            "inputs": inputs,
            "outputs": outputs,
        })
    return {name: records[0] if len(records) == 1 else records for name, records in by_target.items()}


def pipeline(target: dict):
    """The Relax pipeline for ``target``: TVM's default, plus on CPUs splitc's untuned default schedule.

    ``tvm.compile``'s CPU pipeline leaves every operator a naive scalar loop nest (no tuning
    database). Here batch norms are first folded into the convolutions before them (as onnxruntime
    does), and before lowering ``_CPUSchedule`` gives each fused operator a fixed schedule: injective
    producers inlined (padding excepted), reductions moved outside the last spatial axis, that axis
    vectorized (NEON: 4 lanes, x86: 8), the outer spatial axes fused and parallel. Every step is
    checked by TVM's schedule primitives; an operator it cannot schedule stays as TVM built it.
    SPLITC_TVM_SCHEDULE=default builds with TVM's default pipeline alone (for comparison).
    """
    import os  # noqa: PLC0415

    if target["kind"] != "llvm" or os.environ.get("SPLITC_TVM_SCHEDULE", "splitc") == "default":
        return "default"
    import tvm  # noqa: PLC0415
    from tvm import relax  # noqa: PLC0415
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # noqa: PLC0415
    from tvm.s_tir import dlight  # noqa: PLC0415

    lanes = 4 if target_arch(target) in ("aarch64", "arm") else 8  # fp32 lanes of NEON / AVX2
    rule = _cpu_schedule_rule()(lanes)

    @tvm.transform.module_pass(opt_level=0, name="SplitcCPUPipeline")
    def _pipeline(mod, _ctx):
        tvm_target = tvm.target.Target.current(allow_none=True)
        with tvm_target if tvm_target is not None else tvm.target.Target(target):
            t = tvm.target.Target.current()
            inference = [relax.transform.FoldBatchnormToConv2D(), relax.transform.DecomposeOpsForInference(),
                         relax.transform.FoldConstant()]  # as onnxruntime does: batch norms into conv weights
            passes = (inference + cpu.library_dispatch_passes(t) + cpu.legalize_passes(t) + [dlight.ApplyDefaultSchedule(rule)]
                      + cpu.dataflow_lower_passes(t) + cpu.finalize_passes(t))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _cpu_schedule_rule():
    from tvm import s_tir, tirx  # noqa: PLC0415
    from tvm.s_tir.dlight.analysis import normalize_prim_func  # noqa: PLC0415
    from tvm.s_tir.dlight.base import ScheduleRule, try_inline  # noqa: PLC0415

    class _CPUSchedule(ScheduleRule):
        def __init__(self, lanes: int):
            self.lanes = lanes

        def apply(self, func, target, tunable):
            if not isinstance(func, tirx.PrimFunc):
                return None
            try:
                return self._schedule(s_tir.Schedule(func))
            except Exception:  # noqa: BLE001 - not schedulable this way: keep TVM's loop nest
                return None

        @staticmethod
        def _inline(sch, infos):
            """try_inline, except padding: a padded input is materialized once rather than
            re-tested for bounds in every inner iteration of the convolution reading it."""
            padding = [i for i in infos if sch.get(i.block_rv).name_hint.startswith(("pad", "data_pad"))]
            rest = try_inline(sch, [i for i in infos if i not in padding])
            return padding + rest

        def _schedule(self, sch):
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            reductions = []
            for info in self._inline(sch, infos):
                block, kinds = info.block_rv, info.dom_kind()
                loops = sch.get_loops(block)
                if not loops or len(loops) != len(kinds) or set(kinds) - {"S", "R"}:
                    continue
                spatial = [loop for loop, k in zip(loops, kinds) if k == "S"]
                reduce = [loop for loop, k in zip(loops, kinds) if k == "R"]
                if not spatial:
                    continue
                if reduce:  # accumulate a vector of outputs along the last spatial axis
                    sch.reorder(*spatial[:-1], *reduce, spatial[-1])
                if len(spatial) > 1:
                    sch.parallel(sch.fuse(*spatial[:-1]))
                extent = sch.get(spatial[-1]).extent
                extent = int(extent) if isinstance(extent, (int, tirx.IntImm)) else 0
                lanes = next((v for v in (self.lanes, self.lanes // 2) if v >= 4 and extent >= v and extent % v == 0), None)
                if lanes:
                    sch.vectorize(sch.split(spatial[-1], [None, lanes])[1])
                if reduce:
                    reductions.append((block, reduce[0]))
            for block, loop in reductions:
                sch.decompose_reduction(block, loop)
            return sch

    return _CPUSchedule


def _io(value) -> dict:
    from onnx import helper  # noqa: PLC0415

    t = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
    return {"name": value.name, "dtype": dtype, "shape": [d.dim_value for d in t.shape.dim]}
