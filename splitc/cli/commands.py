"""The CLI's commands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from splitc.errors import EXIT_CHECK_FAILED, SplitcError
from splitc.ui import bar, fmt_bytes, fmt_flops, fmt_s, print_table, progress

FP32_ATOL = 1e-5
TVM_ATOL = 1e-4  # --runtime tvm, fp32 boundaries: the split model vs the original


def _plan_rows(plan: dict) -> tuple[list[str], list[list[str]]]:
    names = {"device_only": "device only", "cloud_only": "cloud only", "best_single_cut": "best single cut (Neurosurgeon)",
             "dads": "min-cut (DADS)"}
    entries = [("chosen plan", plan["predicted"])] + [(names.get(k, k), v) for k, v in plan["baselines"].items()]
    objective = plan.get("objective", "latency")
    key = {"latency": "total_s", "energy": "energy_j", "throughput": "period_s"}[objective]
    scale = max(e[1][key] for e in entries)
    tiers = [t["name"] for t in plan["targets"]]
    columns = ["plan", "latency"] + tiers + ["transfer+RTT"]
    if objective == "energy" or "energy_j" in plan.get("limits", {}) or plan.get("limits", {}).get("max_energy_j"):
        columns.append("device energy")
    if objective == "throughput":
        columns.append("fps")
    columns.append("")
    rows = []
    for name, s in entries:
        row = [name, fmt_s(s["total_s"])] + [fmt_s(s["compute_s"][t]) for t in tiers] + [fmt_s(s["transfer_s"] + s["rtt_s"])]
        if "device energy" in columns:
            row.append(f"{s['energy_j'] * 1e3:.1f} mJ")
        if objective == "throughput":
            row.append(f"{s['fps']:.1f}" if s.get("fps") else "-")
        if s.get("meets_limits") is False:
            name += " (over a limit)"
            row[0] = name
        rows.append(row + [bar(s[key], scale)])
    return columns, rows


def cmd_compile(args) -> int:
    from splitc.compiler import CompileOptions, compile_model

    if args.cluster:  # several devices: splitc/cli/cluster.py
        from splitc.cli.cluster import cmd_compile_cluster

        return cmd_compile_cluster(args)
    from splitc.frontend.load import parse_input_shapes
    from splitc.cost.targets import parse_quantity, parse_range, parse_seconds

    options = CompileOptions(target=args.target, link=args.link, input_shapes=parse_input_shapes(args.input_shape),
                             boundary=args.boundary, bottleneck=args.bottleneck, objective=args.objective,
                             deadline_s=parse_quantity(args.deadline, "time", "--deadline"),
                             max_energy_j=parse_quantity(args.max_energy, "energy", "--max-energy"),
                             max_device_memory=parse_quantity(args.max_device_memory, "bytes", "--max-device-memory"),
                             max_cloud_s=parse_quantity(args.max_cloud_time, "time", "--max-cloud-time"),
                             allow_return=args.allow_return, time_limit_s=parse_seconds(args.time_limit, "--time-limit"),
                             sweep_bps=parse_range(args.sweep_bandwidth))
    options = dataclasses.replace(options, emit=args.emit, device_target=args.device_target, cloud_target=args.cloud_target)
    options = dataclasses.replace(options, calibrate=args.calibrate, accuracy_budget=args.accuracy_budget,
                                  calibrate_norm=args.calibrate_norm, calibrate_samples=args.calibrate_samples,
                                  input_codec=args.input_codec, input_norm=args.input_norm)
    report = None
    if args.report:  # written into the output directory before it appears: part of the all-or-nothing write
        from splitc.codegen.report import write_report

        report = lambda directory, result: write_report(directory, result.plan, result.partition)  # noqa: E731
    with progress(not (args.quiet or args.json), ["import", "annotate", "partition", "split", "write"]) as step:
        result = compile_model(args.model, args.output, options, force=args.force, progress=step, extra_files=report)
    plan = result.plan
    if args.json:
        keys = ("predicted", "baselines", "cut", "boundary", "input_codec", "artifacts", "solver", "compile_s")
        print(json.dumps({"output": str(result.output_dir), **{k: plan[k] for k in keys + ("tvm_artifacts",) if k in plan}}, indent=1))
        return 0
    if args.quiet:
        return 0
    tiers = [t["name"] for t in plan["targets"]]
    device = tiers[0]
    chain = "".join(f"{a} -[{l['name']}]-> " for a, l in zip(tiers, plan["links"])) + tiers[-1]
    limits = ", ".join(f"{k}={v:g}" for k, v in plan.get("limits", {}).items())
    print(f"{plan['model']['file']}: {len(plan['nodes'])} nodes; {chain}; objective {plan.get('objective', 'latency')}"
          + (f"; limits {limits}" if limits else "") + (" ; return flows allowed" if plan.get("allow_return") else ""))
    columns, rows = _plan_rows(plan)
    print_table("predicted latency per frame" if plan.get("objective", "latency") == "latency" else f"predicted per frame (objective: {plan['objective']})", columns, rows, set(range(1, len(columns) - 1)))
    if plan["boundary"]:
        rows = [[b["tensor"], f"{b['from']} -> {b['to']}", fmt_bytes(b["raw_bytes"]), fmt_bytes(b["encoded_bytes"]), b["codec"],
                 fmt_s(b["encode_s"] + b["transfer_s"] + b["decode_s"])] for b in plan["boundary"]]
        print_table("tensors crossing the link", ["tensor", "direction", "raw", "encoded", "codec", "time"], rows, {2, 3, 5})
    else:
        print(f"no tensor crosses the link: the whole model runs on {device}")
    for rec in plan.get("input_codec") or []:  # the input codec's own accuracy: where the plan sends it, or a finer one chosen
        why = (rec.get("accuracy") or {}).get("why")
        if why and (rec["accuracy"].get("chosen") == "finer" or any(b["tensor"] == rec["tensor"] for b in plan["boundary"])):
            print(f"input codec {rec['name']} for '{rec['tensor']}': {why}")
    best = plan["predicted"]["total_s"]
    speedup = {k: v["total_s"] / best for k, v in plan["baselines"].items()}
    gap = f" (gap {plan['solver']['gap'] * 100:.2f}%)" if plan["solver"].get("status") != "optimal" else ""
    print(f"latency speed-up: {speedup['device_only']:.2f}x vs {device}-only, {speedup['cloud_only']:.2f}x vs {tiers[-1]}-only,"
          f" {speedup['best_single_cut']:.2f}x vs best single cut; solved {plan['solver']['status']}{gap} by"
          f" {plan['solver']['method']} in {fmt_s(plan['solver']['solve_s'])}, compiled in {fmt_s(plan['compile_s'])}")
    if "sweep" in plan:
        rows = [[f"{iv['min_up_bps'] / 1e6:.3g}-{iv['max_up_bps'] / 1e6:.3g} Mbps", iv["plan"], ", ".join(iv["cut"]) or f"(all on {device})"]
                for iv in plan["sweep"]["intervals"]]
        print_table(f"bandwidth sweep: the optimal plan per uplink interval ({plan['sweep']['objective']})", ["uplink", "plan", "cut"], rows)
    files = ", ".join(list(plan["artifacts"].values()) + ["plan.json"] + (["report.html"] if args.report else []))
    print(f"wrote {result.output_dir}/ ({files}); check it with: splitc run {args.output}")
    if "tvm_artifacts" in plan:
        from splitc.runtimes.tvm import records

        libs = ", ".join(f"{r['library']} ({r['arch']} {r['target'].get('mcpu', r['target']['kind'])})" for r in records(plan))
        print(f"TVM libraries: {libs}; run them with: splitc run {args.output} --runtime tvm")
    return 0


def _read_arrays(spec: str, file: str):
    """The array of a .npy file, or the named arrays of a .npz archive; a one-line error for anything else."""
    import zipfile
    import zlib

    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except unreadable as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "pickle" in why:  # np.load's guess for any file that is not .npy/.npz: a text file is not "pickled data"
            why = "neither format"
        raise SplitcError(f"--input {spec}: cannot read {file} as .npy or .npz ({why}); give an image, an image folder,"
                          " an .npz batch or [NAME=]FILE.npy") from None


def _load_inputs(specs: list[str], plan: dict) -> dict[str, np.ndarray]:
    """--input [NAME=]FILE.npy (NAME may be left out for a one-input model) or [NAME=]FILE.npz: an archive's arrays
    are matched to the inputs by name (one array for NAME=, or for a one-input model, may have any name)."""
    from splitc.runtimes.ort import numpy_dtype

    inputs = {i["name"]: i for i in plan["model"]["inputs"]}
    only = next(iter(inputs)) if len(inputs) == 1 else None
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=")
        if sep and name not in inputs:
            raise SplitcError(f"--input {spec}: the model has no input '{name}'; its inputs: {', '.join(inputs)}")
        loaded = _read_arrays(spec, file)
        if isinstance(loaded, dict):  # .npz
            if sep:
                if name not in loaded and len(loaded) != 1:
                    raise SplitcError(f"--input {spec}: {file} holds {', '.join(loaded) or 'no arrays'}, none named '{name}'")
                got = {name: loaded.get(name, next(iter(loaded.values()), None))}
            elif only is not None and len(loaded) == 1:
                got = {only: next(iter(loaded.values()))}
            else:
                unknown = [k for k in loaded if k not in inputs]
                if unknown or not loaded:
                    raise SplitcError(f"--input {spec}: {file} holds {', '.join(loaded) or 'no arrays'}; the arrays must be"
                                      f" named after the model's inputs: {', '.join(inputs)}")
                got = loaded
        else:
            if not sep and only is None:
                raise SplitcError(f"--input {spec}: the model has {len(inputs)} inputs; name each: --input NAME=FILE.npy,"
                                  " or pass one .npz of named arrays")
            got = {name if sep else only: loaded}
        for key, arr in got.items():
            want = inputs[key]
            dtype = numpy_dtype(want["dtype"])
            if key in feeds:
                raise SplitcError(f"--input {spec}: input '{key}' is given twice")
            if arr.dtype.kind not in "biuf":
                raise SplitcError(f"--input {spec}: '{key}' holds {arr.dtype} values, not numbers; the input takes {dtype}")
            if not np.can_cast(arr.dtype, dtype, "same_kind"):
                raise SplitcError(f"--input {spec}: '{key}' holds {arr.dtype} values, which {dtype} (the input's type) cannot hold; convert them first")
            if list(arr.shape) != list(want["shape"]):
                raise SplitcError(f"--input {spec}: '{key}' has shape {list(arr.shape)}, but the plan was compiled for {want['shape']}")
            feeds[key] = arr.astype(dtype)
    missing = [n for n in inputs if n not in feeds]
    if missing:
        raise SplitcError(f"--input: no value for input(s) {', '.join(missing)}")
    return feeds


def _reference(args, plan: dict, session):
    """An onnxruntime session of the original model to compare with, or None under --no-compare; a one-line
    error when it is missing, changed, or does not take and give what the plan does."""
    if args.no_compare:
        return None
    recorded = plan["model"].get("path")
    original = Path(args.model or recorded or "")
    if not (args.model or recorded) or not original.is_file():
        where = f"original model {original} not found" if args.model or recorded else "plan.json records no original model"
        raise SplitcError(f"{where}: the split model's outputs cannot be compared with it;"
                          " pass --model FILE, or --no-compare to run the parts without the check")
    if args.model is None:
        from splitc.runtimes.files import sha256_file

        if sha256_file(original) != plan["model"]["sha256"]:
            raise SplitcError(f"{original} changed since it was compiled (sha256 differs); recompile, or pass --model")
    reference = session(original, args.optimization)
    _same_interface(reference, plan, original)
    return reference


def _same_interface(reference, plan: dict, original: Path) -> None:
    """The original's inputs and outputs must be the plan's: names, element types and fixed dimensions."""
    from splitc.runtimes.ort import numpy_dtype

    def dtype(name: str):
        try:
            return numpy_dtype(name[len("tensor("):-1] if name.startswith("tensor(") else name)
        except TypeError:
            return name

    def show(specs) -> str:
        return ", ".join(f"{n} {t}{list(s)}" for n, t, s in specs)

    for kind, got, want in (("inputs", reference.get_inputs(), plan["model"]["inputs"]),
                            ("outputs", reference.get_outputs(), plan["model"]["outputs"])):
        mine = sorted((a.name, dtype(a.type), [d if isinstance(d, int) else "?" for d in a.shape or []]) for a in got)
        theirs = sorted((w["name"], dtype(w.get("dtype", "?")), list(w.get("shape", []))) for w in want)
        same = [m[0] for m in mine] == [t[0] for t in theirs] and all(
            m[1] == t[1] and (kind == "outputs" or (len(m[2]) == len(t[2]) and all(a in ("?", b) for a, b in zip(m[2], t[2]))))
            for m, t in zip(mine, theirs))
        if not same:
            raise SplitcError(f"--model {original}: its {kind} ({show(mine)}) are not the plan's ({show(theirs)});"
                              " pass the model this plan was compiled from")


def cmd_run(args) -> int:
    """``splitc run``; with ``-q`` (and no --json) only its last line, the verdict, is printed."""
    if not getattr(args, "quiet", False) or args.json:
        return _run(args)
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = _run(args)
    lines = text.getvalue().rstrip("\n").splitlines()
    if lines:
        print(lines[-1])
    return code


def _run(args) -> int:
    from splitc.runtimes.ort import SplitModel, compare_outputs, session, synthetic_inputs
    from splitc.cli.cluster import cmd_run_cluster, is_cluster_plan

    if is_cluster_plan(args.dir):  # a plan for several devices (splitc compile --cluster)
        return cmd_run_cluster(args, _load_inputs, _reference)
    model = SplitModel(args.dir, optimization=args.optimization, runtime=args.runtime)
    versus = SplitModel(args.dir, optimization=args.optimization) if args.runtime == "tvm" else None  # TVM vs onnxruntime
    plan = model.plan
    from splitc.cli.run_data import lossless as is_lossless, run_samples, synthetic_count, verdict

    samples, frames = run_samples(args.input, model, _load_inputs)  # image folders, .npz batches, .npy (cli/run_data.py)
    real = bool(samples)
    samples = samples or [synthetic_inputs(model.inputs, seed) for seed in range(synthetic_count(args.samples, model.inputs))]
    if args.stream:  # successive frames: with synthetic inputs, a sliding "video" (each frame shifted one step)
        model.stream()
        if not args.input:
            base = samples[0]
            samples = [{k: np.roll(v, t, axis=-1) if np.issubdtype(v.dtype, np.floating) else v for k, v in base.items()}
                       for t in range(max(2, args.samples))]
    reference = _reference(args, plan, session)  # None under --no-compare; a one-line error when it cannot compare
    if args.remote:  # the server stages behind an OIP server (splitc serve); splitc/cli/serving.py
        from splitc.cli.serving import cmd_run_remote

        return cmd_run_remote(args, samples, reference, frames if not args.stream else [])
    runs, checks, vs_ort, pairs = [], [], [], []
    for k, feeds in enumerate(samples):
        res = model.run_image(frames[k]) if frames and not args.stream else model.run(feeds)
        runs.append(res)
        if versus is not None:  # every library on the inputs its ONNX part got in onnxruntime
            from splitc.runtimes.tvm import compare_parts

            vs_ort += compare_parts(model, versus, feeds)
        if reference is not None:
            ref = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, feeds)))
            checks.append(compare_outputs(ref, res.outputs))
            pairs.append((list(ref.values()), [res.outputs[n] for n in ref]))
    report = {"dir": str(args.dir), "samples": len(samples), "bytes_up": int(np.median([r.bytes_up for r in runs])),
              "raw_up": runs[0].raw_up, "bytes_down": int(np.median([r.bytes_down for r in runs])), "outputs": []}
    lossless = is_lossless(plan)
    ok = True
    if checks:
        for j, name in enumerate(c.name for c in checks[0]):
            per = [c[j] for c in checks]
            max_abs = max(c.max_abs for c in per)
            max_ref = max(c.max_ref for c in per)
            cosine = min(c.cosine for c in per)
            top1 = [c.top1_agree for c in per if c.top1_agree is not None]
            passed = max_abs <= (TVM_ATOL if versus else FP32_ATOL) * max(1.0, max_ref) if lossless else None
            ok &= passed is not False
            report["outputs"].append({"name": name, "max_abs_error": max_abs, "max_abs_reference": max_ref, "cosine": cosine,
                                      "top1_agreement": float(np.mean(top1)) if top1 else None, "pass": passed})
    if checks and not lossless:  # a lossy plan: its own budget metric, on real data only
        report["accuracy"] = verdict(plan, [r for r, _ in pairs], [g for _, g in pairs], real)
        report["accuracy"]["held_out_at_compile"] = (plan.get("accuracy") or {}).get("check")
        if report["accuracy"]["pass"] is False:
            from splitc.cli.run_data import unmeasured_input_codec

            report["accuracy"]["input_codec_unmeasured"] = unmeasured_input_codec(plan)
        ok &= report["accuracy"]["pass"] is not False
    if vs_ort:
        report["runtime"] = "tvm"
        parts_ = {}
        for c in vs_ort:
            row = parts_.setdefault((c.stage, c.name), {"stage": c.stage, "library": c.library, "output": c.name, "max_abs_error": 0.0,
                                                       "steps_off": 0, "elements": 0, "pass": True})
            row["max_abs_error"] = max(row["max_abs_error"], c.max_abs)
            row["steps_off"] += c.flips
            row["elements"] += c.size
            row["pass"] &= c.passed
        report["vs_onnxruntime"] = list(parts_.values())
        ok &= all(o["pass"] for o in report["vs_onnxruntime"])
    # a verdict only where something was judged: a lossless check, the budget on real data, or TVM vs onnxruntime
    judged = bool(vs_ort) or any(o["pass"] is not None for o in report["outputs"]) or (report.get("accuracy") or {}).get("pass") is not None
    report["pass"] = ok if judged else None
    if args.json:
        print(json.dumps(report, indent=1))
        return 0 if ok else EXIT_CHECK_FAILED
    up, raw = report["bytes_up"], report["raw_up"]
    parts = " -> ".join(f"{file} on {target}" for target, file in plan["artifacts"].items())
    if versus is not None:
        parts = " -> ".join(f"{r['library']} on {target} (TVM)" for target, entry in plan["tvm_artifacts"].items()
                            for r in (entry if isinstance(entry, list) else [entry]))
    print(f"ran {parts} on {len(samples)} sample(s): sent {fmt_bytes(up)} up"
          + (f" ({raw / up:.1f}x smaller than the raw {fmt_bytes(raw)})" if up else "") + f", {fmt_bytes(report['bytes_down'])} down")
    if report.get("vs_onnxruntime"):
        from splitc.runtimes.tvm import ATOL

        rows = [[o["library"], o["output"], f"{o['max_abs_error']:.3g}",
                 f"{o['steps_off']} of {o['elements']}" if o["output"].endswith(("__q", "__zero_point")) else "-",
                 "PASS" if o["pass"] else "FAIL"] for o in report["vs_onnxruntime"]]
        print_table(f"TVM libraries vs onnxruntime parts on the same inputs (<= {ATOL:g} x max(1, |ort|); int8 wire dequantized)",
                    ["library", "output", "max abs err", "one step off", "check"], rows, {2, 3})
    if not checks:
        print("outputs not compared with the original model (--no-compare)")
        return 0 if ok else EXIT_CHECK_FAILED
    rule = f"max abs error <= {TVM_ATOL if versus else FP32_ATOL:g} x max(1, |reference|)" if lossless else "per output"
    rows = [[o["name"], f"{o['max_abs_error']:.3g}", f"{o['cosine']:.6f}",
             "-" if o["top1_agreement"] is None else f"{o['top1_agreement'] * 100:.1f}%",
             "-" if o["pass"] is None else "PASS" if o["pass"] else "FAIL"] for o in report["outputs"]]
    print_table(f"split vs original ({rule}; over {len(samples)} sample(s))", ["output", "max abs err", "worst cosine", "top-1 agree", "check"], rows, {1, 2, 3})
    if "accuracy" in report:
        a = report["accuracy"]
        need = ", ".join(f"{k} >= {v:g}" for k, v in a["budget"].items())
        prob = f", within 0.01 in probability {a['prob'] * 100:.1f}%" if "prob" in a["budget"] and "prob" in a else ""
        print(f"plan budget ({need}) on {a['samples']} sample(s): top-1 agreement {a['top1'] * 100:.1f}%{prob}, mean cosine"
              f" {a['cosine']:.5f}, max abs error {a['max_abs_error']:.3g}: " + ("PASS" if a["pass"] else "FAIL" if a["pass"] is False
              else "not judged: synthetic inputs say nothing of accuracy; pass --input images/ or a .npz batch"))
        if a.get("input_codec_unmeasured"):  # why it may miss: the input codec's own accuracy was never measured
            print(a["input_codec_unmeasured"])
    held = (plan.get("accuracy") or {}).get("check")
    if held:  # what the compiler measured on data no fit saw (splitc/codegen/check.py)
        prob = f", within 0.01 in probability {held['prob'] * 100:.1f}%" if "prob" in held else ""
        print(f"at compile time, on {held['data']}: top-1 agreement {held['top1'] * 100:.1f}%{prob}, mean cosine {held['cosine']:.5f}"
              f" ({'meets' if plan['accuracy'].get('meets_budget') else 'misses'} the budget)")
    print("check FAILED" if not ok else "check passed" if judged else
          "no verdict: the parts ran on synthetic inputs; pass --input images/ or an .npz batch to check accuracy")
    return 0 if ok else EXIT_CHECK_FAILED


def cmd_serve(args) -> int:
    from splitc.cli.serving import cmd_serve as serve

    return serve(args)


def cmd_inspect(args) -> int:
    from splitc.ir import metadata as ann
    from splitc.compiler import annotate, import_model, resolve_targets
    from splitc.frontend.load import parse_input_shapes

    targets = resolve_targets(args.target)
    model = annotate(import_model(args.model, parse_input_shapes(args.input_shape)), targets)
    rows = []
    for node in model.graph:
        cost = ann.get(node, ann.COST, ann.NodeCost)
        lat = ann.get(node, ann.LATENCY, ann.NodeLatency)
        out_bytes = sum(o.meta[ann.TENSOR].bytes for o in node.outputs if ann.TENSOR in o.meta)
        rows.append({"name": node.name, "op_type": node.op_type, "flops": cost.flops, "output_bytes": out_bytes,
                     "op_class": cost.op_class, "rule": cost.rule, "latency_s": dict(lat.seconds)})
    totals = {t.name: sum(r["latency_s"][t.name] for r in rows) for t in targets}
    key = {"latency": lambda r: -r["latency_s"][targets[0].name], "bytes": lambda r: -r["output_bytes"],
           "flops": lambda r: -r["flops"]}.get(args.sort)
    shown = sorted(rows, key=key) if key else rows
    if args.top:
        shown = shown[: args.top]
    if args.json:
        print(json.dumps({"nodes": shown, "total_latency_s": totals, "total_flops": sum(r["flops"] for r in rows)}, indent=1))
        return 0
    table = [[str(i), r["name"], r["op_type"], fmt_flops(r["flops"]), fmt_bytes(r["output_bytes"])]
             + [fmt_s(r["latency_s"][t.name]) for t in targets]
             + [r["op_class"] + (" (fused)" if r["rule"].startswith("fused_into:") else " (no rule)" if r["rule"] == "default" else "")]
             for i, r in enumerate(shown)]
    names = [t.name for t in targets]
    print_table(f"{Path(args.model).name}: {len(rows)} nodes, {fmt_flops(sum(r['flops'] for r in rows))}FLOP",
                ["#", "node", "op", "FLOPs", "output"] + names + ["class"], table, {0, 3, 4, 5, 6})
    print("whole model: " + ", ".join(f"{n} {fmt_s(totals[n])}" for n in names))
    return 0


def _fit_rows(t) -> list[list[str]]:
    rows = []
    for cls, f in t.fits:
        rate = "-" if f.s_per_flop <= 0 else f"{1e-9 / f.s_per_flop:.3g}"
        if f.s_per_flop_1x1 is not None:
            rate += " / " + ("-" if f.s_per_flop_1x1 <= 0 else f"{1e-9 / f.s_per_flop_1x1:.3g}") + " (1x1)"
        bw = "-" if f.s_per_byte <= 0 else f"{1e-9 / f.s_per_byte:.3g}"
        rows.append([cls, str(f.samples), fmt_s(f.overhead_s), rate, bw])
    return rows


def cmd_targets(args) -> int:
    from splitc.cost.targets import builtin_links, builtin_target_names, load_target

    profiles = [load_target(name) for name in builtin_target_names()]
    profiles += [load_target(path if path.endswith(".toml") or "/" in path else f"./{path}") for path in getattr(args, "profiles", [])]
    rows = []
    for t in profiles:
        kind = f"fitted: {len(t.fits)} class{'es' if len(t.fits) > 1 else ''}" if t.fits else "analytical"
        rows.append([t.name, t.description, kind, f"{t.rate('conv') / 1e9:.4g}", f"{t.rate('depthwise') / 1e9:.4g}",
                     f"{t.memory_bytes_per_s / 1e9:.4g}", fmt_s(t.op_overhead_s)])
    print_table("device profiles (built-in: splitc/profiles/*.toml; sources inside)",
                ["name", "description", "model", "conv GFLOP/s", "dw GFLOP/s", "mem GB/s", "per op"], rows, {3, 4, 5, 6})
    for t in profiles:
        if not t.fits:
            continue
        m = t.measured or {}
        how = ", ".join(f"{k} {m[k]}" for k in ("onnxruntime", "optimization", "threads") if k in m)
        print_table(f"{t.name}: fitted per-kernel models ({m.get('machine', 'machine not recorded')}; {how or 'settings not recorded'})",
                    ["class", "samples", "overhead", "GFLOP/s", "GB/s"], _fit_rows(t), {1, 2, 3, 4})
        for source in t.sources:
            print(f"  source: {source}")
        others = [c for c, _ in t.flops_per_s if t.fit(c) is None]
        if others:
            print(f"  analytical fallback for: {', '.join(others)}")
    links = [[l.name, f"{l.up_bps / 1e6:g}", f"{l.down_bps / 1e6:g}", fmt_s(l.rtt_s), l.source] for l in builtin_links().values()]
    print_table("links (custom: --link up=10Mbps,down=50Mbps,rtt=40ms)", ["name", "up Mbps", "down Mbps", "RTT", "source"], links, {1, 2, 3})
    return 0


def cmd_bench(args) -> int:
    from splitc.codegen import output
    from splitc.tools import bench

    shared = Path(args.shared) if args.shared else bench.default_shared_dir()
    if args.shared and not (shared / "MANIFEST.md").is_file():
        raise SplitcError(f"--shared {args.shared}: no MANIFEST.md there (it gives each model's input shapes)")
    links = [l.strip() for l in args.links.split(",") if l.strip()]
    cases = bench.suite(args.quick, shared, (args.models or "").split(","), links)
    if not cases:
        raise SplitcError(f"--models '{args.models}': no model of the suite matches; try 'splitc bench --quick' or a pattern like 'resnet*'")
    baseline_path = args.check
    update_path = (args.update or args.check or bench.DEFAULT_BASELINE) if args.update is not None else None
    baseline = bench.load_baseline(baseline_path) if baseline_path else None  # a bad path fails before the run
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise SplitcError(f"-o {args.output}: exists and is not a directory; give a directory for bench.md and bench.json")
    with _bench_progress(len(cases), not args.json) as on_case:
        report = bench.run_suite(cases, on_case)
    text = bench.markdown(report, links)
    if args.output:
        out = Path(args.output)
        output.write_text(out / "bench.md", text)  # each file whole, through a private temp file
        bench.write_json(out / "bench.json", report)
    print(json.dumps(report, indent=1) if args.json else text, end="\n" if args.json else "")
    code = 0
    if baseline is not None:
        result = bench.check(report, baseline, scope=[c.key for c in cases])
        for line in result.lines():
            print(f"splitc bench: {line}", file=sys.stderr)
        code = 0 if result.ok else EXIT_CHECK_FAILED
    if update_path is not None:
        failed = [r["key"] for r in report["cases"] if r["status"] == "failed"]
        if failed:
            raise SplitcError(f"not updating {update_path}: {len(failed)} case(s) failed: {', '.join(failed)}")
        previous = None
        if Path(update_path).is_file():
            previous = bench.load_baseline(update_path)
        bench.write_json(update_path, bench.updated_baseline(report, previous, [c.key for c in cases]))
        print(f"splitc bench: wrote {update_path} ({len(report['cases'])} case(s) from this run)", file=sys.stderr)
        code = 0
    return code


@contextlib.contextmanager
def _bench_progress(total: int, enabled: bool):
    """A progress bar over the cases on stderr (when it is a terminal); yields ``on_case(i, case, result)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=console, transient=True, disable=not (enabled and console.is_terminal)) as bar_:
        task = bar_.add_task("", total=total)

        def on_case(i, case, result):
            bar_.update(task, description=case.key) if result is None else bar_.update(task, completed=i + 1)

        yield on_case


def cmd_profile(args) -> int:
    import tomllib

    import onnx

    from splitc.codegen import output
    from splitc.frontend.load import parse_input_shapes
    from splitc.tools.profiler import Settings, assign_input_shapes, profile_device
    from splitc.cost.targets import parse_profile

    settings = Settings(args.optimization, args.threads, args.warmup, args.runs, args.spinning)
    out = Path(args.output)
    if out.suffix != ".toml":
        raise SplitcError(f"-o {args.output}: a profile is a .toml file, e.g. -o {out.with_suffix('.toml').name}")
    if out.is_dir() and not out.is_symlink():
        raise SplitcError(f"-o {args.output}: is a directory; a profile is a .toml file (--force replaces only a file)")
    if out.exists() and not args.force:
        raise SplitcError(f"{out}: already exists; choose another -o file or pass --force to replace it")
    if not out.parent.resolve().is_dir():
        raise SplitcError(f"-o {args.output}: directory {out.parent} does not exist")
    shapes = parse_input_shapes(args.input_shape)
    inputs = {}
    for path in args.models:
        if not Path(path).is_file():
            raise SplitcError(f"{path}: no such file")
        try:
            inputs[path] = {i.name for i in onnx.load(path, load_external_data=False).graph.input}
        except Exception:  # noqa: BLE001  (import_model names the problem)
            inputs[path] = set()
    per_model = assign_input_shapes(shapes, inputs)
    models = [(path, per_model[path]) for path in args.models]
    show = not (args.quiet or args.json)
    with _run_progress(show, len(models) * (settings.warmup + settings.runs)) as tick:  # + calibration, shown apart
        run = profile_device(models, args.name or out.stem, settings, description=args.description, calibration=args.calibration,
                             progress=tick)
    parse_profile(tomllib.loads(run.toml), str(out))  # what we write must load
    output.write_text(out, run.toml)  # a private temp file beside it, then os.replace: whole or not at all
    per_model = [{"model": p.model, "kernels": p.kernels, "groups": len(p.groups), "measured_s": p.wall_s,
                  "predicted_s": pred, "error": pred / p.wall_s - 1} for p, pred in zip(run.models, run.predicted_s)]
    if args.json:
        fits = {c: dataclasses.asdict(f) for c, f in run.profile.fits}
        print(json.dumps({"output": str(out), "name": run.profile.name, "models": per_model, "fits": fits,
                          "profiler_bias_s": run.bias_s, "notes": run.fit.notes}, indent=1))
        return 0
    if args.quiet:
        return 0
    rows = [[Path(m["model"]).name, str(m["kernels"]), str(m["groups"]), fmt_s(m["measured_s"]), fmt_s(m["predicted_s"]),
             f"{m['error'] * 100:+.1f}%"] for m in per_model]
    print_table(f"measured on this machine (onnxruntime, optimization {settings.optimization}, threads {settings.threads or 'default'})",
                ["model", "kernels", "groups", "measured", "fitted", "error"], rows, {1, 2, 3, 4, 5})
    print_table(f"{run.profile.name}: fitted per-kernel models", ["class", "samples", "overhead", "GFLOP/s", "GB/s"],
                _fit_rows(run.profile), {1, 2, 3, 4})
    for note in run.fit.notes:
        print(f"note: {note}")
    others = [c for c, _ in run.profile.flops_per_s if run.profile.fit(c) is None]
    if others:
        print(f"no data for {', '.join(others)}: they use the analytical fallback (pooled fit)")
    print(f"codec: encode {run.profile.encode_bytes_per_s / 1e6:.0f} MB/s, decode {run.profile.decode_bytes_per_s / 1e6:.0f} MB/s"
          f" (int8 quantize + zstd); cluster link codec: encode {run.profile.cluster_encode_bytes_per_s / 1e6:.0f} MB/s,"
          f" decode {run.profile.cluster_decode_bytes_per_s / 1e6:.0f} MB/s; profiler bias {run.bias_s * 1e6:+.2f} us per kernel corrected")
    print(f"wrote {out}; use it: splitc compile MODEL.onnx --target {out},cloud -o out/")
    return 0


@contextlib.contextmanager
def _run_progress(enabled: bool, total: int):
    """Yields ``tick(what, done, total_of_what)``: one bar over every measured run, on stderr."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        enabled = False
    if not enabled:
        yield lambda *_a: None
        return
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar_:
        task = bar_.add_task("starting", total=total)
        state = {"label": None, "base": 0, "last": 0}

        def tick(what: str, done: int, of: int) -> None:
            if what == "calibration":
                bar_.update(task, description=f"calibration graphs {done}/{of}" if of else "calibrating profiler, codec")
                return
            if what != state["label"]:
                state["base"] += state["last"]
                state["label"], state["last"] = what, 0
            state["last"] = done
            bar_.update(task, description=what[:28], completed=state["base"] + done)

        yield tick
