"""What the remote client (splitc/runtimes/remote.py) keeps beside the requests themselves: failure classes and
counts, and the socket-level view of its connections (TCP_NODELAY, Linux TCP_INFO progress)."""

from __future__ import annotations

import socket
import struct
from collections import Counter
from dataclasses import dataclass, field

from splitc.runtimes.delta import RESYNC


class RemoteFailure(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def classify(err: BaseException, status: str | None = None) -> RemoteFailure:
    """One failure class per cause the client reports: refused, timeout, network, unauthorized, too large,
    rejected (4xx: another plan, a corrupt payload), server error (5xx)."""
    if isinstance(err, RemoteFailure):
        return err
    reason = (str(err).splitlines() or [type(err).__name__])[0][:300]
    if status and status.isdigit():
        code = int(status)
        kind = {401: "unauthorized", 404: "unknown model", 413: "too large"}.get(code)
        kind = kind or ("stream gap" if code == 400 and RESYNC in reason else None)
        kind = kind or ("server error" if code >= 500 else "rejected")
        return RemoteFailure(kind, f"HTTP {code}: {reason}")
    if isinstance(err, ConnectionRefusedError):
        return RemoteFailure("refused", reason)
    if isinstance(err, TimeoutError) or "timeout" in type(err).__name__.lower() or "timed out" in reason:
        return RemoteFailure("timeout", reason or "timed out")
    return RemoteFailure("network", f"{type(err).__name__}: {reason}")


@dataclass
class RemoteStats:
    remote: int = 0  # frames whose server stages ran on the server
    local: int = 0  # frames computed locally in full (fallback)
    failures: Counter = field(default_factory=Counter)  # failure class -> frames
    first: dict[str, str] = field(default_factory=dict)  # failure class -> its first reason
    round_trip_s: list[float] = field(default_factory=list)  # per remote frame: request sent -> answer read
    server_s: list[float] = field(default_factory=list)  # per remote frame: decode + compute + encode on the server
    fallback_s: list[float] = field(default_factory=list)  # per local frame: its full local computation
    delta_frames: int = 0  # frames sent (stream) as differences to the frame before
    key_frames: int = 0  # frames sent whole in a delta-coded stream (the first, every key_interval-th, resyncs)

    def lines(self) -> list[str]:
        out = [f"{self.remote} frame(s) via the server, {self.local} computed locally, 0 lost"]
        if self.delta_frames or self.key_frames:
            out.append(f"delta coding: {self.delta_frames} frame(s) sent as differences, {self.key_frames} whole (key frames)")
        for kind, n in self.failures.most_common():
            out.append(f"{kind}: {n} frame(s) computed locally (first: {self.first[kind]})")
        return out


def no_delay(client) -> None:
    """TCP_NODELAY on the client's sockets: geventhttpclient writes headers and body apart, and Nagle's algorithm
    then holds the body until the server's delayed ACK (~40 ms a request on Linux). ``after_connect`` is
    geventhttpclient's hook for socket options; without it (another version) the client still works, slower.
    The socket is kept as ``client.splitc_socket`` (its acknowledged bytes: the adaptive client's uplink probe)."""
    pool = getattr(getattr(client, "_client_stub", None), "_connection_pool", None)
    if pool is not None and hasattr(pool, "after_connect"):
        def after_connect(sock):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.splitc_socket = sock

        pool.after_connect = after_connect


def tcp_progress(sock) -> tuple[int, float] | None:
    """(bytes of this TCP connection the peer has acknowledged so far, seconds since the last acknowledgement)
    from Linux's TCP_INFO (>= 4.1: ``tcpi_last_ack_recv`` ms at byte 56, ``tcpi_bytes_acked`` at byte 120 of
    ``struct tcp_info``); None where the platform does not say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    except (AttributeError, OSError):  # no socket yet, closed, or not Linux
        return None
    if len(info) < 128:
        return None
    return struct.unpack_from("=Q", info, 120)[0], struct.unpack_from("=I", info, 56)[0] / 1e3


def acked_bytes(sock) -> int | None:
    progress = tcp_progress(sock)
    return None if progress is None else progress[0]


class Done:
    """A call made now, in this thread, behind the interface of a future."""

    def __init__(self, fn, *args):
        try:
            self._value, self._error = fn(*args), None
        except Exception as err:  # noqa: BLE001 - re-raised by result()
            self._value, self._error = None, err

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value
