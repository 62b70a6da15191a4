"""The yolo section's plans (out/bench_cluster/yolo_*/plan.json, as benchmarks/cluster.py ran them) re-priced by the
cluster evaluator with parts of its pricing taken back, against the latencies measured in that run:

    .venv/bin/python benchmarks/cluster_reprice.py out/bench_cluster/yolo_cprice.json

new (as planned); no_framing (payload bytes only: no worker-protocol framing, no TCP/IP headers); old_codec_rates (int8
coded at the profiles' 2-tier [codec] rates); hub_at_worker_profile (the hub priced with the workers' profile, not
the one measured under --hub-share); all_old (all three). Prints each plan's ms and the median |measured/predicted - 1|.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import splitc.partition.cluster_cost as cc
from splitc.compiler import compile_cluster
from splitc.partition.cluster import full_counts

OUT = Path("out/bench_cluster")
VARIANTS = ("new", "no_framing", "old_codec_rates", "hub_at_worker_profile", "all_old")


def price(chain, spec, stages, framing: bool = True) -> float:
    """The latency of ``stages`` under ``spec``; ``framing`` False: payload bytes only."""
    links = cc._links
    cc._links = links if framing else (lambda _spec, _base: {})
    try:
        return cc.evaluate(chain, spec, full_counts(spec), stages).latency_s
    finally:
        cc._links = links


def without_cluster_rates(group):
    return dataclasses.replace(group, profile=dataclasses.replace(group.profile, cluster_encode_bytes_per_s=None,
                                                                  cluster_decode_bytes_per_s=None))


def reprice(row: dict) -> dict:
    n, boundary = int(row["case"].split()[1]), row["boundary"]
    name = f"yolo_{n}" + ("" if boundary == "fp32" else f"_{boundary}")
    plans = compile_cluster(OUT / "models" / "yolo16.onnx", None, OUT / f"{name}.toml").plans
    chain, spec = plans.chain, plans.spec
    plan = max(json.loads((OUT / name / "plan.json").read_text())["cluster"]["plans"], key=lambda p: len(p["devices"]))
    stages = [(s["blocks"][0], s["blocks"][1], s["strategy"], tuple(s["slots"])) for s in plan["stages"]]
    worker = next(g for g in spec.groups if not g.hub).profile
    hub_as_worker = dataclasses.replace(spec, groups=tuple(dataclasses.replace(g, profile=worker) if g.hub else g
                                                           for g in spec.groups))
    old_codec = dataclasses.replace(spec, groups=tuple(without_cluster_rates(g) for g in spec.groups))
    all_old = dataclasses.replace(hub_as_worker, groups=tuple(without_cluster_rates(g) for g in hub_as_worker.groups))
    return {"case": f"{boundary} {n}", "measured": row["latency_s"], "new": price(chain, spec, stages),
            "no_framing": price(chain, spec, stages, False), "old_codec_rates": price(chain, old_codec, stages),
            "hub_at_worker_profile": price(chain, hub_as_worker, stages), "all_old": price(chain, all_old, stages, False)}


def main() -> None:
    table = []
    for row in json.loads(Path(sys.argv[1]).read_text())["yolo"]["rows"]:
        table.append(reprice(row))
        print(table[-1]["case"], " ".join(f"{k} {v * 1e3:.1f} ms" for k, v in table[-1].items() if k != "case"), flush=True)
    for k in VARIANTS:
        for b in ("fp32", "int8", ""):
            e = [abs(t["measured"] / t[k] - 1) for t in table if t["case"].startswith(b)]
            print(f"median |measured/predicted - 1| {k:22s} {b or 'all':5s} {100 * statistics.median(e):.1f}%")


if __name__ == "__main__":
    main()
