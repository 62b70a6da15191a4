"""Measurements of the emulated cluster (splitc/tools/clusteremu.py): that its CPU quotas and ports do what they say,
and device profiles measured with ``splitc profile`` under the same quota, so the planner's predictions for emulated
devices can be compared with what the devices do.

    cpu_loop(cluster, "pi0", loops)                # wall and CPU time of a CPU-bound loop on the device
    transfer_seconds(start_sink(cluster, "pi0"), nbytes, "up")  # hub -> device, or "down": device -> hub
    profile_under_quota(0.25, [model.onnx])         # out/emu_profiles/emu-0.25-<key>.toml, cached
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from splitc.errors import SplitcError
from splitc.tools.clusteremu import PREFIX, EmulatedCluster
from splitc.tools.cpugroup import CGROUP_CPU, CpuGroup, cgroup_reason

LOOP = "import time\nt, c = time.perf_counter(), time.process_time()\nfor i in range({n}): pass\nprint(time.perf_counter() - t, time.process_time() - c)"

# a sink on the device: per connection a 9-byte header (b"u" or b"d", then the length, 8 bytes big-endian);
# "u": it reads the bytes and answers one byte; "d": it sends the bytes
SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
while True:
    c, _ = s.accept()
    head = b""
    while len(head) < 9:
        head += c.recv(9 - len(head))
    n = int.from_bytes(head[1:], "big")
    if head[:1] == b"u":
        while n > 0:
            n -= len(c.recv(min(n, 1 << 20)))
        c.sendall(b"k")
    else:
        c.sendall(bytes(n))
    c.close()
"""


def cpu_loop(cluster: EmulatedCluster, name: str, loops: int = 3_000_000) -> tuple[float, float]:
    """Wall and CPU seconds of ``loops`` iterations of an empty Python loop on device ``name`` (its quota applies)."""
    cluster.spawn(name, [sys.executable, "-c", LOOP.format(n=int(loops))], port=None, stdout=subprocess.PIPE, text=True)
    out, _ = cluster.processes[name][-1].communicate(timeout=600)
    wall, cpu = map(float, out.split())
    return wall, cpu


def start_sink(cluster: EmulatedCluster, name: str) -> tuple[str, int]:
    """A byte sink and source on device ``name``; where the hub reaches it."""
    return cluster.spawn(name, [sys.executable, "-c", SINK, "{host}", "{port}"], port=7071)


def transfer_seconds(sink: tuple[str, int], nbytes: int, direction: str = "up") -> float:
    """Seconds from the hub's request to the last byte: ``nbytes`` to the device ("up", ended by its one-byte answer)
    or from it ("down"). Expect nbytes * 8 / rate + one RTT."""
    with socket.create_connection(sink, timeout=600) as s:
        t = time.perf_counter()
        s.sendall((b"u" if direction == "up" else b"d") + int(nbytes).to_bytes(8, "big"))
        if direction == "up":
            s.sendall(bytes(nbytes))
            if s.recv(1) != b"k":
                raise SplitcError(f"sink at {sink}: no acknowledgement of {nbytes} bytes")
        else:
            left = nbytes
            while left > 0:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise SplitcError(f"sink at {sink}: closed with {left} of {nbytes} bytes not sent")
                left -= len(chunk)
        return time.perf_counter() - t


def profile_under_quota(share: float, models: list[str | Path], out_dir: str | Path = "out/emu_profiles",
                        threads: int = 1, runs: int = 10, warmup: int = 3, input_shapes: tuple[str, ...] = (),
                        calibration: bool = True, realtime: bool = False) -> Path:
    """`splitc profile` of ``models`` run inside a cgroup with ``share`` of one core; the profile toml's path.
    Cached by share, settings, the models' bytes and splitc's profiler: a second call returns at once."""
    if cgroup_reason():
        raise SplitcError(f"profile under a CPU quota: {cgroup_reason()}")
    from splitc.tools import profiler

    h = hashlib.sha256(repr((share, threads, runs, warmup, input_shapes, calibration, realtime)).encode())
    for path in [*models, profiler.__file__]:
        h.update(Path(path).read_bytes())
    out = Path(out_dir) / f"emu-{share:g}{'-rt' if realtime else ''}-{h.hexdigest()[:10]}.toml"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.toml")
    group = CpuGroup(CGROUP_CPU / f"{PREFIX}-{os.getpid()}-0" / f"profile{share:g}", share, realtime).create()
    try:
        cmd = [sys.executable, "-m", "splitc", "profile", *map(str, models), "--name", f"emu{share:g}", "-o", str(tmp),
               "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--force", "-q",
               "--description", f"emulated device: {share:g} of one core of {os.uname().nodename} (cgroup cpu "
               + ("real-time runtime, SCHED_RR)" if realtime else "quota)")]
        cmd += [] if calibration else ["--no-calibration"]
        for spec in input_shapes:
            cmd += ["--input-shape", spec]
        proc = subprocess.run(group.wrap(cmd), capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SplitcError(f"splitc profile under a {share:g} CPU quota failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        group.remove()
    return out
