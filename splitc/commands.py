"""The CLI's commands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.ui import bar, fmt_bytes, fmt_flops, fmt_s, print_table, progress

EXIT_CHECK_FAILED = 3
FP32_ATOL = 1e-5


def _plan_rows(plan: dict) -> list[list[str]]:
    names = {"device_only": "device only", "cloud_only": "cloud only", "best_single_cut": "best single cut (Neurosurgeon)",
             "dads": "min-cut (DADS)"}
    entries = [("chosen plan", plan["predicted"])] + [(names.get(k, k), v) for k, v in plan["baselines"].items()]
    scale = max(e[1]["total_s"] for e in entries)
    device, server = plan["targets"][0]["name"], plan["targets"][1]["name"]
    return [
        [name, fmt_s(s["total_s"]), fmt_s(s["compute_s"][device]), fmt_s(s["compute_s"][server]),
         fmt_s(s["transfer_s"] + s["rtt_s"]), bar(s["total_s"], scale)]
        for name, s in entries
    ]


def cmd_compile(args) -> int:
    from splitc.compiler import CompileOptions, compile_model
    from splitc.frontend import parse_input_shapes

    options = CompileOptions(target=args.target, link=args.link, input_shapes=parse_input_shapes(args.input_shape),
                             boundary=args.boundary)
    with progress(not (args.quiet or args.json), ["import", "annotate", "partition", "split", "write"]) as step:
        result = compile_model(args.model, args.output, options, force=args.force, progress=step)
    plan = result.plan
    if args.json:
        keys = ("predicted", "baselines", "cut", "boundary", "artifacts", "solver", "compile_s")
        print(json.dumps({"output": str(result.output_dir), **{k: plan[k] for k in keys}}, indent=1))
        return 0
    if args.quiet:
        return 0
    device, server = plan["targets"][0]["name"], plan["targets"][1]["name"]
    link = plan["links"][0]
    print(f"{plan['model']['file']}: {len(plan['nodes'])} nodes, {device} -> {server} over {link['name']}"
          f" (up {link['up_bps'] / 1e6:g} Mbps, down {link['down_bps'] / 1e6:g} Mbps, RTT {fmt_s(link['rtt_s'])})")
    print_table("predicted latency per frame", ["plan", "total", device, server, "transfer+RTT", ""], _plan_rows(plan), {1, 2, 3, 4})
    if plan["boundary"]:
        rows = [[b["tensor"], f"{b['from']} -> {b['to']}", fmt_bytes(b["raw_bytes"]), fmt_bytes(b["encoded_bytes"]), b["codec"],
                 fmt_s(b["encode_s"] + b["transfer_s"] + b["decode_s"])] for b in plan["boundary"]]
        print_table("tensors crossing the link", ["tensor", "direction", "raw", "encoded", "codec", "time"], rows, {2, 3, 5})
    else:
        print(f"no tensor crosses the link: the whole model runs on {device}")
    best = plan["predicted"]["total_s"]
    speedup = {k: v["total_s"] / best for k, v in plan["baselines"].items()}
    print(f"speed-up: {speedup['device_only']:.2f}x vs {device}-only, {speedup['cloud_only']:.2f}x vs {server}-only,"
          f" {speedup['best_single_cut']:.2f}x vs best single cut; solved {plan['solver']['status']} by"
          f" {plan['solver']['method']} in {fmt_s(plan['solver']['solve_s'])}, compiled in {fmt_s(plan['compile_s'])}")
    files = ", ".join(list(plan["artifacts"].values()) + ["plan.json"])
    print(f"wrote {result.output_dir}/ ({files}); check it with: splitc run {args.output}")
    return 0


def _load_inputs(specs: list[str], plan: dict) -> dict[str, np.ndarray]:
    inputs = plan["model"]["inputs"]
    feeds = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=")
        if not sep:
            if len(inputs) != 1:
                raise SplitcError(f"--input {spec}: the model has {len(inputs)} inputs; name each: --input NAME=FILE.npy")
            name = inputs[0]["name"]
        want = next((i for i in inputs if i["name"] == name), None)
        if want is None:
            raise SplitcError(f"--input {spec}: the model has no input '{name}'; its inputs: {', '.join(i['name'] for i in inputs)}")
        try:
            arr = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SplitcError(f"--input {spec}: cannot read {file} as .npy ({e})") from None
        if list(arr.shape) != list(want["shape"]):
            raise SplitcError(f"--input {spec}: shape {list(arr.shape)}, but the plan was compiled for {want['shape']}")
        from splitc.runtimes.ort import _NP

        feeds[name] = arr.astype(_NP.get(want["dtype"], want["dtype"]))
    missing = [i["name"] for i in inputs if i["name"] not in feeds]
    if missing:
        raise SplitcError(f"--input: no value for input(s) {', '.join(missing)}")
    return feeds


def cmd_run(args) -> int:
    from splitc.runtimes.ort import SplitModel, compare_outputs, session, synthetic_inputs

    model = SplitModel(args.dir, optimization=args.optimization)
    plan = model.plan
    samples = [_load_inputs(args.input, plan)] if args.input else [synthetic_inputs(model.inputs, seed) for seed in range(max(1, args.samples))]
    original = Path(args.model or plan["model"]["path"])
    reference = None
    if original.is_file():
        from splitc.runtimes.files import sha256_file

        if args.model is None and sha256_file(original) != plan["model"]["sha256"]:
            raise SplitcError(f"{original} changed since it was compiled (sha256 differs); recompile, or pass --model")
        reference = session(original, args.optimization)
    runs, checks = [], []
    for feeds in samples:
        res = model.run(feeds)
        runs.append(res)
        if reference is not None:
            ref = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, feeds)))
            checks.append(compare_outputs(ref, res.outputs))
    report = {"dir": str(args.dir), "samples": len(samples), "bytes_up": int(np.median([r.bytes_up for r in runs])),
              "raw_up": runs[0].raw_up, "bytes_down": int(np.median([r.bytes_down for r in runs])), "outputs": []}
    lossless = plan.get("boundary_codec") == "fp32"
    ok = True
    if checks:
        for j, name in enumerate(c.name for c in checks[0]):
            per = [c[j] for c in checks]
            max_abs = max(c.max_abs for c in per)
            max_ref = max(c.max_ref for c in per)
            cosine = min(c.cosine for c in per)
            top1 = [c.top1_agree for c in per if c.top1_agree is not None]
            passed = max_abs <= FP32_ATOL * max(1.0, max_ref) if lossless else cosine >= 0.99
            ok &= passed
            report["outputs"].append({"name": name, "max_abs_error": max_abs, "max_abs_reference": max_ref, "cosine": cosine,
                                      "top1_agreement": float(np.mean(top1)) if top1 else None, "pass": passed})
    report["pass"] = ok if checks else None
    if args.json:
        print(json.dumps(report, indent=1))
        return 0 if ok else EXIT_CHECK_FAILED
    up, raw = report["bytes_up"], report["raw_up"]
    parts = " -> ".join(f"{file} on {target}" for target, file in plan["artifacts"].items())
    print(f"ran {parts} on {len(samples)} sample(s): sent {fmt_bytes(up)} up"
          + (f" ({raw / up:.1f}x smaller than the raw {fmt_bytes(raw)})" if up else "") + f", {fmt_bytes(report['bytes_down'])} down")
    if not checks:
        print(f"original model {original} not found: outputs not compared (pass --model)")
        return 0
    rule = f"max abs error <= {FP32_ATOL:g} x max(1, |reference|)" if lossless else "cosine >= 0.99"
    rows = [[o["name"], f"{o['max_abs_error']:.3g}", f"{o['cosine']:.6f}",
             "-" if o["top1_agreement"] is None else f"{o['top1_agreement'] * 100:.1f}%", "PASS" if o["pass"] else "FAIL"]
            for o in report["outputs"]]
    print_table(f"split vs original ({rule})", ["output", "max abs err", "cosine", "top-1 agree", "check"], rows, {1, 2, 3})
    print("check passed" if ok else "check FAILED")
    return 0 if ok else EXIT_CHECK_FAILED


def cmd_inspect(args) -> int:
    from splitc import annotations as ann
    from splitc.compiler import annotate, import_model, resolve_targets
    from splitc.frontend import parse_input_shapes

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


def cmd_targets(args) -> int:
    from splitc.targets import builtin_links, builtin_target_names, load_target

    rows = []
    for name in builtin_target_names():
        t = load_target(name)
        rows.append([t.name, t.description, f"{t.rate('conv') / 1e9:g}", f"{t.rate('depthwise') / 1e9:g}",
                     f"{t.memory_bytes_per_s / 1e9:g}", fmt_s(t.op_overhead_s)])
    print_table("device profiles (splitc/profiles/*.toml; sources inside)",
                ["name", "description", "conv GFLOP/s", "dw GFLOP/s", "mem GB/s", "per op"], rows, {2, 3, 4, 5})
    links = [[l.name, f"{l.up_bps / 1e6:g}", f"{l.down_bps / 1e6:g}", fmt_s(l.rtt_s), l.source] for l in builtin_links().values()]
    print_table("links (custom: --link up=10Mbps,down=50Mbps,rtt=40ms)", ["name", "up Mbps", "down Mbps", "RTT", "source"], links, {1, 2, 3})
    return 0
