"""Partitioner scale benchmark (issue: partitioner depth, part 6). Model load is excluded.

    .venv/bin/python benchmarks/partitioner_scale.py [--repeats 3]

1. a 2,040-node transformer (splitc.tools.zoo.transformer(60)): cost graph + exact solve + baselines (the
   whole partition pass), rpi4,cloud over 4g and a fast link;
2. a 20,000-node synthetic DAG (splitc.partition.synth.synthetic_dag): exact solve, two tiers, latency;
   the min-cut (networkx) on the same graph for comparison;
3. light ResNet-50 under a device-memory limit and a deadline that both bind.
Prints medians of --repeats runs and the machine load.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time

import onnx

from splitc.tools import zoo
from splitc.partition.baselines import baselines, solve_mincut
from splitc.compiler import annotate, import_model, resolve_targets
from splitc.partition.optimizer import Goal, solve
from splitc.partition.passes.partition import build_cost_graph
from splitc.partition.synth import synthetic_dag
from splitc.cost.targets import parse_links


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| case | nodes (coarse) | what is timed | median s | goal | status |")
    print("|---|---|---|---|---|---|")
    targets = resolve_targets("rpi4,cloud")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.onnx")
        onnx.save(zoo.transformer(60, seq=128, dim=64, batch=1), path)
        t_import, model = timed(lambda: annotate(import_model(path), targets), 1)
        for link in ("4g", "up=100Mbps,down=300Mbps,rtt=2ms"):
            def partition():
                cg = build_cost_graph(model, targets, parse_links(link, 1), "int8")
                return cg, solve(cg), baselines(cg)

            secs, (cg, sol, _) = timed(partition, args.repeats)
            coarse = next((n for n in sol.notes if n.startswith("coarsened")), "")
            print(f"| transformer x60, {link.split(',')[0]} | {len(cg.nodes)} ({coarse.split('-> ')[1].split(' ')[0] if coarse else '-'})"
                  f" | cost graph + solve + baselines | {secs:.2f} | <= 5 | {sol.status} |")
        print(f"| (transformer import + annotate, not counted) | {len(list(model.graph))} ONNX nodes | | {t_import:.2f} | | |")

    cg = synthetic_dag(20000, seed=0)
    secs, sol = timed(lambda: solve(cg), args.repeats)
    print(f"| synthetic DAG, 2 tiers, latency | {len(cg.nodes)} | exact solve (ILP/LP) | {secs:.2f} | <= 60 | {sol.status} |")
    secs_raw, sol_raw = timed(lambda: solve(cg, coarsen=False), 1)
    print(f"| synthetic DAG, no coarsening | {len(cg.nodes)} | exact solve | {secs_raw:.2f} | | {sol_raw.status} |")
    secs_mc, cut = timed(lambda: solve_mincut(cg), 1)
    same = abs(cut.cost.total_s - sol.cost.total_s) <= 1e-9 * sol.cost.total_s
    print(f"| synthetic DAG, min-cut (DADS, networkx) | {len(cg.nodes)} | min-cut | {secs_mc:.2f} | | {'= ILP' if same else 'DIFFERS'} |")

    light = glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx"))[0]
    model = annotate(import_model(light), targets)
    cg = build_cost_graph(model, targets, parse_links("wifi", 1), "int8")
    free = solve(cg)
    device_mem = baselines(cg)["device_only"].cost.device_memory_bytes
    goal = Goal("latency", deadline_s=free.cost.total_s * 1.3, max_device_memory=int(device_mem * 0.5))
    secs, sol = timed(lambda: solve(cg, goal), args.repeats)
    print(f"| ResNet-50, memory <= {goal.max_device_memory / 1e6:.0f} MB and deadline {goal.deadline_s * 1e3:.0f} ms"
          f" | {len(cg.nodes)} | exact MIP | {secs:.2f} | <= 1 | {sol.status}, {sol.cost.total_s * 1e3:.1f} ms,"
          f" {sol.cost.device_memory_bytes / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()
