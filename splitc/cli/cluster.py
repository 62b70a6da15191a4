"""``splitc compile --cluster`` and ``splitc run`` on a cluster plan (issue 14): summary tables and the check of the
cluster run against the original model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from splitc.errors import EXIT_CHECK_FAILED, SplitcError
from splitc.ui import bar, fmt_bytes, fmt_s, print_table, progress

FP32_ATOL = 1e-5


def is_cluster_plan(folder: str | Path) -> bool:
    """Whether ``folder``/plan.json is a cluster plan (read only far enough to tell; the runtime validates it)."""
    path = Path(folder) / "plan.json"
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"kind": "cluster"' in head


def _stages(plan: dict) -> str:
    return " | ".join(f"{s['strategy']} x{len(s['slots'])} [{s['blocks'][0]}-{s['blocks'][1]})" if len(s["slots"]) > 1
                      else f"{s['slots'][0]} [{s['blocks'][0]}-{s['blocks'][1]})" for s in plan["stages"])


def plan_rows(section: dict) -> tuple[list[str], list[list[str]]]:
    """One row per precomputed plan: devices, stages, predicted latency and frames/s, the most memory on a device."""
    plans = sorted(section["plans"], key=lambda p: (len(p["devices"]), p["devices"]))
    key = "period_s" if section.get("objective") == "throughput" else "latency_s"
    scale = max(p["predicted"][key] for p in plans)
    rows = [[str(len(p["devices"])), _stages(p), fmt_s(p["predicted"]["latency_s"]),
             f"{p['predicted']['fps']:.1f}" if p["predicted"].get("fps") else "-",
             fmt_bytes(max(p["memory_bytes"].values(), default=0)), bar(p["predicted"][key], scale)] for p in plans]
    return ["devices", "stages (strategy x devices [blocks))", "latency", "fps", "max memory", ""], rows


# compile options of the 2-tier planner that a cluster plan does not read: its objective, deadline, network and
# boundary come from the cluster file, and it sends tensors (no camera-frame codec, no calibrated codecs)
TWO_TIER_ONLY = ("target", "link", "objective", "deadline", "max_energy", "max_device_memory", "max_cloud_time",
                 "allow_return", "sweep_bandwidth", "time_limit", "boundary", "bottleneck", "calibrate", "calibrate_norm",
                 "input_codec", "input_norm", "calibrate_samples", "accuracy_budget", "emit", "device_target", "cloud_target")


def reject_two_tier_options(args) -> None:
    """A one-line error naming the first option given with --cluster that the cluster planner would silently ignore."""
    from splitc.cli.main import build_parser

    defaults = vars(build_parser().parse_args(["compile", "model.onnx", "-o", "out"]))
    for dest in TWO_TIER_ONLY:
        if getattr(args, dest, None) != defaults[dest]:
            raise SplitcError(f"--{dest.replace('_', '-')} does not apply with --cluster {args.cluster}: the cluster file sets"
                              " the objective, deadline_ms, [network] and boundary (README: Clusters); drop the option")


def cmd_compile_cluster(args) -> int:
    from splitc.compiler import compile_cluster
    from splitc.frontend.load import parse_input_shapes

    reject_two_tier_options(args)
    with progress(not (args.quiet or args.json), ["import", "annotate", "partition", "split", "write"]) as step:
        result = compile_cluster(args.model, args.output, args.cluster, parse_input_shapes(args.input_shape),
                                 force=args.force, progress=step)
    section = result.plan["cluster"]
    best = section["plans"][0]
    singles = [p for p in section["plans"] if len(p["devices"]) == 1]
    key = "period_s" if section.get("objective") == "throughput" else "latency_s"
    one = min((p["predicted"][key] for p in singles), default=None)
    if args.json:
        print(json.dumps({"output": str(result.output_dir), "objective": section.get("objective"), "hub": section["hub"],
                          "best": best, "plans": len(section["plans"]), "compile_s": result.plan.get("compile_s")}, indent=1))
        return 0
    if args.quiet:
        return 0
    devices = ", ".join(f"{d['slot']} ({d['profile']})" for d in section["devices"])
    print(f"{result.plan['model']['file']}: {len(result.plans.chain.blocks)} blocks; cluster {Path(args.cluster).name}:"
          f" {devices}; hub {section['hub']}; objective {section.get('objective', 'latency')}")
    columns, rows = plan_rows(section)
    print_table("precomputed plans (one per set of devices; the runtime switches when a device leaves)", columns, rows, {0, 2, 3, 4})
    if one is not None and best["predicted"][key] > 0:
        what = "latency" if key == "latency_s" else "frame period"
        used = {slot for s in best["stages"] for slot in s["slots"]}
        if len(used) == 1:
            print(f"{what}: {fmt_s(best['predicted'][key])} on one device ({next(iter(used))}): spreading the model costs"
                  " more in transfers than it saves on this network")
        else:
            print(f"{what}: {fmt_s(best['predicted'][key])} on {len(used)} devices, {one / best['predicted'][key]:.2f}x"
                  f" better than the best single device ({fmt_s(one)})")
    parts = len({p["file"] for plan in section["plans"] for s in plan["stages"] for p in s["parts"]})
    print(f"wrote {result.output_dir}/ (plan.json, {parts} parts); run it with: splitc run {args.output}")
    return 0


def _workers(spec: list[str] | None) -> dict[str, str] | None:
    if not spec:
        return None
    workers = {}
    for item in ",".join(spec).split(","):
        slot, sep, addr = item.strip().partition("=")
        if not sep or not slot or ":" not in addr:
            raise SplitcError(f"--workers '{item}': give SLOT=HOST:PORT, e.g. --workers pi/0=10.0.0.2:7000,pi/1=10.0.0.3:7000")
        workers[slot] = addr
    return workers


def _cluster_samples(inputs: list[str], plan: dict, load_inputs) -> list[dict]:
    """--input for a cluster plan: tensors only (a cluster plan records no image normalization), as .npy, one .npz
    sample or an .npz batch (samples on axis 0, as for a 2-tier plan)."""
    from splitc.cli.run_data import _npz_batch
    from splitc.runtimes.image import IMAGE_EXT

    path = Path(inputs[0])
    if len(inputs) == 1 and (path.is_dir() or path.suffix.lower() in IMAGE_EXT):
        raise SplitcError(f"--input {inputs[0]}: a cluster plan takes tensors, not images (it records no image"
                          " normalization): pass [NAME=]FILE.npy or an .npz batch with samples on axis 0")
    if len(inputs) == 1 and path.suffix == ".npz" and path.is_file():
        batch = _npz_batch(path, plan)
        if batch is not None:
            return batch
    return [load_inputs(inputs, plan)]


def cmd_run_cluster(args, load_inputs, reference_of) -> int:
    """Run the cluster plan on local worker processes (or ``--workers``) and compare with the original model."""
    from splitc.cli.run_data import synthetic_count
    from splitc.runtimes.cluster import ClusterRunner
    from splitc.runtimes.cluster_section import load_section, read_plan
    from splitc.runtimes.ort import compare_outputs, session, synthetic_inputs

    plan = read_plan(args.dir)  # read once, within the plan's limits
    load_section(args.dir, plan)  # the cluster section checked before any worker starts
    specs = plan["model"]["inputs"]
    samples = _cluster_samples(args.input, plan, load_inputs) if args.input else []
    samples = samples or [synthetic_inputs(specs, seed) for seed in range(synthetic_count(args.samples, specs))]
    reference = reference_of(args, plan, session)
    workers = _workers(args.workers)
    t0 = time.perf_counter()
    with ClusterRunner(args.dir, workers=workers, spawn=workers is None, threads=args.threads or 1) as runner:
        start = time.perf_counter() - t0
        latencies = []
        for feeds in samples:  # one frame at a time: the latency of a frame
            t = time.perf_counter()
            runner.run(feeds)
            latencies.append(time.perf_counter() - t)
        t = time.perf_counter()
        outs = list(runner.stream(iter(samples), max_in_flight=max(1, args.inflight)))  # pipelined: frames/s
        fps = len(samples) / (time.perf_counter() - t)
        used = sorted({slot for s in runner.state.plan["stages"] for slot in s["slots"]})
        predicted = runner.state.plan["predicted"]
        lossy = any(p.get("codec", "fp32") != "fp32" for s in runner.state.plan["stages"] for p in s["parts"])
        wire = runner.engine.wire_bytes() if hasattr(runner.engine, "wire_bytes") else {}
    ok, worst, refs, gots = True, {}, [], []
    if reference is not None:  # per output, the worst frame
        names = [o.name for o in reference.get_outputs()]
        for feeds, got in zip(samples, outs):
            ref = dict(zip(names, reference.run(None, feeds)))
            refs.append([ref[n] for n in names])
            gots.append([got[n] for n in names])
            for c in compare_outputs(ref, got):
                passed = lossy or c.max_abs <= FP32_ATOL * max(1.0, c.max_ref)
                ok &= passed
                w = worst.setdefault(c.name, [0.0, 1.0, True])
                w[:] = [max(w[0], c.max_abs), min(w[1], c.cosine), w[2] and passed]
    judged = None
    if lossy and refs:  # an int8 boundary: judged like a lossy 2-tier plan, by its accuracy budget, on real data only
        from splitc.cli.run_data import verdict

        judged = verdict(plan, refs, gots, bool(args.input))
        ok = judged["pass"] is not False
    rows = [[name, f"{e:.2e}", f"{cos:.6f}", ("PASS" if p else "FAIL") if not lossy else "-"] for name, (e, cos, p) in worst.items()]
    report = {"dir": str(args.dir), "devices": used, "frames": len(samples), "start_s": start,
              "latency_s": float(np.median(latencies)), "fps": fps, "predicted": predicted,
              "pass": (judged["pass"] if judged else ok) if rows else None, "boundary": "int8" if lossy else "fp32",
              "wire_bytes": {d: {"sent": a, "received": b} for d, (a, b) in wire.items()}}
    if judged:
        report["accuracy"] = {k: v for k, v in judged.items() if k != "pass"}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.dir}: {len(samples)} frames on {len(used)} devices ({', '.join(used)}), workers started in {fmt_s(start)}")
        print(f"latency per frame: median {fmt_s(report['latency_s'])} (predicted {fmt_s(predicted['latency_s'])});"
              f" stream: {fps:.1f} frames/s" + (f" (predicted {predicted['fps']:.1f})" if predicted.get("fps") else ""))
        if rows:
            print_table(f"outputs vs the original model, worst of {len(samples)} frames", ["output", "max |error|", "cosine", ""], rows, {1, 2})
        if judged:
            got = ", ".join(f"{k} {judged[k]:.6f}" for k in ("top1", "cosine") if judged.get(k) is not None)
            need = ", ".join(f"{k} >= {v:g}" for k, v in judged["budget"].items())
            print(f"int8 boundary: {got} over {judged['samples']} frames; budget {need}: " + (
                {True: "PASS", False: "FAIL"}[judged["pass"]] if judged["pass"] is not None
                else "no verdict on synthetic inputs (pass --input)"))
    return 0 if ok else EXIT_CHECK_FAILED
