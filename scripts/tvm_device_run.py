"""Run one stage's TVM library on the device side and write what it would send.

    python scripts/tvm_device_run.py OUT_DIR --stage 0 --inputs in.npz --outputs out.npz [--payload up.bin]

Needs only numpy and the TVM runtime (``TVM_USE_RUNTIME_LIB=1`` skips the compiler library), plus
zstandard for ``--payload``: it loads ``splitc/runtimes/tvm.py`` and ``wire.py`` from their files, so neither
onnxruntime nor the compiler is imported. That is what runs under qemu-aarch64 in the emulated
Raspberry Pi 4 check (scripts/setup_arm64_root.sh, tests/test_tvm.py): the stage's outputs go to
``--outputs`` (.npz) and, with ``--payload``, the wire payload of the hops this stage sends, encoded
by the same codec as the runtime, goes to that file for the next tier to decode.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _runtime(name: str):
    """``splitc.runtimes.<name>`` from the repository's files, without running ``splitc/runtimes/__init__.py`` (which
    imports onnxruntime): the two packages are registered as bare namespaces over their folders."""
    for package, folder in (("splitc", REPO / "splitc"), ("splitc.runtimes", REPO / "splitc" / "runtimes")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(folder)]
            sys.modules[package] = module
    return importlib.import_module(f"splitc.runtimes.{name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="a directory written by 'splitc compile --emit onnx,tvm'")
    p.add_argument("--stage", type=int, default=0, help="the stage to run (default: %(default)s, the head)")
    p.add_argument("--inputs", type=Path, required=True, help=".npz with the stage's inputs by name")
    p.add_argument("--outputs", type=Path, required=True, help=".npz to write the stage's outputs to")
    p.add_argument("--payload", type=Path, help="also write the encoded payload of the hops this stage sends")
    p.add_argument("--repeat", type=int, default=1, help="runs to time (default: %(default)s)")
    args = p.parse_args(argv)

    tvm_runtime = _runtime("tvm")
    plan = json.loads((args.dir / "plan.json").read_text())
    record = next((r for r in tvm_runtime.records(plan) if r["stage"] == args.stage), None)
    if record is None:
        raise SystemExit(f"{args.dir}: plan.json has no TVM library for stage {args.stage}")
    t0 = time.perf_counter()
    part = tvm_runtime.TVMPart(tvm_runtime.library_path(args.dir, record), record)  # never a library outside args.dir
    t1 = time.perf_counter()
    with np.load(args.inputs) as data:
        feeds = {k: data[k] for k in data.files}
    names = [v.name for v in part.get_outputs()]
    seconds = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        values = part.run(names, feeds)
        seconds.append(time.perf_counter() - t)
    outputs = dict(zip(names, values))
    np.savez(args.outputs, **outputs)
    report = {"machine": platform.machine(), "library": record["library"], "target": record["target"],
              "load_s": round(t1 - t0, 4), "run_s": round(float(np.median(seconds)), 6), "outputs": names}
    if args.payload is not None:
        codec = _runtime("wire")
        wire = [w["name"] for b in plan["boundary"] if b.get("stage", 0) == args.stage for w in b["wire"]]
        store = {**feeds, **outputs}  # what this tier holds after the stage, as in SplitModel
        payload = codec.encode({name: store[name] for name in wire})
        args.payload.write_bytes(payload)
        report["payload_bytes"] = len(payload)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
