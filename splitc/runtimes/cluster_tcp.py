"""The embedded cluster engine: one worker process per device (splitc/runtimes/cluster_worker.py), reached over TCP.

``TcpEngine(folder, workers={"pi/0": "10.0.0.2:7000", ...})`` connects to workers started elsewhere (real
devices, or the emulated cluster's network namespaces); ``spawn=True`` starts one local process per device.
Requests are pipelined on one connection per device; a reply is matched to its request by id. A connection
that breaks fails every request still on it with WorkerLost: the runner (splitc/runtimes/cluster.py) re-runs
those frames on the plan for the devices left.
"""

from __future__ import annotations

import itertools
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.cluster_codec import pack, unpack
from splitc.runtimes.cluster_worker import expected, parse_address, recv, send
from splitc.runtimes.wire import CodecError


class WorkerLost(ConnectionError):
    """A device that stopped answering (connection error, timeout, actor death)."""

    def __init__(self, device: str, why: str):
        super().__init__(f"{device}: {why}")
        self.device, self.why, self.at = device, why, time.perf_counter()


class _Conn:
    """One device's connection: requests in flight by id, answered by a reader thread."""

    def __init__(self, device: str, address: str, connect_s: float):
        self.device = device
        try:
            self.sock = socket.create_connection(parse_address(address), timeout=connect_s)
        except OSError as e:
            raise SplitcError(f"cluster device {device}: cannot reach its worker at {address} ({e.strerror or e}); start it"
                              f" with python -m splitc.runtimes.cluster_worker --listen {address} --dir OUT/") from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending: dict[int, tuple[Future, object]] = {}
        self.specs: dict[str, tuple[list, list]] = {}  # part file -> (inputs, outputs) as the worker reported them
        self.dead: str | None = None
        self.bytes_sent = self.bytes_received = 0  # wire payloads of run requests and their answers
        self._ids, self._lock, self._send = itertools.count(), threading.Lock(), threading.Lock()
        threading.Thread(target=self._read, name=f"splitc-cluster-{device}", daemon=True).start()

    def request(self, header: dict, body: bytes, finish) -> Future:
        fut: Future = Future()
        with self._lock:
            if self.dead:
                fut.set_exception(WorkerLost(self.device, self.dead))
                return fut
            rid = next(self._ids)
            self.pending[rid] = (fut, finish)
            self.bytes_sent += len(body)
        try:
            with self._send:
                send(self.sock, {**header, "id": rid}, body)
        except OSError as e:
            self.fail(f"connection lost ({e.strerror or e})")
        return fut

    def _read(self) -> None:
        try:
            while True:
                header, body = recv(self.sock)
                with self._lock:
                    entry = self.pending.pop(header.get("id"), None) if isinstance(header.get("id"), int) else None
                if entry is None:
                    raise ConnectionError(f"answer to no request ({str(header.get('id'))[:20]})")
                fut, finish = entry
                with self._lock:
                    self.bytes_received += len(body)
                if header.get("ok") is not True:
                    error = header.get("error")
                    fut.set_exception(SplitcError(f"cluster device {self.device}: {str(error)[:400] if error else 'request failed'}"))
                    continue
                try:
                    fut.set_result(finish(header, body))
                except (CodecError, SplitcError) as e:
                    fut.set_exception(SplitcError(f"cluster device {self.device}: {e}"))
        except (ConnectionError, OSError) as e:
            self.fail(f"connection lost ({e.strerror if isinstance(e, OSError) and e.strerror else e})")

    def fail(self, why: str) -> None:
        with self._lock:
            if self.dead:
                return
            self.dead, pending, self.pending = why, self.pending, {}
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for fut, _ in pending.values():
            fut.set_exception(WorkerLost(self.device, why))


class TcpEngine:
    """Runs parts on cluster_worker processes; ``workers``: slot -> "host:port", or ``spawn``: local processes."""

    def __init__(self, folder: str | Path, workers: dict[str, str] | None = None, spawn: bool = False,
                 threads: int = 1, connect_s: float = 10.0):
        if (workers is None) == (not spawn):
            raise SplitcError("cluster runtime: give the workers' addresses (workers={slot: 'host:port'}) or spawn=True, not both")
        self.folder, self.addresses, self.spawn, self.threads, self.connect_s = Path(folder), dict(workers or {}), spawn, threads, connect_s
        self.processes: dict[str, subprocess.Popen] = {}
        self.conns: dict[str, _Conn] = {}

    def start(self, devices: list[str]) -> None:
        missing = [d for d in devices if d not in self.addresses] if not self.spawn else []
        if missing:
            raise SplitcError(f"cluster runtime: no worker address for device {missing[0]}; give workers={{'{missing[0]}': 'host:port', ...}}")
        try:
            for device in devices:
                address = self._spawn(device) if self.spawn else self.addresses[device]
                self.conns[device] = _Conn(device, address, self.connect_s)
        except BaseException:
            self.close()
            raise

    def _spawn(self, device: str) -> str:
        cmd = [sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "127.0.0.1:0",
               "--dir", str(self.folder), "--threads", str(self.threads)]
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes it; not a pipe: a worker that writes much must never block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        self.processes[device] = proc
        ready, _, _ = select.select([proc.stdout], [], [], 60.0)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("splitc-worker listening on "):
            proc.kill()
            proc.wait()
            errors.seek(0)
            err = errors.read().decode(errors="replace").strip().splitlines()
            raise SplitcError(f"cluster device {device}: its worker did not start ({err[-1][:300] if err else 'no answer in 60 s'})")
        self.addresses[device] = line.rsplit(" ", 1)[1]
        return self.addresses[device]

    def load(self, device: str, file: str, sha256: str | None = None) -> Future:
        conn = self.conns[device]

        def finish(header, _body):
            conn.specs[file] = (header.get("inputs"), header.get("outputs"))

        return conn.request({"op": "load", "file": file, "sha256": sha256}, b"", finish)

    def submit(self, device: str, file: str, feeds: dict[str, np.ndarray], tag: int, codec: str = "fp32") -> Future:
        """Run ``file`` on ``device``; ``codec`` (splitc/runtimes/cluster_codec.py) codes the inputs and outputs."""
        conn = self.conns[device]
        outputs = conn.specs[file][1]

        def finish(_header, body):
            return unpack(body, expected(outputs, body), codec)

        try:
            body = pack(feeds, codec, tag)
        except CodecError as e:
            raise SplitcError(f"cluster device {device}: {e}") from None
        header = {"op": "run", "file": file, "tag": tag} | ({"codec": codec} if codec != "fp32" else {})
        return conn.request(header, body, finish)

    def wire_bytes(self) -> dict[str, tuple[int, int]]:
        """Per device: (payload bytes sent to it, received from it) by run requests so far."""
        return {d: (c.bytes_sent, c.bytes_received) for d, c in self.conns.items()}

    def add(self, device: str, address: str | None = None) -> None:
        """Connect to ``device`` again: at ``address``, where it was, or (spawn) in a new local process."""
        old = self.processes.get(device)
        if old is not None:
            old.kill()
            old.wait()
            if old.stdout:
                old.stdout.close()
        if address is None and self.spawn:
            address = self._spawn(device)
        address = address or self.addresses.get(device)
        if address is None:
            raise SplitcError(f"cluster runtime: no worker address for device {device}; give one to join it")
        self.addresses[device] = address
        self.conns[device] = _Conn(device, address, self.connect_s)

    def alive(self, device: str, timeout_s: float) -> bool:
        """Whether ``device``'s worker answers a ping on a connection of its own within ``timeout_s`` (it serves each
        connection in a thread: a worker busy with a long part still answers; a hung or stopped one does not)."""
        try:
            with socket.create_connection(parse_address(self.addresses[device]), timeout=timeout_s) as sock:
                send(sock, {"op": "ping", "id": 0})
                return recv(sock)[0].get("ok") is True
        except (OSError, ConnectionError, KeyError):
            return False

    def drop(self, device: str, why: str) -> None:
        """Give up on ``device``: its requests fail with WorkerLost; a process this engine started is stopped."""
        if device in self.conns:
            self.conns[device].fail(why)
        proc = self.processes.get(device)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def close(self) -> None:
        for device in list(self.conns):
            self.conns[device].fail("closed")
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
