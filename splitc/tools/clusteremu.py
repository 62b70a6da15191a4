"""An emulated cluster on one host, for tests and benchmarks: every device a network namespace with its own port on a
Linux bridge, the port's rate by the kernel (``tc tbf`` on both ends of its veth), the one-way delay by a userspace
proxy on the hub's side (this kernel has no netem), and its CPU speed by a cgroup v1 cpu group
(``cpu.cfs_quota_us = share x cpu.cfs_period_us``: share 0.25 is a quarter of one core; ``realtime=True``: SCHED_RR
under ``cpu.rt_runtime_us``, which holds on a loaded machine; splitc/tools/cpugroup.py).

    with EmulatedCluster([("pi0", 0.25, 200e6, 0.002), ("pi1", 0.25, 200e6, 0.002)], lan_bps=200e6) as cluster:
        host, port = cluster.spawn("pi0", [sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "{host}:{port}"])
        ...  # the hub (this process, in the root namespace) connects to (host, port)

Layout: the bridge lives in a namespace of its own; the hub reaches it over an uplink veth from the root namespace
(``lan_bps`` shapes it both ways, so every transfer of the cluster shares it, as on one LAN). A device whose port rate is
None is local to the hub (a process in the root namespace, in its cgroup only, reached over loopback for free).
Without root the devices are loopback processes, the proxy does rate and delay, and the CPU quota applies only where
the cgroup folder is writable; ``cluster.reason`` says what is missing (None when everything is emulated).
Everything is removed on exit, also on error; what a killed run left behind is removed by the next one.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from splitc.errors import SplitcError
from splitc.serving.linkemu import _tbf, can_shape
from splitc.tools.cpugroup import CGROUP_CPU, PERIOD_US, CpuGroup, cgroup_reason, kill_pids  # noqa: F401 (re-exported)

PREFIX = "splitc-emu"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SplitcError(f"emulated cluster: `{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def cleanup_stale() -> None:
    """Remove the namespaces and cgroups of emulated clusters whose process is gone (a killed test run)."""
    if os.geteuid() == 0:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
        for ns in names:
            m = re.fullmatch(rf"{PREFIX}-(\d+)-\d+-.+", ns)
            if m and not _alive(int(m[1])):
                pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout.split()
                kill_pids([int(p) for p in pids])
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    for group in CGROUP_CPU.glob(f"{PREFIX}-*-*") if CGROUP_CPU.is_dir() else []:
        m = re.fullmatch(rf"{PREFIX}-(\d+)-\d+", group.name)
        if m and not _alive(int(m[1])):
            for child in group.iterdir():
                if child.is_dir():
                    CpuGroup(child, 1.0).remove()
            try:
                group.rmdir()
            except OSError:
                pass


class Device:
    def __init__(self, index: int, name: str, share: float | None, port_bps: float | None, rtt_s: float):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(name)):
            raise SplitcError(f"emulated device name {name!r}: use letters, digits, '_', '.', '-'")
        for what, v in (("port rate", port_bps), ("rtt", rtt_s)):
            if v is not None and not (math.isfinite(v) and v >= 0 and (what == "rtt" or v > 0)):
                raise SplitcError(f"emulated device {name}: {what} {v!r} must be a finite positive number")
        self.index, self.name, self.share, self.port_bps, self.rtt_s = index, name, share, port_bps, float(rtt_s)
        self.netns: str | None = None  # set when the device has a namespace of its own
        self.ip = "127.0.0.1"


class EmulatedCluster:
    """Devices ``[(name, cpu_share, port_bps, rtt_s), ...]`` (share None: no quota; port_bps None: local to the hub)."""

    _seq = 0

    def __init__(self, devices, lan_bps: float | None = None, shape: bool | None = None, realtime: bool = False,
                 proxies_on: str | None = None):
        if not devices or len(devices) > 64:
            raise SplitcError("emulated cluster: give 1 to 64 devices")
        self.devices = {d[0]: Device(i, *d) for i, d in enumerate(devices)}
        if len(self.devices) != len(devices):
            raise SplitcError("emulated cluster: device names must be unique")
        if lan_bps is not None and not (math.isfinite(lan_bps) and lan_bps > 0):
            raise SplitcError(f"emulated cluster: lan rate {lan_bps!r} must be a finite positive number")
        self.lan_bps, self.realtime, self.proxies_on = lan_bps, realtime, proxies_on
        if proxies_on is not None and proxies_on not in self.devices:
            raise SplitcError(f"emulated cluster: proxies_on names no device ({proxies_on!r})")
        for d in self.devices.values():
            if d.share is not None:
                CpuGroup(Path(d.name), d.share)  # validated before anything is made
        EmulatedCluster._seq += 1
        self.tag = f"{os.getpid()}-{EmulatedCluster._seq}"
        self._ifx = f"e{os.getpid() % 100000}{EmulatedCluster._seq % 10}"  # interface names: <= 15 characters
        self.shaped = can_shape() if shape is None else shape
        cg = cgroup_reason()
        self.cgroups = cg is None
        missing = [] if self.shaped else ["no network namespaces (not root, or no ip/tc): loopback processes, rate and delay by the proxy"]
        missing += [] if cg is None else [f"no CPU quota: {cg}"]
        self.reason = "; ".join(missing) or None
        self.processes: dict[str, list[subprocess.Popen]] = {n: [] for n in self.devices}
        self._proxies: list[subprocess.Popen] = []
        self._groups: dict[str, CpuGroup] = {}
        self._namespaces: list[str] = []
        self._joined = False

    # --- setup and teardown
    def __enter__(self) -> EmulatedCluster:
        cleanup_stale()
        try:
            if self.cgroups:
                for d in self.devices.values():
                    group = CpuGroup(CGROUP_CPU / f"{PREFIX}-{self.tag}" / d.name, d.share, self.realtime)
                    self._groups[d.name] = group.create()
            if self.shaped:
                with open("/tmp/splitc-emu.lock", "w") as lock:  # the subnet is picked and taken atomically
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    self._network()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _network(self) -> None:
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
        k = next((k for k in range(1, 255) if f" 10.215.{k}." not in used), None)
        if k is None:
            raise SplitcError("emulated cluster: no free 10.215.x.0/24 subnet (remove stale clusters)")
        br, up = f"{PREFIX}-{self.tag}-br", self._ifx
        self._namespaces.append(br)
        nsx = ["ip", "netns", "exec", br]
        cmds = [["ip", "netns", "add", br], nsx + ["ip", "link", "add", "br0", "type", "bridge"],
                nsx + ["ip", "link", "set", "br0", "up"], nsx + ["ip", "link", "set", "lo", "up"],
                ["ip", "link", "add", f"{up}u0", "type", "veth", "peer", "name", f"{up}u1"],
                ["ip", "link", "set", f"{up}u1", "netns", br], nsx + ["ip", "link", "set", f"{up}u1", "master", "br0", "up"],
                ["ip", "addr", "add", f"10.215.{k}.1/24", "dev", f"{up}u0"], ["ip", "link", "set", f"{up}u0", "up"]]
        if self.lan_bps:  # the hub's uplink, both ways: every transfer of the cluster shares it
            cmds += [_tbf(f"{up}u0", self.lan_bps), _tbf(f"{up}u1", self.lan_bps, br)]
        for d in self.devices.values():
            if d.port_bps is None:
                continue
            d.netns, d.ip = f"{PREFIX}-{self.tag}-{d.index}", f"10.215.{k}.{10 + d.index}"
            self._namespaces.append(d.netns)
            a, b, dx = f"{up}d{d.index}a", f"{up}d{d.index}b", ["ip", "netns", "exec", d.netns]
            cmds += [["ip", "netns", "add", d.netns], ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                     ["ip", "link", "set", a, "netns", br], ["ip", "link", "set", b, "netns", d.netns],
                     nsx + ["ip", "link", "set", a, "master", "br0", "up"],
                     dx + ["ip", "addr", "add", f"{d.ip}/24", "dev", b], dx + ["ip", "link", "set", b, "up"],
                     dx + ["ip", "link", "set", "lo", "up"],
                     _tbf(a, d.port_bps, br), _tbf(b, d.port_bps, d.netns)]  # to the device, from the device
        for cmd in cmds:
            _run(cmd)

    def close(self) -> None:
        """Stop every process, proxy, namespace, veth and cgroup of the cluster (idempotent, never raises)."""
        procs = [p for ps in self.processes.values() for p in ps] + self._proxies
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            deadline = time.monotonic() + 2
            for p in procs:
                try:
                    p.wait(max(0.01, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self._namespaces):  # devices first, then the bridge (with the uplink's far end)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout.split()
            kill_pids([int(p) for p in pids])
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if self._namespaces:
            subprocess.run(["ip", "link", "del", f"{self._ifx}u0"], capture_output=True, check=False)
        self._namespaces.clear()
        if self._joined:  # every thread back to the normal scheduler, then out of the group
            for tid in os.listdir("/proc/self/task"):
                try:
                    os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
                except OSError:
                    pass
            (CGROUP_CPU / "cgroup.procs").write_text(str(os.getpid()))
            self._joined = False
        for group in self._groups.values():
            group.remove()
        self._groups.clear()

    # --- processes
    def spawn(self, name: str, argv: list[str], port: int | None = 7070, wait_s: float = 60.0, **popen) -> tuple[str, int] | None:
        """Start ``argv`` on device ``name`` (its namespace and cgroup); ``{host}`` and ``{port}`` in argv become the
        address it should listen at. With a port, wait until it listens and return where the hub reaches it."""
        d = self._device(name)
        listen = port if port is None or d.netns else _free_port()
        argv = [str(a).replace("{host}", d.ip).replace("{port}", str(listen)) for a in argv]
        group = self._groups.get(name)
        cmd = (["ip", "netns", "exec", d.netns] if d.netns else []) + argv
        cmd = group.wrap(cmd) if group else cmd  # joined before `ip netns exec`, which hides /sys/fs/cgroup
        proc = subprocess.Popen(cmd, start_new_session=True, **popen)
        self.processes[name].append(proc)
        if listen is None:
            return None
        deadline = time.monotonic() + wait_s
        while not _listening(proc.pid, listen, d.netns):
            if proc.poll() is not None:
                raise SplitcError(f"emulated device {name}: `{' '.join(argv)}` exited with {proc.returncode} before listening on port {listen}")
            if time.monotonic() > deadline:
                raise SplitcError(f"emulated device {name}: `{' '.join(argv)}` did not listen on port {listen} within {wait_s:g} s")
            time.sleep(0.05)
        rate = None if self.shaped or d.port_bps is None else min(d.port_bps, self.lan_bps or math.inf)
        if d.rtt_s == 0 and rate is None:
            return d.ip, listen
        return "127.0.0.1", self._proxy(d.ip, listen, d.rtt_s / 2, rate)

    def _proxy(self, host: str, port: int, delay_s: float, bps: float | None) -> int:
        cmd = [sys.executable, "-m", "splitc.tools.clusteremu", "proxy", host, str(port), repr(delay_s), repr(bps or 0)]
        group = self._groups.get(self.proxies_on)
        proc = subprocess.Popen(group.wrap(cmd) if group else cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._proxies.append(proc)
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise SplitcError(f"emulated cluster: the delay proxy to {host}:{port} did not start")
        return int(line)

    def join(self, name: str) -> None:
        """Run this process (the hub) in device ``name``'s cgroup until the cluster closes; real-time: this thread
        and the threads it starts from now on run SCHED_RR (call it before starting any)."""
        group = self._groups.get(self._device(name).name)
        if group is not None:
            group.attach()
            self._joined = True
            if group.realtime:
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))

    def kill(self, name: str) -> None:
        """The device leaves: its processes are killed at once (SIGKILL)."""
        for p in self.processes[self._device(name).name]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def _device(self, name: str) -> Device:
        if name not in self.devices:
            raise SplitcError(f"emulated cluster has no device {name!r}; it has {', '.join(self.devices)}")
        return self.devices[name]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pid: int, port: int, netns: str | None) -> bool:
    """A TCP socket in the network namespace of ``pid`` listens on ``port`` (read from /proc: no ss, no root)."""
    try:
        if netns and os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(f"/run/netns/{netns}").st_ino:
            return False  # `ip netns exec` has not entered the namespace yet
    except OSError:
        return False
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return False
        if any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows):
            return True
    return False


def _proxy_main(host: str, port: str, delay_s: str, bps: str) -> None:
    from splitc.serving.linkemu import DelayProxy

    rate = float(bps) or None
    proxy = DelayProxy((host, int(port)), float(delay_s), rate, rate)
    print(proxy.port, flush=True)
    while True:  # until the cluster's SIGTERM
        signal.pause()


if __name__ == "__main__" and sys.argv[1:2] == ["proxy"]:
    _proxy_main(*sys.argv[2:6])
