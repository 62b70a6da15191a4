"""The compile pipeline: import, annotate, partition, split, emit. And its Python API."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedNodesPass, TopologicalSortPass

from splitc.errors import SplitcError
from splitc.frontend import load_proto, sha256_file, to_ir
from splitc.passes.fix_input_shapes import FixInputShapesPass
from splitc.passes.flops import FlopsPass
from splitc.passes.infer_shapes import InferShapesPass
from splitc.passes.latency import LatencyPass
from splitc.passes.materialize_shapes import MaterializeShapesPass
from splitc.passes.partition import PARTITION, PartitionPass, PartitionResult
from splitc.passes.replicable import ReplicablePass
from splitc.passes.split import PARTS, SplitPass, SplitResult
from splitc.passes.tensor_bytes import TensorBytesPass
from splitc.optimizer import OBJECTIVES, Goal
from splitc.targets import DeviceProfile, load_target, parse_links

BOUNDARIES = ("int8", "fp32")


@dataclass(frozen=True)
class CompileOptions:
    target: str = "rpi4,cloud"  # a chain of tiers, device first
    link: str = "4g"  # one link for every adjacent pair, or one per pair: "wifi,4g"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    boundary: str = "int8"
    objective: str = "latency"  # latency | energy | throughput
    deadline_s: float | None = None
    max_energy_j: float | None = None
    max_device_memory: int | None = None  # bytes
    max_cloud_s: float | None = None
    allow_return: bool = False
    time_limit_s: float | None = None
    sweep_bps: tuple[float, float] | None = None  # uplink range for the bandwidth sweep
    emit: str = "onnx"  # "onnx,tvm": also a TVM library per part (splitc/tvm_codegen.py)
    device_target: str = "auto"  # TVM target of the device's parts: auto (by its profile), host, a name or JSON
    cloud_target: str = "llvm"  # TVM target of the server's parts: llvm (x86), cuda, host, a name or JSON
    calibrate: str | None = None  # images directory or .npz of inputs, for calibrated boundaries (splitc/calibrate.py)
    accuracy_budget: str | None = None  # e.g. "top1=0.99" or "cosine=0.999": what --boundary auto must meet per tensor
    calibrate_norm: str = "imagenet"  # how images become inputs: imagenet | unit | raw | raw-bgr
    calibrate_samples: int = 48  # images: crops/flips drawn; the first 65% fit ranges, the rest measure size and error

    @property
    def goal(self) -> Goal:
        return Goal(self.objective, self.deadline_s, self.max_energy_j, self.max_device_memory, self.max_cloud_s)


def resolve_targets(spec: str) -> tuple[DeviceProfile, ...]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) < 2:
        raise SplitcError(f"--target '{spec}': give a chain of two or more tiers, device first, e.g. --target rpi4,cloud")
    if len(set(names)) != len(names):
        raise SplitcError(f"--target '{spec}': each tier must be named once")
    return tuple(load_target(n) for n in names)


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.Model:
    """Run a pipeline; a user-facing error raised inside a pass surfaces as itself, not wrapped."""
    try:
        return ir.passes.PassManager(passes)(model).model
    except ir.passes.PassError as e:
        cause = e
        while cause.__cause__ is not None and isinstance(cause, ir.passes.PassError):
            cause = cause.__cause__
        if isinstance(cause, SplitcError):
            raise cause from None
        raise


def import_model(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ir.Model:
    """Load, fix input shapes, sort, name, infer shapes, materialize shape arithmetic."""
    path = Path(path)
    model = to_ir(load_proto(path), path.name)
    passes = [
        FixInputShapesPass(dict(input_shapes or {}), path.name),
        TopologicalSortPass(),
        NameFixPass(),
        InferShapesPass(path.name),
        MaterializeShapesPass(),
        RemoveUnusedNodesPass(),
        ReplicablePass(),
        TensorBytesPass(path.name),
    ]
    return run_passes(passes, model)


def annotate(model: ir.Model, targets: tuple[DeviceProfile, ...]) -> ir.Model:
    return run_passes([FlopsPass(), LatencyPass(targets)], model)


@dataclass
class CompileResult:
    model: ir.Model
    plan: dict
    output_dir: Path | None
    partition: PartitionResult
    split: SplitResult


def compile_model(
    model_path: str | Path,
    output_dir: str | Path | None,
    options: CompileOptions = CompileOptions(),
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    extra_files: Callable[[Path, CompileResult], None] | None = None,
) -> CompileResult:
    """Compile ``model_path`` for ``options.target`` and write the artifacts to ``output_dir``.

    ``output_dir`` is written whole or not at all. ``None`` plans without writing. ``extra_files(dir, result)``
    writes more files (the report) into the output before it appears, so they are part of the same all-or-nothing write.
    """
    from splitc.plan import build_plan

    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    from splitc.codecs import parse_budget, parse_codec

    codec_spec = parse_codec(options.boundary)  # int8 / fp32 (BOUNDARIES) or a calibrated codec (splitc/codecs.py)
    budget = parse_budget(options.accuracy_budget)
    if options.objective not in OBJECTIVES:
        raise SplitcError(f"--objective '{options.objective}': choose one of {', '.join(OBJECTIVES)}")
    targets = resolve_targets(options.target)
    links = parse_links(options.link, len(targets) - 1)
    from splitc import tvm_codegen

    tvm_targets = tvm_codegen.check(options, targets)  # None unless options.emit asks for TVM
    model_path = Path(model_path)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and out.exists() and not force:
        raise SplitcError(f"{out}: already exists; choose another -o directory or pass --force to replace it")
    step("import")
    model = import_model(model_path, options.input_shapes)
    step("annotate")
    annotate(model, targets)
    if codec_spec.calibrated:
        _calibrate(model, codec_spec, budget, options)
    step("partition")
    run_passes([PartitionPass(targets, links, options.boundary, goal=options.goal, allow_return=options.allow_return,
                              time_limit_s=options.time_limit_s)], model)
    step("split")
    run_passes([SplitPass(options.boundary)], model)
    partition: PartitionResult = model.graph.meta[PARTITION]
    split: SplitResult = model.graph.meta[PARTS]
    artifacts = artifact_names(split, targets)
    plan = build_plan(model, model_path, sha256_file(model_path), targets, links, options, partition, split, artifacts)
    variants = []
    if options.sweep_bps is not None:
        step("sweep")
        variants = _sweep_variants(model, model_path, targets, links, options, partition)
        plan["sweep"] = _sweep_table(links[0], options, variants)
        model.graph.meta[PARTITION], model.graph.meta[PARTS] = partition, split
    if codec_spec.calibrated:
        plan["calibration"] = {"data": options.calibrate, "norm": options.calibrate_norm, "budget": budget,
                               "codecs": len(model.graph.meta.get("splitc.codecs", {})),
                               "rule": "per tensor: the smallest measured codec meeting the budget with that tensor alone quantized"}
    plan["compile_s"] = round(time.perf_counter() - t0, 4)
    result = CompileResult(model, plan, out, partition, split)
    if out is not None:
        step("write")
        _write_atomically(out, split, artifacts, targets, plan, force, tvm_targets,
                          extra=None if extra_files is None else (lambda tmp: extra_files(tmp, result)), variants=variants)
    return result


def _calibrate(model: ir.Model, spec, budget: dict, options: CompileOptions) -> None:
    """Fit (and for auto, choose) every crossing candidate's codec on the calibration data: graph meta CODECS."""
    import warnings

    from splitc.calibrate import CODECS, calibrate_codecs, load_samples
    from splitc.errors import SplitcWarning
    from splitc.plan import _io
    from splitc.graphutil import graph_inputs
    from splitc.runtimes.ort import synthetic_inputs

    inputs = [_io(v) for v in graph_inputs(model.graph)]
    if options.calibrate:
        samples = load_samples(options.calibrate, inputs, options.calibrate_norm, options.calibrate_samples)
    else:
        warnings.warn(f"--boundary {spec.name} without --calibrate: clip ranges fitted on synthetic normal inputs;"
                      " pass --calibrate DIR|file.npz for real ones", SplitcWarning, stacklevel=2)
        samples = [synthetic_inputs(inputs, seed) for seed in range(12)]
    model.graph.meta[CODECS] = calibrate_codecs(model, spec, samples, budget or ({"cosine": 0.999} if spec.kind == "auto" else {}))


def _sweep_variants(model, model_path, targets, links, options, partition) -> list[tuple[str, SplitResult, dict, dict, object]]:
    """One (directory, split, artifacts, plan, interval) per distinct plan of the bandwidth sweep."""
    from splitc.optimizer import fixed
    from splitc.plan import build_plan
    from splitc.sweep import sweep_bandwidth

    lo, hi = options.sweep_bps
    intervals = sweep_bandwidth(partition.cost_graph, options.goal, lo, hi, options.time_limit_s)
    variants = []
    sha = sha256_file(model_path)
    for i, interval in enumerate(intervals):
        mid = 2.0 / (1.0 / interval.lo_bps + 1.0 / interval.hi_bps)
        at = (links[0].scaled(mid),) + tuple(links[1:])
        run_passes([PartitionPass(targets, at, options.boundary, policy=fixed(interval.solution.placement, "sweep"),
                                  goal=options.goal, allow_return=options.allow_return)], model)
        run_passes([SplitPass(options.boundary)], model)
        v_split: SplitResult = model.graph.meta[PARTS]
        v_artifacts = artifact_names(v_split, targets)
        v_plan = build_plan(model, model_path, sha, targets, at, options, model.graph.meta[PARTITION], v_split, v_artifacts)
        variants.append((f"plans/{i}", v_split, v_artifacts, v_plan, interval))
    return variants


def _sweep_table(link, options, variants) -> dict:
    lo, hi = options.sweep_bps
    return {
        "parameter": "links[0].up_bps",
        "down_up_ratio": link.down_bps / link.up_bps,
        "objective": options.objective,
        "range_bps": [lo, hi],
        "method": "exact parametric search (Eisner-Severance) over 1/bandwidth",
        "intervals": [{"min_up_bps": iv.lo_bps, "max_up_bps": iv.hi_bps, "plan": d, "cut": p["cut"],
                       "value_at_min": iv.value_at_lo, "value_at_max": iv.value_at_hi} for d, _s, _a, p, iv in variants],
    }


def artifact_names(split: SplitResult, targets) -> dict[int, str]:
    """Stage index -> file: head.onnx / tail.onnx for a two-tier plan, stage<i>_<target>.onnx otherwise."""
    tiers = [s.tier for s in split.stages]
    simple = len(targets) == 2 and tiers in ([0], [0, 1])
    return {s.index: (("head" if s.tier == 0 else "tail") + ".onnx" if simple else f"stage{s.index}_{targets[s.tier].name}.onnx")
            for s in split.stages if s.model is not None}


def _save_parts(directory: Path, split: SplitResult, artifacts: dict[int, str]) -> None:
    for index, part in split.parts.items():
        path = directory / artifacts[index]
        proto = ir.to_proto(part)
        onnx.save_model(proto, str(path))
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as e:
            raise SplitcError(f"internal error: emitted {path.name} fails onnx.checker: {str(e).splitlines()[0]}") from None


def _write_atomically(out: Path, split: SplitResult, artifacts, targets, plan: dict, force: bool, tvm_targets=None,
                      extra: Callable[[Path], None] | None = None, variants=()) -> None:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _save_parts(tmp, split, artifacts)
        for directory, v_split, v_artifacts, v_plan, _interval in variants:
            (tmp / directory).mkdir(parents=True)
            _save_parts(tmp / directory, v_split, v_artifacts)
            if tvm_targets:
                from splitc.tvm_codegen import compile_parts

                v_plan["tvm_artifacts"] = compile_parts(tmp / directory, v_plan, tvm_targets)
            (tmp / directory / "plan.json").write_text(json.dumps(v_plan, indent=1) + "\n")
        if tvm_targets:  # TVM libraries from the parts just saved, into the same temp dir: still all or nothing
            from splitc.tvm_codegen import compile_parts

            plan["tvm_artifacts"] = compile_parts(tmp, plan, tvm_targets)
        (tmp / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        if extra is not None:
            extra(tmp)
        if out.exists():
            if not force:
                raise SplitcError(f"{out}: already exists; pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
