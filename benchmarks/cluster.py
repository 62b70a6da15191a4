"""Issue 14's benchmarks on the emulated cluster (splitc/tools/clusteremu.py): every device a network namespace on a
bridge with its port shaped by tc tbf, the delay from a proxy, its CPU a cgroup quota of ``--share`` of one core; a
cluster_worker per device (``python -m splitc.runtimes.cluster_worker --listen ...`` inside it); the hub is this
process (ClusterRunner), in the root namespace behind the LAN's uplink.

    sudo .venv/bin/python benchmarks/cluster.py [--share 0.12] [--hub-share 0.2] [--cfs] [--frames 6] [--only vgg,slow,...]
        [--out out/bench_cluster/results.json]

The CPU of a device is real-time (SCHED_RR in a cgroup with cpu.rt_runtime_us = share x period): it gets its share
whatever else the shared 2-core machine runs, and no more; the kernel admits 0.95 of a CPU of RT time in all, hence
small shares (--cfs: CFS quotas instead, a ceiling that the machine's load undercuts). The hub (this process, its
unused worker and the delay proxies) runs real-time too, in a group of --hub-share. Devices are planned with a
profile measured by ``splitc profile`` under the same share (clustercalib.profile_under_quota, cached under
out/bench_cluster/profiles). Sections:
  emulation  a CPU loop at 4 x --share vs --share; 2 MB over a 10 Mbit port vs 1.6 s
  vgg        VGG-16 (width 0.5, 224 px), 4 workers + a hub at 200 Mbit/s: latency vs one device
  lowrate    the same at 500 kbit/s with the hub a worker: the planner keeps one device
  slow       one of 4 workers at a quarter of the others' CPU: the planner told (speed-proportional) vs not (even)
  chair      Musical Chair: fc_wide (conv stem + fc of 10k outputs), throughput objective, 4 workers with 32 MB each:
             the plan's strategy per stage, frames/s of it vs all data-parallel and vs one device
  yolo       YOLOv2's first 16 layers (width 0.5, 320 px) on 1..6 workers: speed-up, predicted memory per device, RSS;
             --boundary int8 (or both): [network] boundary = "int8", with the bytes on the wire per frame and the cosine
  leave      a worker of the vgg cluster killed mid-stream: frames lost, seconds to the new plan
Each figure is a median over --frames frames after 2 warm-up frames; predicted vs measured latency (and frames/s) for
every plan run; the machine's load average beside them (2 cores shared with other work: a quota is a ceiling).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from splitc.codegen.passes.cluster_split import cluster_section
from splitc.compiler import compile_cluster
from splitc.partition.cluster_cost import evaluate
from splitc.runtimes.cluster import ClusterRunner
from splitc.runtimes.ort import session
from splitc.tools import zoo
from splitc.tools.clustercalib import (
    cpu_loop,
    profile_under_quota,
    start_sink,
    transfer_seconds,
)
from splitc.tools.clusteremu import EmulatedCluster

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench_cluster"
MODELS = {"vgg16": lambda: zoo.vgg16(size=224, width=0.5), "yolo16": lambda: zoo.yolo16(size=320, width=0.5),
          "fc_wide": lambda: zoo.fc_wide()}
WARMUP = 2
CPU_SCALE = [1.0]  # devices' share / the share the profile was measured at (--profile-share): cluster.toml cpu_share


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def models() -> dict[str, Path]:
    folder = OUT / "models"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in MODELS.items():
        paths[name] = folder / f"{name}.onnx"
        if not paths[name].exists():
            onnx.save_model(build(), str(paths[name]))
    return paths


def toml(groups: list[dict], rate: str, objective: str = "latency", rtt_ms: float = 1.0, boundary: str = "fp32") -> str:
    lines = [f'objective = "{objective}"', "[network]", 'kind = "lan"', f'rate = "{rate}"', f"rtt_ms = {rtt_ms}",
             f'boundary = "{boundary}"']
    for g in groups:
        if CPU_SCALE[0] != 1.0 and g.get("worker", True):  # a hub that only codes has a profile of its own share (yolo)
            g = {**g, "cpu_share": round(g.get("cpu_share", 1.0) * CPU_SCALE[0], 6)}
        lines.append("[[device]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in g.items()]
    return "\n".join(lines) + "\n"


def compiled(name: str, model: Path, text: str):
    path = OUT / f"{name}.toml"
    path.write_text(text)
    result = compile_cluster(model, OUT / name, path, force=True)
    return OUT / name, result


def best(out: Path) -> dict:
    section = json.loads((out / "plan.json").read_text())["cluster"]
    return max(section["plans"], key=lambda p: len(p["devices"]))


def describe(plan: dict) -> list[str]:
    return [f"{s['strategy']} blocks {s['blocks'][0]}-{s['blocks'][1]} on {','.join(s['slots'])} shares {s['shares']}"
            for s in plan["stages"]]


class Emulated:
    """The emulated devices of a compiled output (slots -> namespaces), a worker on each, and a ClusterRunner."""

    def __init__(self, args, out: Path, shares: dict[str, float], rate_bps: float, rtt_s: float = 1e-3):
        section = json.loads((out / "plan.json").read_text())["cluster"]
        self.out, self.hub, self.slots = out, section["hub"], [d["slot"] for d in section["devices"]]
        devices = [(s.replace("/", "-"), shares[s] if s in shares else shares[s.split("/")[0]],
                    None if s == self.hub else rate_bps, 0.0 if s == self.hub else rtt_s) for s in self.slots]
        self.hub_device = self.hub.replace("/", "-")
        self.cluster = EmulatedCluster(devices, lan_bps=rate_bps, realtime=not args.cfs, proxies_on=self.hub_device)

    def __enter__(self) -> Emulated:
        self.cluster.__enter__()
        try:
            self.cluster.join(self.hub_device)  # before the runner starts its threads: they inherit it
            workers = {}
            for s in self.slots:
                argv = [sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "{host}:{port}",
                        "--dir", str(self.out), "--threads", "1"]
                host, port = self.cluster.spawn(s.replace("/", "-"), argv, stdout=open(os.devnull, "w"))
                workers[s] = f"{host}:{port}"
            self.runner = ClusterRunner(self.out, workers=workers, timeout_s=120)
        except BaseException:
            self.cluster.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.runner.close()
        finally:
            self.cluster.close()

    def rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of each device's worker process."""
        peak = {}
        for s in self.slots:
            proc = self.cluster.processes[s.replace("/", "-")][-1]
            try:
                line = next(ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ln.startswith("VmHWM"))
                peak[s] = int(line.split()[1]) / 1024
            except (OSError, StopIteration):
                pass
        return peak


def reference(model: Path):
    sess = session(str(model), "disable")
    x = np.random.default_rng(0).standard_normal([int(d) for d in sess.get_inputs()[0].shape]).astype(np.float32)
    feeds = {sess.get_inputs()[0].name: x}
    return feeds, sess.run(None, feeds)[0]


def latency(emu: Emulated, feeds, want, frames: int) -> dict:
    times, err, cos = [], 0.0, 1.0
    for i in range(WARMUP + frames):
        t = time.perf_counter()
        out = emu.runner.run(feeds)
        took = time.perf_counter() - t
        (got,) = out.values()
        err = max(err, float(np.abs(got - want).max()))
        cos = min(cos, float(got.ravel().astype(np.float64) @ want.ravel() / (np.linalg.norm(got) * np.linalg.norm(want) or 1.0)))
        if i >= WARMUP:
            times.append(took)
    return {"latency_s": statistics.median(times), "max_abs_error": err, "cosine": cos, "load": load()}


def throughput(emu: Emulated, feeds, frames: int, in_flight: int = 4) -> float:
    list(emu.runner.stream([feeds] * WARMUP, max_in_flight=in_flight))
    t = time.perf_counter()
    n = sum(1 for _ in emu.runner.stream([feeds] * frames, max_in_flight=in_flight))
    return n / (time.perf_counter() - t)


def row(name: str, plan: dict, measured: dict, **extra) -> dict:
    r = {"case": name, "devices": len({s for st in plan["stages"] for s in st["slots"]}),
         "plan": describe(plan), "predicted_latency_s": plan["predicted"]["latency_s"], **measured, **extra}
    r["latency_error"] = r["latency_s"] / r["predicted_latency_s"] - 1 if "latency_s" in r else None
    print(f"  {name}: {r.get('devices')} device(s), predicted {r['predicted_latency_s'] * 1e3:.0f} ms, measured "
          f"{r.get('latency_s', float('nan')) * 1e3:.0f} ms (load {r.get('load', load()):.1f}); " + "; ".join(r["plan"]), flush=True)
    return r


# ---------------------------------------------------------------------------------------------------- sections

def emulation(args) -> dict:
    """The emulation itself: a CPU loop at share 1 vs --share (alternated, medians of 3), 2 MB over a 10 Mbit port."""
    with EmulatedCluster([("full", 4 * args.share, 10e6, 0.0), ("part", args.share, 10e6, 0.02)], realtime=not args.cfs) as cluster:
        runs = [(cpu_loop(cluster, "part", 6_000_000), cpu_loop(cluster, "full", 6_000_000)) for _ in range(3)]
        sink = start_sink(cluster, "part")
        up, down = (statistics.median(transfer_seconds(sink, 2_000_000, d) for _ in range(2)) for d in ("up", "down"))
    r = {"cpu_ratio": statistics.median(p[0] / f[0] for p, f in runs), "expected_ratio": 4.0,
         "cpu_use_part": statistics.median(p[1] / p[0] for p, _ in runs), "cpu_use_full": statistics.median(f[1] / f[0] for _, f in runs),
         "transfer_up_s": up, "transfer_down_s": down, "transfer_expected_s": 2e6 * 8 / 10e6 + 0.02, "load": load(),
         "reason": cluster.reason}
    print(f"  CPU loop at share {args.share:g} / share {4 * args.share:g}: {r['cpu_ratio']:.2f}x (expected 4x; cores used"
          f" {r['cpu_use_part']:.2f} vs {r['cpu_use_full']:.2f}); 2 MB over 10 Mbit/s + 20 ms RTT: up {up:.3f} s, down"
          f" {down:.3f} s (expected {r['transfer_expected_s']:.2f} s); load {r['load']:.1f}", flush=True)
    return r


def vgg(args, profile: Path, paths) -> dict:
    feeds, want = reference(paths["vgg16"])
    hub = {"name": "hub", "profile": str(profile), "count": 1, "memory_mb": 4096, "hub": True, "worker": False}
    rows = []
    for n in (1, 4):
        out, _ = compiled(f"vgg_{n}", paths["vgg16"], toml([hub, {"name": "pi", "profile": str(profile), "count": n, "memory_mb": 1024}], "200mbit"))
        with Emulated(args, out, {"hub": args.hub_share, "pi": args.share}, 200e6) as emu:
            rows.append(row(f"vgg16 {n} worker(s) at 200 Mbit/s", best(out), latency(emu, feeds, want, args.frames)))
    ratio = rows[1]["latency_s"] / rows[0]["latency_s"]
    print(f"  4 workers / 1 worker latency: {ratio:.2f}x (target <= 0.52x)", flush=True)
    return {"rows": rows, "latency_ratio": ratio}


def lowrate(args, profile: Path, paths) -> dict:
    feeds, want = reference(paths["vgg16"])
    group = {"name": "pi", "profile": str(profile), "count": 5, "memory_mb": 1024, "hub": True}
    out, _ = compiled("vgg_500k", paths["vgg16"], toml([group], "500kbit"))
    plan = best(out)
    used = {s for st in plan["stages"] for s in st["slots"]}
    with Emulated(args, out, {"pi/0": args.share, "pi": args.share}, 500e3) as emu:
        r = row("vgg16 5 devices (hub pi/0 a worker) at 500 kbit/s", plan, latency(emu, feeds, want, max(2, args.frames // 2)))
    print(f"  at 500 kbit/s the plan uses {sorted(used)}", flush=True)
    return {"rows": [r], "devices_used": sorted(used)}


def slow(args, profile: Path, paths) -> dict:
    """pi/0..2 at --share, the fourth worker at a quarter of it: the planner told (a group 'slow' with cpu_share 0.25)
    vs not told (4 equal workers: an even split), both run on the same emulated devices."""
    feeds, want = reference(paths["vgg16"])
    hub = {"name": "hub", "profile": str(profile), "count": 1, "memory_mb": 4096, "hub": True, "worker": False}
    pi = {"name": "pi", "profile": str(profile), "memory_mb": 1024}
    told, _ = compiled("vgg_slow_told", paths["vgg16"], toml([hub, {**pi, "count": 3}, {**pi, "name": "slow", "count": 1, "cpu_share": 0.25}], "200mbit"))
    even, _ = compiled("vgg_slow_even", paths["vgg16"], toml([hub, {**pi, "count": 4}], "200mbit"))
    rows = []
    with Emulated(args, told, {"hub": args.hub_share, "pi": args.share, "slow": args.share / 4}, 200e6) as emu:
        rows.append(row("vgg16 3 workers + 1 at 1/4 CPU, planner told", best(told), latency(emu, feeds, want, args.frames)))
    with Emulated(args, even, {"hub": args.hub_share, "pi": args.share, "pi/3": args.share / 4}, 200e6) as emu:
        rows.append(row("vgg16 3 workers + 1 at 1/4 CPU, planner not told (even)", best(even), latency(emu, feeds, want, args.frames)))
    rows[1]["latency_error"] = None  # its prediction is for 4 equal workers, not for the devices it ran on
    ratio = rows[1]["latency_s"] / rows[0]["latency_s"]
    print(f"  even / speed-proportional latency: {ratio:.2f}x (target >= 1.5x)", flush=True)
    return {"rows": rows, "speedup": ratio}


def _alternative(result, out: Path, name: str, strategy: str, slots: tuple[str, ...]) -> Path | None:
    """An output folder holding only the plan of one stage over every block, ``strategy`` on ``slots`` (priced by
    the planner's own evaluator); None when it is not allowed (memory, objective)."""
    plans = result.plans
    counts = max(plans.plans, key=lambda c: sum(c))
    alt = evaluate(plans.chain, plans.spec, counts, [(0, len(plans.chain.blocks), strategy, slots)])
    if alt is None:
        spec = dataclasses.replace(plans.spec, groups=tuple(dataclasses.replace(g, memory_bytes=1 << 40) for g in plans.spec.groups))
        alt = evaluate(plans.chain, spec, counts, [(0, len(plans.chain.blocks), strategy, slots)])
        if alt is None:
            return None
    folder = OUT / name
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    section = cluster_section(result.model, dataclasses.replace(plans, plans={counts: alt}, best=alt), folder)
    plan = dict(result.plan, cluster=section)
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def _fps_row(args, name: str, folder: Path, feeds, want) -> dict:
    plan = best(folder)
    with Emulated(args, folder, {"hub": args.hub_share, "pi": args.share}, 200e6) as emu:
        measured = latency(emu, feeds, want, args.frames)
        measured["fps"] = throughput(emu, feeds, 4 * args.frames)
    r = row(name, plan, measured, predicted_fps=plan["predicted"]["fps"], strategies=[s["strategy"] for s in plan["stages"]])
    r["fps_error"] = r["fps"] / r["predicted_fps"] - 1 if r["predicted_fps"] else None
    print(f"    frames/s measured {r['fps']:.1f}, predicted {r['predicted_fps']:.1f}", flush=True)
    return r


def chair(args, profile: Path, paths) -> dict:
    """Throughput objective, 4 workers: the wide fc with 32 MB per device (it cannot be replicated: 41 MB of weights),
    against all data-parallel (ignoring the memory) and one device; the same with 1 GB per device; a conv-only model."""
    hub = {"name": "hub", "profile": str(profile), "count": 1, "memory_mb": 4096, "hub": True, "worker": False}
    slots = tuple(f"pi/{k}" for k in range(4))
    rows = []
    feeds, want = reference(paths["fc_wide"])
    for memory in (32, 1024):
        pi = {"name": "pi", "profile": str(profile), "count": 4, "memory_mb": memory}
        out, result = compiled(f"chair_{memory}", paths["fc_wide"], toml([hub, pi], "200mbit", objective="throughput"))
        rows.append(_fps_row(args, f"fc_wide {memory} MB/device, planner", out, feeds, want))
        if memory == 32:
            for name, strategy, use in (("all data-parallel (ignoring the 32 MB)", "data", slots), ("one device", "single", slots[:1])):
                folder = _alternative(result, out, f"chair_{strategy}", strategy, use)
                if folder is not None:
                    rows.append(_fps_row(args, f"fc_wide {name}", folder, feeds, want))
    feeds, want = reference(paths["yolo16"])
    pi = {"name": "pi", "profile": str(profile), "count": 4, "memory_mb": 1024}
    out, result = compiled("chair_conv", paths["yolo16"], toml([hub, pi], "200mbit", objective="throughput"))
    rows.append(_fps_row(args, "yolo16 (convs only) 1 GB/device, planner", out, feeds, want))
    folder = _alternative(result, out, "chair_conv_single", "single", slots[:1])
    if folder is not None:
        rows.append(_fps_row(args, "yolo16 (convs only) one device", folder, feeds, want))
    return {"rows": rows}


def yolo(args, profile: Path, paths) -> dict:
    feeds, want = reference(paths["yolo16"])
    # the hub codes every int8 transfer on its own CPU: its profile is measured under --hub-share, as the workers' under theirs
    hub_profile = profile_under_quota(args.hub_share, list(paths.values()), OUT / "profiles", realtime=not args.cfs)
    hub = {"name": "hub", "profile": str(hub_profile), "count": 1, "memory_mb": 4096, "hub": True, "worker": False}
    rows = []
    boundaries = ["fp32", "int8"] if args.boundary == "both" else [args.boundary]
    for boundary in boundaries:
        for n in args.yolo_devices:
            rate = args.yolo_rate
            name = f"yolo_{n}" + ("" if boundary == "fp32" else f"_{boundary}")
            out, _ = compiled(name, paths["yolo16"], toml([hub, {"name": "pi", "profile": str(profile), "count": n, "memory_mb": 1024}],
                                                           f"{rate / 1e6:g}mbit", boundary=boundary))
            plan = best(out)
            with Emulated(args, out, {"hub": args.hub_share, "pi": args.share}, rate) as emu:
                measured = latency(emu, feeds, want, args.frames)
                measured["worker_rss_mb"] = {k: round(v, 1) for k, v in emu.rss_mb().items() if k != "hub/0"}
                wire = emu.runner.engine.wire_bytes()  # every frame run (warm-up included) on this plan
                measured["wire_bytes_per_frame"] = round(sum(a + b for a, b in wire.values()) / (WARMUP + args.frames))
            r = row(f"yolo16 {n} worker(s) at {rate / 1e6:g} Mbit/s, {boundary}", plan, measured, boundary=boundary,
                    predicted_memory_mb={k: round(v / 1e6, 2) for k, v in plan["memory_bytes"].items()})
            rows.append(r)
    base = rows[0]["latency_s"]  # the first boundary's single worker
    for r in rows:
        own = next(o for o in rows if o["boundary"] == r["boundary"])["latency_s"]
        r["speedup"], r["speedup_same_boundary"] = base / r["latency_s"], own / r["latency_s"]
        print(f"  {r['case']}: speed-up {r['speedup']:.2f}x vs {rows[0]['case']} ({r['speedup_same_boundary']:.2f}x vs its own"
              f" boundary's single worker), {r['wire_bytes_per_frame'] / 1e6:.3f} MB on the wire per frame, cosine"
              f" {r['cosine']:.5f}, predicted memory per device (MB) {r['predicted_memory_mb']}, worker peak RSS (MB)"
              f" {r['worker_rss_mb']}", flush=True)
    return {"rows": rows}


def leave(args, profile: Path, paths) -> dict:
    feeds, want = reference(paths["vgg16"])
    out = OUT / "vgg_4"
    if not (out / "plan.json").exists():
        hub = {"name": "hub", "profile": str(profile), "count": 1, "memory_mb": 4096, "hub": True, "worker": False}
        out, _ = compiled("vgg_4", paths["vgg16"], toml([hub, {"name": "pi", "profile": str(profile), "count": 4, "memory_mb": 1024}], "200mbit"))
    frames, kill_at, join_at = 4 * args.frames, args.frames, 2 * args.frames
    argv = [sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "{host}:{port}", "--dir", str(out), "--threads", "1"]
    with Emulated(args, out, {"hub": args.hub_share, "pi": args.share}, 200e6) as emu:
        got, t_kill, t_join, t_spawn = [], None, None, None
        for i, result in enumerate(emu.runner.stream([feeds] * frames, max_in_flight=2)):
            got.append(result)
            if i == kill_at:
                t_kill = time.perf_counter()
                emu.cluster.kill("pi-2")
            elif i == join_at:  # a new worker on the same device (a new port: the old one may linger in TIME_WAIT)
                t_spawn = time.perf_counter()
                host, port = emu.cluster.spawn("pi-2", argv, port=7071, stdout=open(os.devnull, "w"))
                t_join = time.perf_counter()
                emu.runner.join("pi/2", f"{host}:{port}")
        switches = list(emu.runner.switches)
    lost = sum(1 for r in got if float(np.abs(next(iter(r.values())) - want).max()) > 1e-3) + frames - len(got)
    left = [s for s in switches if s["device"] == "pi/2" and s["why"] != "joined"]
    joined = [s for s in switches if s["why"] == "joined"]
    r = {"frames": frames, "lost": lost, "switches": [{k: v for k, v in s.items() if k != "at"} for s in switches],
         "kill_to_switch_s": (left[0]["at"] - t_kill) if left else None,
         "join_s": (joined[0]["at"] - t_join) if joined else None, "worker_start_s": t_join - t_spawn if joined else None,
         "load": load()}
    print(f"  pi/2 killed after frame {kill_at}, back after frame {join_at}, of {frames}: {lost} frame(s) lost; " + (
          f"new plan on {left[0]['devices']} {left[0]['seconds'] * 1e3:.0f} ms after the loss was detected, "
          f"{r['kill_to_switch_s'] * 1e3:.0f} ms after the kill" if left else "no switch") + (
          f"; the 4-device plan again {r['join_s'] * 1e3:.0f} ms after the join (the worker took"
          f" {r['worker_start_s']:.1f} s to start)" if joined else ""), flush=True)
    return r


SECTIONS = {"emulation": emulation, "vgg": vgg, "lowrate": lowrate, "slow": slow, "chair": chair, "yolo": yolo, "leave": leave}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--share", type=float, default=0.12, help="each worker's CPU: a fraction of one core (default 0.12)")
    ap.add_argument("--hub-share", type=float, default=0.2, help="the hub's CPU (this process and the proxies; default 0.2)")
    ap.add_argument("--cfs", action="store_true", help="CFS quotas instead of real-time shares")
    ap.add_argument("--profile-share", type=float, help="measure the profile at this share instead (cluster.toml then"
                    " gives the devices cpu_share = share / profile share); default: --share")
    ap.add_argument("--frames", type=int, default=6, help="measured frames per figure (after 2 warm-up frames)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--yolo-devices", default="1,2,4,6", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--yolo-rate", default=200e6, type=float, help="the yolo section's LAN rate, bit/s (default 200e6)")
    ap.add_argument("--boundary", default="fp32", choices=["fp32", "int8", "both"],
                    help="the yolo section's [network] boundary (both: fp32 then int8, speed-ups against fp32's single worker)")
    ap.add_argument("--out", default=str(OUT / "results.json"))
    args = ap.parse_args()
    wanted = args.only.split(",")
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]}; choose from {', '.join(SECTIONS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    paths = models()
    t = time.perf_counter()
    measured_at = args.profile_share or args.share
    CPU_SCALE[0] = args.share / measured_at
    profile = profile_under_quota(measured_at, list(paths.values()), OUT / "profiles", realtime=not args.cfs)
    print(f"profile under a {measured_at:g}-core quota: {profile.relative_to(ROOT)} ({time.perf_counter() - t:.0f} s)", flush=True)
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "share": args.share, "hub_share": args.hub_share, "profile_share": measured_at,
               "realtime": not args.cfs, "frames": args.frames,
               "profile": str(profile.relative_to(ROOT)), "load_before": load()}
    for name in wanted:
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        results[name] = SECTIONS[name](args) if name == "emulation" else SECTIONS[name](args, profile, paths)
        results[name]["seconds"] = round(time.perf_counter() - t, 1)
    table = [r for s in results.values() if isinstance(s, dict) for r in s.get("rows", [])]
    if table:
        print("\n| case | devices used | latency measured / predicted (ms) | frames/s measured / predicted |\n|---|---|---|---|")
        for r in table:
            fps = f"{r['fps']:.1f} / {r['predicted_fps']:.1f}" if r.get("fps") and r.get("predicted_fps") else ""
            print(f"| {r['case']} | {r['devices']} | {r['latency_s'] * 1e3:.0f} / {r['predicted_latency_s'] * 1e3:.0f} | {fps} |")
    rows = [r for r in table if r.get("latency_error") is not None]
    if rows:
        errors = [abs(r["latency_error"]) for r in rows] + [abs(r["fps_error"]) for r in rows if r.get("fps_error") is not None]
        results["median_abs_prediction_error"] = statistics.median(errors)
        print(f"predicted vs measured (latency and frames/s, {len(errors)} figures): median |error| "
              f"{results['median_abs_prediction_error']:.1%}", flush=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
