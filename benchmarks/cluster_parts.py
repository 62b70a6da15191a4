"""Cluster codegen cost (issue 14): the time and bytes to write every plan's parts, and the best plan run as the
hub runs it (rows sent, numpy merges) against the original model.

    .venv/bin/python benchmarks/cluster_parts.py --model vgg16 --devices 5 --rate 200mbit
    .venv/bin/python benchmarks/cluster_parts.py --model yolo16 --size 416 --devices 4 --check

Prints one JSON line: compile stages' seconds (import + annotate, plan, parts), part files, their bytes, part
entries over all plans, and with --check the best plan's max |error| relative to max(1, |reference|).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splitc.codegen.passes.cluster_split import cluster_section
from splitc.compiler import annotate, import_model
from splitc.cost.cluster import parse_cluster
from splitc.partition.passes.cluster import plan_cluster
from splitc.runtimes.ort import session
from splitc.tools import zoo


def hub_run(out: Path, plan: dict, feeds: dict) -> dict:
    env = dict(feeds)
    for stage in plan["stages"]:
        parts = stage["parts"][:1] if stage["strategy"] == "data" else stage["parts"]
        results = []
        for p in parts:
            rows = p.get("input_rows")
            sub = {n: env[n] if rows is None else env[n][:, :, rows[0]:rows[1]] for n in p["inputs"]}
            results.append(dict(zip(p["outputs"], session(str(out / p["file"]), "disable").run(None, sub))))
        for name in stage["outputs"]:
            pieces = [r[name] for r in results]
            env[name] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=stage["merge"]["axis"])
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(zoo.CLUSTER_MODELS), default="vgg16")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--rate", default="200mbit")
    ap.add_argument("--profile", default="rpi4")
    ap.add_argument("--check", action="store_true", help="run the best plan as the hub does and compare")
    args = ap.parse_args()
    build = zoo.CLUSTER_MODELS[args.model]
    source = build(size=args.size) if args.size else build()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        onnx.save_model(source, str(root / "m.onnx"))
        spec = parse_cluster({"network": {"kind": "lan", "rate": args.rate},
                              "device": [{"name": "pi", "profile": args.profile, "count": args.devices, "memory_mb": 4096}]},
                             "benchmark")
        t0 = time.perf_counter()
        model = annotate(import_model(root / "m.onnx"), spec.profiles)
        t1 = time.perf_counter()
        plans = plan_cluster(model, spec)
        t2 = time.perf_counter()
        (root / "out").mkdir()
        section = cluster_section(model, plans, root / "out")
        t3 = time.perf_counter()
        files = list((root / "out" / "parts").iterdir())
        result = {"model": args.model, "devices": args.devices, "rate": args.rate, "import_annotate_s": round(t1 - t0, 2),
                  "plan_s": round(t2 - t1, 2), "parts_s": round(t3 - t2, 2), "plans": len(section["plans"]),
                  "part_entries": sum(len(s["parts"]) for p in section["plans"] for s in p["stages"]),
                  "files": len(files), "bytes": sum(f.stat().st_size for f in files),
                  "best": [[s["strategy"], s["blocks"], len(s["slots"])] for s in section["plans"][0]["stages"]]}
        if args.check:
            name = source.graph.input[0].name
            x = np.random.default_rng(0).standard_normal([d.dim_value for d in source.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
            want = session(source.SerializeToString(), "disable").run(None, {name: x})
            env = hub_run(root / "out", section["plans"][0], {name: x})
            result["max_rel_error"] = max(float(np.abs(env[o.name] - w).max()) / max(1.0, float(np.abs(w).max()))
                                          for o, w in zip(source.graph.output, want))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
