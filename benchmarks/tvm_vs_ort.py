"""TVM vs onnxruntime latency of the head and the tail of one split model, on this machine.

    .venv/bin/python benchmarks/tvm_vs_ort.py [--threads 1] [--repeat 30] [--json]

Compiles a bottlenet (splitc.tools.zoo, 224x224; by default 64 channels wide and 3 convs deep so that
untuned TVM finishes quickly) for rpi4,cloud over 4G, which cuts it at its bottleneck, with
``--emit onnx,tvm``. The head is compiled for this machine (``--device-target host``: an rpi4 library
cannot run here) and the tail for the cloud target (``--cloud-target``, default llvm = x86-64-v3).
Each part then runs on the same inputs in onnxruntime (CPU, all graph optimizations) and as its
TVM library, both on ``--threads`` threads, timed alternately; the medians and the ratio
TVM / onnxruntime are printed (above 1: TVM is slower). Before anything is timed every library is checked against its ONNX part
on the same inputs (splitc.runtimes.tvm.compare_parts: within 1e-4; the int8 wire compared dequantized).

TVM here is ``tvm.compile``'s default pipeline, untuned (no MetaSchedule), which is what
``splitc compile --emit tvm`` builds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _paired_medians(a, b, repeat: int, min_s: float = 1.0) -> tuple[float, float]:
    """Median seconds of ``a()`` and ``b()``, timed alternately so that load from elsewhere hits both alike."""
    a(), b()  # warm up
    ta, tb = [], []
    t_end = time.perf_counter() + min_s
    while len(ta) < repeat or (time.perf_counter() < t_end and len(ta) < 10 * repeat):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="threads for both runtimes (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per part and runtime, at least (default: %(default)s)")
    p.add_argument("--width", type=int, default=256, help="bottlenet backbone channels (default: %(default)s)")
    p.add_argument("--depth", type=int, default=2, help="bottlenet backbone convs (default: %(default)s)")
    p.add_argument("--link", default="wifi", help="link to split over (default: %(default)s)")
    p.add_argument("--boundary", choices=("int8", "fp32"), default="int8")
    p.add_argument("--cloud-target", default="llvm", help="TVM target of the tail (default: %(default)s)")
    p.add_argument("--schedule", choices=("splitc", "default"), default="splitc",
                   help="splitc's untuned CPU schedule, or TVM's default pipeline alone (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    os.environ["SPLITC_TVM_SCHEDULE"] = args.schedule

    import onnx

    from splitc.tools import zoo
    from splitc.compiler import CompileOptions, compile_model
    from splitc.runtimes.ort import SplitModel, session, synthetic_inputs
    from splitc.runtimes.tvm import TVMPart, compare_parts, records

    work = Path(tempfile.mkdtemp(prefix="tvm_vs_ort-"))
    model = work / "bottlenet.onnx"
    onnx.save(zoo.bottlenet(size=224, classes=1000, width=args.width, depth=args.depth), str(model))
    t = time.perf_counter()
    plan = compile_model(model, work / "out", CompileOptions(link=args.link, boundary=args.boundary, emit="onnx,tvm",
                                                             device_target="host", cloud_target=args.cloud_target)).plan
    compile_s = time.perf_counter() - t
    out = work / "out"
    x = synthetic_inputs(plan["model"]["inputs"])
    checks = compare_parts(SplitModel(out, runtime="tvm"), SplitModel(out), x)  # same inputs, output by output
    failed = [c for c in checks if not c.passed]
    assert not failed, f"TVM differs from onnxruntime: {failed}"
    err = {c.stage: max(k.max_abs for k in checks if k.stage == c.stage and not k.name.endswith(("__q", "__zero_point"))) for c in checks}
    steps_off = {c.stage: sum(k.flips for k in checks if k.stage == c.stage and k.name.endswith("__q")) for c in checks}
    rows, store = [], dict(x)
    for stage in plan["stages"]:
        if stage.get("artifact") is None:
            continue
        record = next(r for r in records(plan) if r["stage"] == stage["index"])
        sess = session(out / stage["artifact"], "all", args.threads)
        part = TVMPart(out / record["library"], record)
        feeds = {i.name: store[i.name] for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        ref = sess.run(names, feeds)
        store.update(zip(names, ref))
        ort_s, tvm_s = _paired_medians(lambda: sess.run(names, feeds), lambda: part.run(names, feeds), args.repeat)
        rows.append({"part": Path(stage["artifact"]).stem, "tier": stage["target"], "tvm_target": record["target"],
                     "onnxruntime_ms": round(ort_s * 1e3, 4), "tvm_ms": round(tvm_s * 1e3, 4),
                     "ratio_tvm_over_ort": round(tvm_s / ort_s, 3), "max_abs_diff": err[stage["index"]],
                     "int8_elements_one_step_off": steps_off[stage["index"]]})
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "cpu") if Path("/proc/cpuinfo").is_file() else "cpu"
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu})",
              "model": f"bottlenet 224x224 width {args.width} depth {args.depth}", "link": args.link, "cut": plan["cut"],
              "boundary": args.boundary, "threads": args.threads, "tvm_schedule": args.schedule, "tvm_compile_and_split_s": round(compile_s, 2),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "parts": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']}, cut at {plan['cut']} over {args.link}, {args.boundary} boundary, {args.threads} thread(s),"
          f" TVM schedule {args.schedule}, {result['machine']}")
    print(f"{'part':6} {'tier':6} {'TVM target':42} {'onnxruntime':>12} {'TVM':>12} {'TVM/ORT':>8}")
    for r in rows:
        target = json.dumps(r["tvm_target"], separators=(",", ":"))
        print(f"{r['part']:6} {r['tier']:6} {target[:42]:42} {r['onnxruntime_ms']:>9.3f} ms {r['tvm_ms']:>9.3f} ms {r['ratio_tvm_over_ort']:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
