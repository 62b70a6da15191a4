"""compile_model: the design, in order. Import, annotate, (calibrate), partition, split, plan, (sweep), write.

The passes of each stage are listed in :mod:`splitc.pipeline`; this module checks the options once, runs the
stages and hands the results to codegen. It is also the Python API (``splitc.compile_model``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx_ir as ir

import splitc
from splitc import pipeline
from splitc.codegen.check import check_plan
from splitc.cost.calibration_data import prepare as prepare_data
from splitc.runtimes.accuracy import DEFAULT_BUDGET
from splitc.codegen import emit, output
from splitc.codegen.passes.split import SplitResult
from splitc.codegen.plan import SCHEMA, build_plan, io_spec
from splitc.cost.bottleneck import boundary_spec
from splitc.cost.quantizers import parse_budget, parse_codec
from splitc.cost.targets import DeviceProfile, Link, check_tier_names, load_target, parse_links
from splitc.errors import SplitcError, SplitcWarning
from splitc.frontend.load import load_proto, sha256_file, to_ir
from splitc.ir import metadata as ann
from splitc.ir.graph import graph_inputs
from splitc.partition.costgraph import CostGraph
from splitc.partition.passes.partition import PartitionResult
from splitc.partition.problem import OBJECTIVES, Goal, Solution, fixed

BOUNDARIES = ("int8", "fp32")
Policy = Callable[[CostGraph], Solution]


@dataclass(frozen=True)
class CompileOptions:
    target: str = "rpi4,cloud"  # a chain of tiers, device first
    link: str = "4g"  # one link for every adjacent pair, or one per pair: "wifi,4g"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    boundary: str = "int8"
    bottleneck: str | None = None  # learned[:C]: a trained C-channel bottleneck, i.e. --boundary learned<C>+<static codec>
    objective: str = "latency"  # latency | energy | throughput
    deadline_s: float | None = None
    max_energy_j: float | None = None
    max_device_memory: int | None = None  # bytes
    max_cloud_s: float | None = None
    allow_return: bool = False
    time_limit_s: float | None = None
    sweep_bps: tuple[float, float] | None = None  # uplink range for the bandwidth sweep
    emit: str = "onnx"  # "onnx,tvm": also a TVM library per part (splitc/codegen/tvm.py)
    device_target: str = "auto"  # TVM target of the device's parts: auto (by its profile), host, a name or JSON
    cloud_target: str = "llvm"  # TVM target of the server's parts: llvm (x86), cuda, host, a name or JSON
    calibrate: str | None = None  # images directory or .npz of inputs, for calibrated boundaries (splitc/cost/calibrate.py)
    accuracy_budget: str | None = None  # e.g. "top1=0.99" or "cosine=0.999": what --boundary auto must meet per tensor
    calibrate_norm: str = "imagenet"  # how images become inputs: imagenet | unit | raw | raw-bgr
    calibrate_samples: int = 48  # images: crops/flips drawn; the first 65% fit ranges, the rest measure size and error
    input_codec: str | None = None  # image inputs on the wire: jpeg[:Q] (default jpeg:90), png, webp[:Q], raw (the tensor)
    input_norm: str | None = None  # how image inputs are made from 8-bit pixels (splitc.runtimes.image.parse_norm);
    #                                 None: calibrate_norm

    @property
    def goal(self) -> Goal:
        return Goal(self.objective, self.deadline_s, self.max_energy_j, self.max_device_memory, self.max_cloud_s)


@dataclass(frozen=True)
class Resolved:
    """The options, checked and turned into objects, before any work is done."""

    targets: tuple[DeviceProfile, ...]
    links: tuple[Link, ...]
    codec: object  # splitc.cost.quantizers.CodecSpec
    budget: dict
    tvm_targets: dict | None


def resolve_targets(spec: str) -> tuple[DeviceProfile, ...]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) < 2:
        raise SplitcError(f"--target '{spec}': give a chain of two or more tiers, device first, e.g. --target rpi4,cloud")
    if len(set(names)) != len(names):
        raise SplitcError(f"--target '{spec}': each tier must be named once")
    profiles = tuple(load_target(n) for n in names)
    check_tier_names(profiles)
    return profiles


def resolve(options: CompileOptions) -> Resolved:
    from splitc.codegen import tvm as tvm_codegen  # imports TVM only when --emit asks for it

    codec, budget = parse_codec(boundary_spec(options.boundary, options.bottleneck)), parse_budget(options.accuracy_budget)
    if options.objective not in OBJECTIVES:
        raise SplitcError(f"--objective '{options.objective}': choose one of {', '.join(OBJECTIVES)}")
    targets = resolve_targets(options.target)
    links = parse_links(options.link, len(targets) - 1)
    return Resolved(targets, links, codec, budget, tvm_codegen.check(options, targets))


def import_model(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ir.Model:
    """Load and run the IMPORT stage: fixed input shapes, sorted, named, shapes inferred, shape arithmetic folded."""
    path = Path(path)
    model = pipeline.run_passes(pipeline.IMPORT(path.name, input_shapes or {}), to_ir(load_proto(path), path.name))
    model.meta[ann.SOURCE] = path.name
    return model


def annotate(model: ir.Model, targets: tuple[DeviceProfile, ...], model_name: str | None = None) -> ir.Model:
    """The ANNOTATE stage: bytes per tensor, FLOPs per node, latency per node on each target."""
    return pipeline.run_passes(pipeline.ANNOTATE(model_name or model.meta.get(ann.SOURCE, "model"), targets), model)


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
    policy: Policy | None = None,
    progress: Callable[[str], None] | None = None,
    extra_files: Callable[[Path, CompileResult], None] | None = None,
) -> CompileResult:
    """Compile ``model_path`` for ``options.target`` and write the artifacts to ``output_dir``.

    ``output_dir`` is written whole or not at all; ``None`` plans without writing. ``policy`` replaces the exact
    optimizer (any ``CostGraph -> Solution``). ``extra_files(dir, result)`` writes more files (the report) into the
    output before it appears, so they are part of the same all-or-nothing write.
    """
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    cfg = resolve(options)
    options = replace(options, boundary=cfg.codec.name, bottleneck=None)  # --bottleneck: the learned<C>+ codec it names
    model_path = Path(model_path)
    out = Path(output_dir) if output_dir is not None else None
    keep = (model_path,) + ((Path(options.calibrate),) if options.calibrate else ())  # inputs --force must not delete
    if out is not None:  # refuse before the work: an existing directory only with force, only one splitc wrote
        output.check_replaceable(out, force, keep)

    step("import")
    model = import_model(model_path, options.input_shapes)
    step("annotate")
    annotate(model, cfg.targets)
    if options.input_norm:  # one normalization for the input codec, the calibration images and the runtime
        options = replace(options, calibrate_norm=options.input_norm)
    input_codec = options.input_codec or ("raw" if options.boundary == "fp32" else None)  # fp32: lossless end to end
    check = prepare_data(model, cfg.targets, options.calibrate, options.calibrate_norm, input_codec,
                         options.calibrate_samples, options.boundary, budget=cfg.budget or DEFAULT_BUDGET,
                         reference=model_path)  # input codecs (by their accuracy on held-out images), wire sizes, the check set
    cal = calibrate(model, cfg, options, step) if cfg.codec.calibrated else None
    if cal is not None:
        if options.sweep_bps is not None:  # every swept plan may send any tensor: check them all up front
            cal.verify(cal.names)
        model.graph.meta[ann.CODECS] = cal.codecs
    step("partition")
    partition = run_partition(model, cfg, options, cfg.links, policy)
    while cal is not None and cal.verify(sent_tensors(partition)):  # lazy accuracy checks: re-solve until verified
        step("partition")
        partition = run_partition(model, cfg, options, cfg.links, policy)
    if cal is not None:
        cal.warn_missed(sent_tensors(partition))
    step("split")
    split = run_codegen(model, options)
    sha = sha256_file(model_path)
    artifacts = emit.artifact_names(split, cfg.targets)
    plan = build_plan(model, model_path, sha, cfg.targets, cfg.links, options, partition, split, artifacts)
    variants = []
    if options.sweep_bps is not None:
        step("sweep")
        variants = sweep_variants(model, model_path, sha, cfg, options, partition)
        plan["sweep"] = sweep_table(cfg.links[0], options, variants)
    if cfg.codec.calibrated:
        plan["calibration"] = {"data": options.calibrate, "norm": options.calibrate_norm, "budget": cfg.budget,
                               "codecs": len(model.graph.meta.get(ann.CODECS, {})),
                               "rule": "per tensor: the smallest measured codec meeting the budget with that tensor alone quantized"
                                       " (checked for every tensor the plan or a baseline sends)"}
    plan["accuracy"] = check_plan(plan, split, artifacts, model_path, cfg.budget or DEFAULT_BUDGET, check)
    plan["compile_s"] = round(time.perf_counter() - t0, 4)
    result = CompileResult(model, plan, out, partition, split)
    if out is not None:
        step("write")
        emit.write_atomically(out, split, artifacts, cfg.targets, plan, force, cfg.tvm_targets,
                              extra=None if extra_files is None else (lambda tmp: extra_files(tmp, result)), variants=variants,
                              keep=keep)
    return result


def run_partition(model: ir.Model, cfg: Resolved, options: CompileOptions, links: tuple[Link, ...],
                  policy: Policy | None) -> PartitionResult:
    pipeline.run_passes(pipeline.PARTITION(cfg.targets, links, options.boundary, options.goal, allow_return=options.allow_return,
                                           time_limit_s=options.time_limit_s, policy=policy), model)
    return model.graph.meta[ann.PARTITION]


def run_codegen(model: ir.Model, options: CompileOptions) -> SplitResult:
    pipeline.run_passes(pipeline.CODEGEN(options.boundary), model)
    return model.graph.meta[ann.PARTS]


def sent_tensors(partition: PartitionResult) -> list[str]:
    """Tensors that cross a link in the chosen plan or in any baseline reported beside it."""
    cg = partition.cost_graph
    out = []
    for sol in [partition.solution, *partition.baselines.values()]:
        p = sol.placement
        out += [t.name for t in cg.tensors if any(p[c] != (0 if t.producer is None else p[t.producer]) for c in t.consumers)]
    return out


def calibrate(model: ir.Model, cfg: Resolved, options: CompileOptions, progress: Callable[[str], None] | None = None):
    """Fit every crossing candidate's codecs on the calibration data and measure their payloads (splitc.cost.calibrate.Calibration)."""
    from splitc.cost.calibrate import Calibration, load_samples
    from splitc.runtimes.ort import synthetic_inputs

    inputs = [io_spec(v) for v in graph_inputs(model.graph)]
    if options.calibrate:
        samples = load_samples(options.calibrate, inputs, options.calibrate_norm, options.calibrate_samples)
    else:
        warnings.warn(f"--boundary {cfg.codec.name} without --calibrate: clip ranges fitted on synthetic normal inputs;"
                      " pass --calibrate DIR|file.npz for real ones", SplitcWarning, stacklevel=3)
        samples = [synthetic_inputs(inputs, seed) for seed in range(12)]
    return Calibration(model, cfg.codec, samples, cfg.budget or ({"cosine": 0.999} if cfg.codec.kind == "auto" else {}),
                       progress=progress)


def sweep_variants(model, model_path, sha, cfg: Resolved, options: CompileOptions, partition: PartitionResult) -> list:
    """One (directory, split, artifacts, plan, interval) per distinct plan of the bandwidth sweep.

    Each variant re-partitions a copy of the annotated graph with the sweep's fixed placement, so the main plan's
    results on ``model`` are never overwritten."""
    from splitc.partition.sweep import sweep_bandwidth

    lo, hi = options.sweep_bps
    intervals = sweep_bandwidth(partition.cost_graph, options.goal, lo, hi, options.time_limit_s)
    variants = []
    for i, interval in enumerate(intervals):
        mid = 2.0 / (1.0 / interval.lo_bps + 1.0 / interval.hi_bps)
        at = (cfg.links[0].scaled(mid),) + tuple(cfg.links[1:])
        variant = model.clone()
        v_partition = run_partition(variant, cfg, options, at, fixed(interval.solution.placement, "sweep"))
        v_split = run_codegen(variant, options)
        v_artifacts = emit.artifact_names(v_split, cfg.targets)
        v_plan = build_plan(variant, model_path, sha, cfg.targets, at, options, v_partition, v_split, v_artifacts)
        variants.append((f"plans/{i}", v_split, v_artifacts, v_plan, interval))
    return variants


def sweep_table(link: Link, options: CompileOptions, variants) -> dict:
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


@dataclass
class ClusterResult:
    model: ir.Model
    plan: dict
    output_dir: Path | None
    plans: object  # splitc.partition.passes.cluster.ClusterPlans


def compile_cluster(model_path: str | Path, output_dir: str | Path | None, cluster: str | Path,
                    input_shapes: dict[str, tuple[int, ...]] | None = None, *, force: bool = False,
                    progress: Callable[[str], None] | None = None) -> ClusterResult:
    """Compile ``model_path`` for the devices of ``cluster`` (a cluster.toml): import, annotate on every profile of
    the cluster, plan exactly for every sub-multiset of its devices, write each plan's parts and plan.json
    (its "cluster" section) to ``output_dir`` whole or not at all (``None``: plan only)."""
    from splitc.codegen.passes.cluster_split import cluster_section
    from splitc.cost.cluster import load_cluster
    from splitc.partition.passes.cluster import plan_cluster

    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    spec = load_cluster(cluster)
    model_path = Path(model_path)
    out = Path(output_dir) if output_dir is not None else None
    keep = (model_path, Path(cluster))
    if out is not None:  # refuse before the work
        out = output.check_replaceable(out, force, keep)
    step("import")
    model = import_model(model_path, input_shapes)
    step("annotate")
    annotate(model, spec.profiles)
    step("partition")
    plans = plan_cluster(model, spec)
    plan = {"schema": SCHEMA, "splitc_version": splitc.__version__, "kind": "cluster",
            "model": {"path": str(model_path.resolve()), "file": model_path.name, "sha256": sha256_file(model_path),
                      "inputs": [io_spec(v) for v in graph_inputs(model.graph)],
                      "outputs": [io_spec(v) for v in model.graph.outputs]},
            "cluster_file": Path(cluster).name}
    result = ClusterResult(model, plan, out, plans)
    step("split")
    if out is None:
        return result
    with output.staged(out, force, keep) as tmp:
        plan["cluster"] = cluster_section(model, plans, tmp)
        plan["compile_s"] = round(time.perf_counter() - t0, 4)
        step("write")
        (tmp / "plan.json").write_text(emit.plan_text(plan))
    return result
