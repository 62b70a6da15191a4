#!/usr/bin/env python
"""How well does a measured device profile predict models it never saw? (this machine, onnxruntime CPU)

1. ``splitc profile`` on two training models (zoo ResNet-18 and zoo MobileNetV2 at 224x224) writes
   ``OUT/profile.toml`` (with the built-in calibration graphs, as by default) and ``OUT/profile-models-only.toml``
   (``--no-calibration``: the two models alone); a copy of the profile 10x faster (``OUT/server.toml``) stands in
   for a server tier.
2. For each held-out model: the whole-model prediction is the sum of its nodes' latencies on the profile.
   A split plan is compiled for ``profile.toml,server.toml`` with ``--boundary fp32`` (so head.onnx and tail.onnx
   hold exactly the model's nodes, no boundary ops): of a few custom link rates the one giving the most balanced
   cut is kept; when none cuts mid-graph (most activations of ResNets are larger than their input), the server's
   compute is capped at half the model's (``--max-cloud-time``) over a 10 Gbps link, which forces a cut. The
   head's and the tail's predicted compute on THIS machine are the sums of ``plan.json nodes[].latency_s[<profile>]``
   over the nodes each part runs.
3. The model, head.onnx and tail.onnx run in onnxruntime with the profile's settings (optimization level,
   threads), all sessions interleaved in shuffled rounds so that load on a shared machine falls on all of them
   alike; the tail gets the head's real outputs. Medians. A model file that lists its weights as graph inputs
   is measured as splitc deploys it (weights as constants), and as exported in an extra row. The two training
   models run among them too: their slowdown since they were profiled (others' load on a shared machine) is the
   load factor, and "at the profile's load" scales each prediction by it (a ratio measured in one run).
4. A markdown table with every error, the median and worst absolute error, in OUT/results.md and results.json.

    .venv/bin/python benchmarks/prediction_error.py --out /tmp/splitc-pe        # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitc.tools import zoo  # noqa: E402
from splitc.compiler import CompileOptions, annotate, compile_model, import_model  # noqa: E402
from splitc.cost.fit import profile_to_toml  # noqa: E402
from splitc.tools.profiler import Settings, feeds_for, make_session  # noqa: E402
from splitc.cost.targets import ClassFit, load_target  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SHARED = REPO.parent / "shared" / "models"


@dataclass
class Case:
    label: str
    family: str
    source: object  # a Path, or a zoo builder (called with no arguments)
    shapes: dict = field(default_factory=dict)
    primary: bool = True  # counts toward the four families

    def path(self, out: Path) -> Path | None:
        if callable(self.source):
            p = out / "models" / f"{self.label.replace(' ', '_').replace('@', '_')}.onnx"
            if not p.is_file():
                p.parent.mkdir(parents=True, exist_ok=True)
                onnx.save_model(self.source(), str(p))
            return p
        return self.source if Path(self.source).is_file() else None


TRAIN = [
    Case("zoo.resnet18@224", "train", lambda: zoo.resnet18(224)),
    Case("zoo.mobilenet_v2@224", "train", lambda: zoo.mobilenet_v2(224)),
]
HELD_OUT = [
    Case("light_resnet50", "ResNet", LIGHT / "light_resnet50.onnx"),
    Case("resnet50thin_opennsfw", "ResNet", SHARED / "resnet50thin_opennsfw.onnx", {"input:0": (1, 224, 224, 3)}),
    Case("mobilenet_v2 (trained)", "MobileNet", SHARED / "mobilenet_v2_trained_imagenet.onnx", {"input": (1, 3, 224, 224)}),
    Case("mobilenetv3s_ppocr_cls", "MobileNet", SHARED / "mobilenetv3s_ppocr_cls.onnx", {"x": (1, 3, 48, 192)}),
    Case("zoo.mobilenet_v2@160", "MobileNet", lambda: zoo.mobilenet_v2(160)),
    Case("yolox_nano", "detector", SHARED / "yolox_nano_coco.onnx", {"images": (1, 3, 416, 416)}),
    Case("ultraface_rfb320", "detector", SHARED / "ultraface_rfb320_ssd.onnx", {"input": (1, 3, 240, 320)}),
    Case("zoo.detector_heads@320", "detector", lambda: zoo.detector_heads(320)),
    Case("minilm_l3 (seq 128)", "transformer", SHARED / "minilm_l3_paraphrase.onnx", {"input_ids": (1, 128), "attention_mask": (1, 128)}),
    Case("zoo.transformer_block 128x256", "transformer", lambda: zoo.transformer_block(seq=128, dim=256), {"x": (1, 128, 256)}),
    Case("light_squeezenet", "other CNN", LIGHT / "light_squeezenet.onnx", primary=False),
    Case("light_shufflenet", "other CNN", LIGHT / "light_shufflenet.onnx", primary=False),
    Case("light_inception_v1", "other CNN", LIGHT / "light_inception_v1.onnx", primary=False),
    Case("light_densenet121", "other CNN", LIGHT / "light_densenet121.onnx", primary=False),
    Case("svtr_ppocrv4_rec", "conv+attention", SHARED / "svtr_ppocrv4_rec.onnx", {"x": (1, 3, 48, 320)}, primary=False),
]
LINK_RATES_MBPS = (30, 100, 300, 1000, 3000)
BALANCED = 0.2  # a cut is mid-graph when each part has at least this share of the predicted compute


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def scaled(profile, factor: float, name: str):
    """The same device ``factor`` times faster (a stand-in server tier)."""
    fits = tuple((c, ClassFit(f.overhead_s / factor, f.s_per_flop / factor, f.s_per_byte / factor,
                              None if f.s_per_flop_1x1 is None else f.s_per_flop_1x1 / factor, f.samples)) for c, f in profile.fits)
    return replace(profile, name=name, description=f"{profile.name} x{factor:g} (a stand-in server)",
                   flops_per_s=tuple((c, r * factor) for c, r in profile.flops_per_s),
                   memory_bytes_per_s=profile.memory_bytes_per_s * factor, op_overhead_s=profile.op_overhead_s / factor,
                   fits=fits, measured=None)


def predict_whole(path: Path, shapes: dict, profile) -> float:
    model = annotate(import_model(path, shapes), (profile,))
    from splitc.ir import metadata as ann

    return sum(ann.get(n, ann.LATENCY, ann.NodeLatency).on(profile.name) for n in model.graph)


def part_predictions(plan: dict, device: str, server: str) -> tuple[float, float, float]:
    """(whole, head, tail) predicted seconds on the device's profile, from plan.json alone."""
    nodes = plan["nodes"]
    whole = sum(n["latency_s"].get(device, 0.0) for n in nodes)
    head = sum(n["latency_s"].get(device, 0.0) for n in nodes if n["target"] == device)
    tail = sum(n["latency_s"].get(device, 0.0) for n in nodes if n["target"] == server)
    return whole, head, tail


def choose_split(case: Case, path: Path, targets: str, device: str, server: str, speedup: float, out: Path):
    """Compile over each candidate link; keep the most balanced mid-graph cut. When no link gives one (models
    whose every activation is larger than their input go all to one side), cap the server's compute at half
    the model's (--max-cloud-time) over the fastest link, which forces a cut. (how, plan, dir) or None."""

    def plan_for(link: str, cap: float | None):
        opts = CompileOptions(target=targets, link=link, input_shapes=case.shapes, boundary="fp32", max_cloud_s=cap)
        return opts, compile_model(path, None, opts).plan

    best = None
    whole = None
    for rate in LINK_RATES_MBPS:
        link = f"up={rate}Mbps,down={rate}Mbps,rtt=1ms"
        try:
            opts, plan = plan_for(link, None)
        except Exception as e:  # noqa: BLE001
            log(f"{case.label}: compile over {link} failed: {e}")
            continue
        whole, head, tail = part_predictions(plan, device, server)
        if best is None or min(head, tail) > best[0]:
            best = (min(head, tail), link, opts)
    if best is None:
        return None
    how = best[1].split(",")[0]
    if best[0] < BALANCED * whole:
        link = "up=10Gbps,down=10Gbps,rtt=0.1ms"
        for share in (0.5, 0.65, 0.8):  # the tail is a suffix of the graph: its last block may be more than half
            try:
                opts, plan = plan_for(link, whole / speedup * share)
            except Exception as e:  # noqa: BLE001
                log(f"{case.label}: compile with a capped server failed: {e}")
                return None
            _, head, tail = part_predictions(plan, device, server)
            if min(head, tail) > best[0]:
                best = (min(head, tail), link, opts)
                how = f"{link.split(',')[0]}, server capped at {share:.0%}"
                break
        else:
            return None
    d = out / "splits" / case.label.replace(" ", "_").replace("@", "_")
    result = compile_model(path, d, best[2], force=True)
    return how, result.plan, d


def deployable_copy(path: Path, out: Path) -> Path | None:
    """A copy without initializers among the graph inputs (IR >= 4), when the file has them; else None."""
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    if proto.ir_version < 4 or not any(v.name in inits for v in proto.graph.input):
        return None
    keep = [v for v in proto.graph.input if v.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    copy = out / "models" / f"{path.stem}.deployed.onnx"
    copy.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(copy))
    return copy


def tail_feeds(head_sess, tail_sess, feeds: dict) -> dict:
    available = dict(feeds)
    names = [o.name for o in head_sess.get_outputs()]
    available.update(zip(names, head_sess.run(names, {i.name: feeds[i.name] for i in head_sess.get_inputs()})))
    out = {}
    for i in tail_sess.get_inputs():
        if i.name not in available:
            raise RuntimeError(f"tail input {i.name} is neither a model input nor a head output")
        out[i.name] = available[i.name]
    return out


def measure(sessions: dict, rounds: int, per_round: int, warmup: int = 3, seed: int = 0) -> dict[str, list[float]]:
    """Interleaved: every round runs every session ``per_round`` times, in a shuffled order."""
    for sess, feeds in sessions.values():
        for _ in range(warmup):
            sess.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    rng = random.Random(seed)
    keys = list(sessions)
    for r in range(rounds):
        rng.shuffle(keys)
        for k in keys:
            sess, feeds = sessions[k]
            for _ in range(per_round):
                t = time.perf_counter()
                sess.run(None, feeds)
                times[k].append(time.perf_counter() - t)
        log(f"measured round {r + 1}/{rounds}")
    return times


def err(pred: float, meas: float) -> float:
    return pred / meas - 1.0


def pct(e: float | None) -> str:
    return "-" if e is None else f"{e * 100:+.1f}%"


def ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/splitc-prediction-error", help="working directory (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads, profile and measurement (default: 1)")
    ap.add_argument("--spinning", action="store_true", help="splitc profile --spinning, and the same in the measured sessions")
    ap.add_argument("--optimization", default="all", help="onnxruntime graph optimization level (default: all)")
    ap.add_argument("--profile-runs", type=int, default=30, help="splitc profile --runs (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved measurement rounds (default: %(default)s)")
    ap.add_argument("--per-round", type=int, default=7, help="runs of each session per round (default: %(default)s)")
    ap.add_argument("--speedup", type=float, default=10.0, help="the stand-in server is this much faster (default: %(default)s)")
    ap.add_argument("--models", help="only held-out models whose label contains one of these comma-separated words")
    ap.add_argument("--reuse-profile", action="store_true", help="keep OUT/profile.toml if it exists")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.optimization, args.threads, 3, args.profile_runs, args.spinning)
    name = "bench-" + (os.uname().nodename.split(".")[0] or "host")
    load_start = os.getloadavg()
    log(f"start; machine load {load_start}")

    # 1. the profile, by the command a user runs; and one from the two models alone (--no-calibration)
    prof_path = out / "profile.toml"
    only_path = out / "profile-models-only.toml"
    train = [(c, c.path(out)) for c in TRAIN]
    for path, extra in ((prof_path, []), (only_path, ["--no-calibration"])):
        if args.reuse_profile and path.is_file():
            continue
        cmd = [sys.executable, "-m", "splitc", "profile", *[str(p) for _, p in train], "--name", name, "-o", str(path),
               "--force", "--threads", str(args.threads), "--optimization", args.optimization, "--runs", str(args.profile_runs),
               *extra, *(["--spinning"] if args.spinning else [])]
        log("profiling: splitc " + " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=REPO)
    models_only = load_target(str(only_path))
    profile = load_target(str(prof_path))
    name = profile.name
    # planning copies: the same per-node latencies, a free boundary codec (this benchmark checks compute
    # predictions; a codec cost would only keep the optimizer from cutting mid-graph)
    fast_codec = {"encode_bytes_per_s": 1e13, "decode_bytes_per_s": 1e13}
    device_plan = replace(profile, measured=None, **fast_codec)
    server = replace(scaled(profile, args.speedup, f"{name}-x{args.speedup:g}"), **fast_codec)
    device_path, server_path = out / "plan-device.toml", out / "plan-server.toml"
    device_path.write_text(profile_to_toml(device_plan, f"{name} for planning: its codec made free"))
    server_path.write_text(profile_to_toml(server, f"{name} x{args.speedup:g}: a stand-in server tier for splitting"))
    analytical = replace(profile, fits=(), name=f"{name}-analytical")
    targets = f"{device_path},{server_path}"

    # 2. predictions and split plans
    cases = [c for c in HELD_OUT if not args.models or any(w.strip() in c.label for w in args.models.split(","))]
    rows, sessions = [], {}
    for case in cases:
        path = case.path(out)
        if path is None:
            log(f"{case.label}: {case.source} not present, skipped")
            continue
        log(f"{case.label}: predicting and splitting")
        extra_rows = []
        whole_pred = predict_whole(path, case.shapes, profile)
        whole_analytical = predict_whole(path, case.shapes, analytical)
        whole_models_only = predict_whole(path, case.shapes, models_only)
        split = choose_split(case, path, targets, name, server.name, args.speedup, out)
        row = {"label": case.label, "family": case.family, "primary": case.primary, "path": str(path),
               "whole_pred_s": whole_pred, "whole_analytical_s": whole_analytical, "whole_models_only_s": whole_models_only}
        feeds = feeds_for(path, case.shapes)
        deployed = deployable_copy(path, out)
        sessions[(case.label, "whole")] = (make_session(deployed or path, settings), feeds)
        if deployed is not None:
            # the file as exported lists its weights as graph inputs: onnxruntime may not fold or fuse them.
            # splitc's parts (and its profiler) list only real inputs; the primary row measures the model so.
            raw = dict(row, label=f"{case.label} (as exported: weights listed as inputs)", primary=False,
                       family=case.family)
            sessions[(raw["label"], "whole")] = (make_session(path, settings), feeds)
            extra_rows.append(raw)
        if split is not None:
            link, plan, d = split
            whole_plan, head_pred, tail_pred = part_predictions(plan, name, server.name)
            files = plan["artifacts"]
            head_file, tail_file = files.get(name), files.get(server.name)
            if isinstance(head_file, str) and isinstance(tail_file, str):
                head = make_session(d / head_file, settings)
                tail = make_session(d / tail_file, settings)
                sessions[(case.label, "head")] = (head, {i.name: feeds[i.name] for i in head.get_inputs()})
                sessions[(case.label, "tail")] = (tail, tail_feeds(head, tail, feeds))
                crossing = sum(b["raw_bytes"] for b in plan["boundary"] if b["from"] == name)
                row.update(link=link, head_pred_s=head_pred, tail_pred_s=tail_pred, whole_plan_s=whole_plan,
                           head_nodes=sum(1 for n in plan["nodes"] if n["target"] == name),
                           tail_nodes=sum(1 for n in plan["nodes"] if n["target"] == server.name), boundary_bytes=crossing)
            else:
                log(f"{case.label}: plan has artifacts {files}; parts not measured")
        else:
            log(f"{case.label}: no mid-graph cut on any candidate link; parts not measured")
        rows.append(row)
        rows.extend(extra_rows)

    # the training models again, interleaved with the rest: how much slower the machine runs now than while it
    # was profiled (others' load moves between the two phases)
    refs = {}
    for case, path in train:
        entry = ((profile.measured or {}).get("models") or {}).get(path.name)
        if entry:
            refs[case.label] = entry["wall_s"]
            sessions[(f"ref {case.label}", "whole")] = (make_session(path, settings), feeds_for(path, case.shapes))

    # 3. measurement
    load_before = os.getloadavg()
    log(f"measuring {len(sessions)} sessions; load {load_before}")
    times = measure({k: v for k, v in sessions.items()}, args.rounds, args.per_round)
    load_after = os.getloadavg()
    slower = {label: float(np.median(times[(f"ref {label}", "whole")])) / wall for label, wall in refs.items()}
    load_factor = statistics.median(slower.values()) if slower else 1.0
    for row in rows:
        for part in ("whole", "head", "tail"):
            t = times.get((row["label"], part))
            if t:
                q1, med, q3 = np.percentile(t, [25, 50, 75])
                row[f"{part}_meas_s"] = float(med)
                row[f"{part}_iqr"] = float((q3 - q1) / med)
                row[f"{part}_err"] = err(row[f"{part}_pred_s"], med)
        row["whole_analytical_err"] = err(row["whole_analytical_s"], row["whole_meas_s"])
        row["whole_err_at_load"] = err(row["whole_pred_s"] * load_factor, row["whole_meas_s"])
        row["whole_models_only_err"] = err(row["whole_models_only_s"], row["whole_meas_s"])
        if not row["primary"] and "weights listed as inputs" in row["label"]:
            for k in [k for k in row if k.startswith(("head_", "tail_"))] + ["link"]:
                row.pop(k, None)

    # 4. report
    lines = []
    lines.append(f"Device profile `{name}` from `splitc profile` on {', '.join(c.label for c, _ in train)}"
                 f" (onnxruntime, optimization {args.optimization}, {args.threads} thread(s)); held-out models below.")
    lines.append(f"Machine: {profile.measured.get('machine', '?') if profile.measured else '?'}; load average (1, 5, 15 min):"
                 f" start {fmt_load(load_start)}, before measuring {fmt_load(load_before)}, after {fmt_load(load_after)}.")
    lines.append("Measured: medians of " + f"{args.rounds * args.per_round} interleaved runs per session; parts are head.onnx /"
                 " tail.onnx of an fp32-boundary plan (no boundary ops inside), predicted on this machine's profile.")
    lines.append("Training models measured again among these sessions, against their runs while profiled: "
                 + ", ".join(f"{k} {v:.2f}x" for k, v in slower.items()) + f"; load factor {load_factor:.2f}"
                 " (the column 'at the profile's load' multiplies each prediction by it: a ratio measured in one run).")
    lines.append("")
    lines.append("| model | family | whole measured ms | predicted ms | error | at the profile's load | two models only | analytical only | cut: nodes head/tail, boundary (link) | head meas / pred ms | head error | tail meas / pred ms | tail error |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        cut = "-" if "link" not in r else f"{r['head_nodes']}/{r['tail_nodes']} nodes, {r['boundary_bytes'] / 1e3:.0f} KB ({r['link']})"
        lines.append(
            f"| {r['label']}{'' if r['primary'] else ' *'} | {r['family']} | {ms(r['whole_meas_s'])} ± {r['whole_iqr'] * 50:.0f}% | {ms(r['whole_pred_s'])}"
            f" | {pct(r['whole_err'])} | {pct(r['whole_err_at_load'])} | {pct(r['whole_models_only_err'])} | {pct(r['whole_analytical_err'])} | {cut}"
            f" | {ms(r.get('head_meas_s'))} / {ms(r.get('head_pred_s'))} | {pct(r.get('head_err'))}"
            f" | {ms(r.get('tail_meas_s'))} / {ms(r.get('tail_pred_s'))} | {pct(r.get('tail_err'))} |")
    lines.append("")
    lines.append("`*` beyond the issue's four families. `±`: half the interquartile range of the runs, relative."
                 " Two models only: the profile `splitc profile --no-calibration` fits to the two models alone."
                 " Analytical only: the profile's analytical fallback (one pooled fit, no per-class tables).")
    lines.append("")
    for title, subset in (("four families (ResNet, MobileNet, detector, transformer)", [r for r in rows if r["primary"]]),
                          ("all held-out models", rows)):
        whole = [abs(r["whole_err"]) for r in subset]
        at_load = [abs(r["whole_err_at_load"]) for r in subset]
        parts = [abs(r[k]) for r in subset for k in ("head_err", "tail_err") if k in r]
        ana = [abs(r["whole_analytical_err"]) for r in subset]
        only = [abs(r["whole_models_only_err"]) for r in subset]
        if not whole:
            continue
        lines.append(f"**{title}** ({len(subset)} models, {len(parts)} parts): whole model median |error|"
                     f" {statistics.median(whole) * 100:.1f}%, worst {max(whole) * 100:.1f}%"
                     f" (at the profile's load: median {statistics.median(at_load) * 100:.1f}%, worst {max(at_load) * 100:.1f}%);"
                     + (f" head/tail parts median {statistics.median(parts) * 100:.1f}%, worst {max(parts) * 100:.1f}%;" if parts else "")
                     + f" whole model from the two models alone (--no-calibration) median {statistics.median(only) * 100:.1f}%,"
                       f" worst {max(only) * 100:.1f}%; analytical only median {statistics.median(ana) * 100:.1f}%, worst {max(ana) * 100:.1f}%")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"profile": str(prof_path), "load": [load_start, load_before, load_after],
                                                  "load_factor": load_factor, "slower": slower,
                                                  "rows": rows}, indent=1, default=float) + "\n")
    log(f"wrote {out / 'results.md'} and results.json")
    return 0


def fmt_load(load) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    raise SystemExit(main())
