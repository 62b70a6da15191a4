"""The cluster planner's predictions and its own speed (no devices: the cost model only; measured runs are
benchmarks/cluster.py on the emulated cluster).

    .venv/bin/python benchmarks/cluster_plan.py

Prints, on the rpi4 profile: VGG-16 (224 px, full width) on a hub + 4 Pis at 200 Mbit/s and at 500 kbit/s (latency
vs one Pi), the plan per device count, and the planner's time for 8 devices of three kinds (both objectives, all
36 sub-multisets)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from splitc.compiler import annotate, import_model
from splitc.cost.cluster import parse_cluster
from splitc.partition.cluster import plan_all
from splitc.partition.passes.cluster import build_chain
from splitc.tools import zoo


def describe(plan) -> str:
    return " | ".join(f"{s.strategy} {s.first}-{s.last} x{len(s.slots)}" for s in plan.stages)


def main() -> None:
    pis = {"name": "pi", "profile": "rpi4", "count": 5, "memory_mb": 1024}
    groups = [{"name": "pi", "profile": "rpi4", "count": 4, "memory_mb": 512},
              {"name": "nano", "profile": "jetson-nano", "count": 2, "memory_mb": 1024},
              {"name": "slow", "profile": "rpi4", "count": 2, "memory_mb": 256, "cpu_share": 0.25}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg16.onnx"
        onnx.save(zoo.vgg16(size=224), path)
        spec = parse_cluster({"device": groups}, "vgg")  # annotated with every profile used below
        chain = build_chain(annotate(import_model(path), spec.profiles), spec.profiles)
    print(f"VGG-16: {len(chain.blocks)} blocks")
    for rate in ("200mbit", "500kbit"):
        plans = plan_all(chain, parse_cluster({"network": {"rate": rate}, "device": [pis]}, rate))
        one = plans[(1,)].latency_s
        for (n,), plan in sorted(plans.items()):
            print(f"  {rate} {n} Pi(s): {plan.latency_s * 1e3:7.1f} ms  {plan.latency_s / one:.2f}x  {describe(plan)}")
    for objective in ("latency", "throughput"):
        spec = parse_cluster({"objective": objective, "network": {"kind": "star", "rate": "200mbit"}, "device": groups}, "8")
        t = time.perf_counter()
        plans = plan_all(chain, spec)
        best = plans[(4, 2, 2)]
        print(f"  8 devices, {objective}: {len(plans)} plans in {time.perf_counter() - t:.1f} s; full cluster"
              f" {best.latency_s * 1e3:.1f} ms, {best.fps:.1f} frames/s: {describe(best)}")


if __name__ == "__main__":
    main()
