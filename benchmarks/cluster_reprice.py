"""The yolo section's plans (out/bench_cluster/yolo_*/plan.json, as benchmarks/cluster.py ran them) re-priced by the
cluster evaluator with parts of its pricing taken back, against the latencies measured in that run:

    .venv/bin/python benchmarks/cluster_reprice.py out/bench_cluster/yolo_cprice.json

new (as planned); no_framing (payload bytes only: no worker-protocol framing, no TCP/IP headers); old_codec_rates (int8
coded at the profiles' 2-tier [codec] rates); hub_at_worker_profile (the hub priced with the workers' profile, not
the one measured under --hub-share); all_old (all three). Prints each plan's ms and the median |measured/predicted - 1|.
"""
import dataclasses, json, statistics, sys
from pathlib import Path
import splitc.partition.cluster_cost as cc
from splitc.compiler import compile_cluster
from splitc.partition.cluster import full_counts
OUT = Path("out/bench_cluster")
res = json.load(open(sys.argv[1]))["yolo"]["rows"]
orig_links = cc._links
table = []
for r in res:
    n = int(r["case"].split()[1]); b = r["boundary"]
    name = f"yolo_{n}" + ("" if b == "fp32" else "_int8")
    result = compile_cluster(OUT / "models/yolo16.onnx", None, OUT / f"{name}.toml")
    chain, spec = result.plans.chain, result.plans.spec
    plan = max(json.loads((OUT / name / "plan.json").read_text())["cluster"]["plans"], key=lambda p: len(p["devices"]))
    stages = [(s["blocks"][0], s["blocks"][1], s["strategy"], tuple(s["slots"])) for s in plan["stages"]]
    counts = full_counts(spec)
    def price(sp, framing=True):
        cc._links = orig_links if framing else (lambda spec, base: {})
        try:
            return cc.evaluate(chain, sp, counts, stages).latency_s
        finally:
            cc._links = orig_links
    worker = next(g for g in spec.groups if not g.hub).profile
    old_rates = lambda g: dataclasses.replace(g, profile=dataclasses.replace(g.profile, cluster_encode_bytes_per_s=None, cluster_decode_bytes_per_s=None))
    hub_as_worker = dataclasses.replace(spec, groups=tuple(dataclasses.replace(g, profile=worker) if g.hub else g for g in spec.groups))
    old_codec = dataclasses.replace(spec, groups=tuple(old_rates(g) for g in spec.groups))
    all_old = dataclasses.replace(hub_as_worker, groups=tuple(old_rates(g) for g in hub_as_worker.groups))
    row = {"case": f"{b} {n}", "measured": r["latency_s"], "new": price(spec), "no_framing": price(spec, False),
           "old_codec_rates": price(old_codec), "hub_at_worker_profile": price(hub_as_worker), "all_old": price(all_old, False)}
    table.append(row)
    print(row["case"], " ".join(f"{k} {v*1e3:.1f}" for k, v in row.items() if k != "case"), flush=True)
for k in ("new", "no_framing", "old_codec_rates", "hub_at_worker_profile", "all_old"):
    for b in ("fp32", "int8", ""):
        e = [abs(t["measured"] / t[k] - 1) for t in table if t["case"].startswith(b)]
        print(f"median |measured/predicted - 1| {k:22s} {b or 'all':5s} {100 * statistics.median(e):.1f}%")
