"""Cluster runtime: frames/s of data-parallel replicas and a device leaving mid-stream (frames lost, time to the new plan).

    .venv/bin/python benchmarks/cluster_switch.py [--model ../shared/models/mobilenet_v2_trained_imagenet.onnx]
        [--frames 60] [--repeat 5] [--engine tcp|ray] [--in-flight 4]

The model runs whole as one part; plan.json's "cluster" section (devices pi/0..pi/2) holds the 3-device plan (data
parallel, shares 1:1:1), the 2-device one (1:1) and the 1-device one. Each repeat streams ``--frames`` frames on the
1-device plan alone, then on all three devices killing pi/1 (SIGKILL of its worker; with Ray, ray.kill of its actor)
after a third of the frames and joining it again (a new worker process; with Ray, new actors) after two thirds.
Reported medians over the repeats: frames/s of each, frames lost (outputs missing or not equal to the original's),
seconds from the failure's detection to the new plan loaded (ClusterRunner.switches), from the kill to the switch,
and of the join (worker started and connected, the 3-device plan's parts loaded). The machine has 2 cores shared by everyone: the replicas compete for them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from splitc.runtimes.cluster import ClusterRunner
from splitc.runtimes.files import sha256_file


def _plan(devices: list[str], strategy: str, spec: dict, digest: str) -> dict:
    parts = [{"slot": d, "file": "parts/whole.onnx", "sha256": digest, **spec} for d in devices]
    return {"devices": devices, "objective": "throughput", "stages": [
        {"strategy": strategy, "blocks": [0, 1], "slots": devices, "shares": [1] * len(devices), "parts": parts, "merge": None, **spec}]}


def write(out: Path, model: Path) -> tuple[str, list[int], str]:
    (out / "parts").mkdir(parents=True)
    shutil.copyfile(model, out / "parts/whole.onnx")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x, y = sess.get_inputs()[0], sess.get_outputs()[0]
    spec = {"inputs": [x.name], "outputs": [y.name]}
    digest = sha256_file(out / "parts/whole.onnx")
    devices = [f"pi/{k}" for k in range(3)]
    section = {"hub": "pi/0", "devices": [{"slot": d, "group": "pi"} for d in devices],
               "plans": [_plan(d, s, spec, digest) for d, s in ((devices, "data"), (devices[:2], "data"), (devices[:1], "single"))]}
    (out / "plan.json").write_text(json.dumps({"model": {"outputs": [{"name": y.name}]}, "cluster": section}))
    return x.name, x.shape, y.name


def runner(out: Path, engine: str) -> ClusterRunner:
    if engine == "ray":
        from splitc.runtimes.cluster_ray import RayEngine

        return ClusterRunner(out, engine=RayEngine(out))
    return ClusterRunner(out, spawn=True)


def kill(r: ClusterRunner, engine: str, device: str) -> None:
    if engine == "ray":
        import ray

        for actor in r.engine.actors_of(device):
            ray.kill(actor)
    else:
        os.kill(r.engine.processes[device].pid, signal.SIGKILL)


def once(out: Path, frames: list[dict], want: list[np.ndarray], yname: str, engine: str, in_flight: int) -> dict:
    one = json.loads((out / "plan.json").read_text())
    one["cluster"]["plans"] = one["cluster"]["plans"][2:]
    solo = out.with_name(out.name + "-solo")
    if not solo.exists():
        solo.mkdir()
        shutil.copytree(out / "parts", solo / "parts")  # a symlink leading out of the folder would be refused
        (solo / "plan.json").write_text(json.dumps(one))
    with runner(solo, engine) as r:
        t0 = time.perf_counter()
        list(r.stream(frames, in_flight))
        fps1 = len(frames) / (time.perf_counter() - t0)
    got, killed_at = [], None
    with runner(out, engine) as r:
        t0 = time.perf_counter()
        for i, res in enumerate(r.stream(frames, in_flight)):
            got.append(res)
            if i == len(frames) // 3:
                killed_at = time.perf_counter()
                kill(r, engine, "pi/1")
            if i == 2 * len(frames) // 3:
                r.join("pi/1")  # a new worker process (Ray: new actors) for the device
        fps3 = len(frames)  # over the whole stream, the join's worker start included / (time.perf_counter() - t0)
        switch = r.switches[0] if r.switches else None
        joined = r.switches[1] if len(r.switches) > 1 else None
    lost = sum(1 for g, w in zip(got, want) if not np.allclose(g[yname], w, atol=1e-4)) + len(frames) - len(got)
    return {"fps_1_device": fps1, "fps_3_devices_leave_join": fps3, "frames_lost": lost, "switches": len(r.switches),
            "switch_s": switch["seconds"] if switch else None, "kill_to_switch_s": switch["at"] - killed_at if switch else None,
            "join_s": joined["seconds"] if joined else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[2] / "shared/models/mobilenet_v2_trained_imagenet.onnx"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--engine", choices=("tcp", "ray"), default="tcp")
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()
    if args.engine == "ray":
        import ray

        ray.init(num_cpus=2, resources={f"splitc/pi/{k}": 1 for k in range(3)}, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        xname, shape, yname = write(out, Path(args.model))
        rng = np.random.default_rng(0)
        frames = [{xname: rng.standard_normal(shape).astype(np.float32)} for _ in range(args.frames)]
        sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        want = [sess.run([yname], f)[0] for f in frames]
        runs = [once(out, frames, want, yname, args.engine, args.in_flight) for _ in range(args.repeat)]
    summary = {k: statistics.median(r[k] for r in runs) for k in runs[0] if runs[0][k] is not None}
    summary["frames_lost_total"] = sum(r["frames_lost"] for r in runs)
    print(json.dumps({"engine": args.engine, "model": Path(args.model).name, "frames": args.frames, "repeat": args.repeat,
                      "median": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
