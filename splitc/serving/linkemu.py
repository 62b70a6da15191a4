"""Emulated links for tests and benchmarks: rate by the kernel (tc tbf on a veth pair into a network namespace, as
root), delay by a small userspace TCP proxy (this kernel has no netem). Without root, the proxy does the rate too.

    with Link(up_bps=5.85e6, down_bps=13.76e6, rtt_s=0.05) as link:   # link.host: where the server binds
        server listening on (link.host, port) inside link.netns (``link.exec_prefix`` runs a command there)
        proxy = link.proxy(port)                                       # the device connects to 127.0.0.1:proxy.port

The proxy holds every chunk for rtt/2 in each direction (order kept), so a request/response costs one RTT
plus the transfers, as on a real path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

NS_ADDR, HOST_ADDR = "10.213.7.2", "10.213.7.1"


def can_shape() -> bool:
    """Root, ip and tc present, and namespaces work (CI and this machine as root)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return False
    name = f"splitc-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


def _tbf(dev: str, bps: float, netns: str | None = None) -> list[str]:
    # the bucket's depth is sent at line rate after a pause: keep it to about one packet (and >= rate / HZ, HZ <= 1000,
    # or tbf cannot reach the rate), so a payload of a few KB pays its bytes / rate as on the real link
    burst = max(1600, int(bps / 8 / 250 * 1.1))
    cmd = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(bps)}bit", "burst", str(burst), "latency", "2s"]
    return (["ip", "netns", "exec", netns] if netns else []) + cmd


class Link:
    def __init__(self, up_bps: float, down_bps: float, rtt_s: float, shape: bool | None = None):
        self.up_bps, self.down_bps, self.rtt_s = float(up_bps), float(down_bps), float(rtt_s)
        self.shaped = can_shape() if shape is None else shape
        self.netns = f"splitc-{os.getpid()}-{id(self) % 10000}" if self.shaped else None
        self.host = NS_ADDR if self.shaped else "127.0.0.1"
        self._proxies: list[DelayProxy] = []

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def __enter__(self) -> "Link":
        if self.shaped:
            ns, a, b = self.netns, f"vs{os.getpid() % 100000}d", f"vs{os.getpid() % 100000}s"
            cmds = [["ip", "netns", "add", ns], ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                    ["ip", "link", "set", b, "netns", ns], ["ip", "addr", "add", f"{HOST_ADDR}/30", "dev", a],
                    ["ip", "link", "set", a, "up"], ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", b],
                    ["ip", "netns", "exec", ns, "ip", "link", "set", b, "up"], ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
                    _tbf(a, self.up_bps), _tbf(b, self.down_bps, ns)]
            self._veth = a
            for cmd in cmds:
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return self

    def __exit__(self, *exc) -> None:
        for p in self._proxies:
            p.close()
        if self.netns:
            subprocess.run(["ip", "link", "del", self._veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def set_rate(self, up_bps: float, down_bps: float, rtt_s: float | None = None) -> None:
        """Change the link mid-run (a bandwidth drop): tbf replaced in place, or the proxies' rates."""
        self.up_bps, self.down_bps = float(up_bps), float(down_bps)
        if self.shaped:
            for cmd in (_tbf(self._veth, self.up_bps), _tbf(f"{self._veth[:-1]}s", self.down_bps, self.netns)):
                subprocess.run(cmd, check=True, capture_output=True)
        for p in self._proxies:
            p.rates = (None, None) if self.shaped else (self.up_bps, self.down_bps)
            if rtt_s is not None:
                p.delay_s = rtt_s / 2

    def wire_bytes(self) -> tuple[int, int] | None:
        """(up, down) bytes the veth pair has carried so far, every header included (what tbf paces); None unshaped."""
        if not self.shaped:
            return None
        stats = Path(f"/sys/class/net/{self._veth}/statistics")
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())

    def proxy(self, port: int, at_server: bool = False) -> "DelayProxy":
        """A proxy to (host, port): delay rtt/2 each way; the rate too when the kernel does not shape. The device
        connects to (proxy.host, proxy.port): 127.0.0.1, or with ``at_server`` (shaped links only) the proxy listens
        in the server's namespace, behind the shaped veth, so the device's own TCP sees the link's rate (its
        acknowledgements come back at the pace tbf lets the bytes through, as from a real server)."""
        rates = (None, None) if self.shaped else (self.up_bps, self.down_bps)
        netns = self.netns if at_server and self.shaped else None
        p = DelayProxy((self.host, port), self.rtt_s / 2, *rates, netns=netns)
        self._proxies.append(p)
        return p


def _enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (setns(2); os.setns is Python >= 3.12)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/var/run/netns/{name}") as f:
        if libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into network namespace {name} failed")


class DelayProxy:
    """TCP proxy in its own thread: every chunk is forwarded ``delay_s`` after it arrived (and, when given, no
    faster than ``bps``), in order, in each direction."""

    def __init__(self, target: tuple[str, int], delay_s: float, up_bps: float | None = None, down_bps: float | None = None,
                 netns: str | None = None):
        self.target, self.delay_s, self.rates, self.netns = target, delay_s, (up_bps, down_bps), netns
        self.host = NS_ADDR if netns else "127.0.0.1"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        if self.netns:
            _enter_netns(self.netns)  # this thread only: its sockets (listening and upstream) live in the namespace
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w, 0), self._pipe(up_r, writer, 1),
                             return_exceptions=True)

    async def _pipe(self, reader, writer, direction: int) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            free_at = 0.0  # when the emulated wire is free again (rate limiting without the kernel)
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                bps = self.rates[direction]  # read per chunk: set_rate applies to open connections
                if bps:
                    free_at = max(free_at, due) + len(data) * 8 / bps
                    due = free_at
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        task = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, data))  # delay_s read per chunk too
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((0.0, None))
        await task

    def close(self) -> None:
        def stop():
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self._thread.join(5)
