"""The worker of one cluster device: loads plan parts (only files inside its output folder) and runs them on request.

    python -m splitc.runtimes.cluster_worker --listen 127.0.0.1:0 --dir out/ [--threads 1]

It prints ``splitc-worker listening on HOST:PORT`` once bound, then serves the hub over TCP only (it may run in
its own network namespace under a CPU quota: no shared memory). Every message, both ways, is one frame::

    u32 length (LE) of the rest | u32 header length (LE) | header (JSON) | body (a splitc wire payload, or empty)

Requests: ``{"op": "load", "id": n, "file": "parts/x.onnx", "sha256": digest}`` (the file's bytes are checked against
the plan's digest before they are loaded) -> ``{"id": n, "ok": true, "inputs": [...],
"outputs": [...]}`` (tensor specs; a dimension onnxruntime does not know is null) and ``{"op": "run", "id": n,
"file": ..., "tag": frame, "codec": "fp32"|"int8"}`` + the inputs of a part loaded before (``codec``: how both
ways are coded, splitc/runtimes/cluster_codec.py; default fp32) -> ``{"id": n, "ok": true}`` + its outputs. A request that fails
is answered ``{"id": n, "ok": false, "error": "one line"}``; a frame that does not parse closes the connection.
Requests on one connection run in order (a device computes one part at a time); tensors are checked by
splitc/runtimes/wire.py against the part's own input specs before anything is allocated.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.cluster_codec import check, pack, unpack
from splitc.runtimes.files import sha256_file
from splitc.runtimes.jsonguard import JSONLimitError, loads
from splitc.runtimes.wire import MAX_ELEMENTS, CodecError, read_header

MAX_MESSAGE = 1 << 31  # one frame: a part's tensors (wire.py bounds each tensor to 2^31 elements as well)
MAX_HEADER = 1 << 16
_U32 = struct.Struct("<I")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool", "tensor(int16)": "int16", "tensor(uint16)": "uint16"}


class ProtocolError(ConnectionError):
    """A frame that does not parse: the connection it came on is closed."""


# --------------------------------------------------------------------------- framing (both ends)

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, held only as they arrive: a length that lies costs no memory until the bytes come."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send(sock: socket.socket, header: dict, body: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(b"".join([_U32.pack(_U32.size + len(head) + len(body)), _U32.pack(len(head)), head, body]))


def recv(sock: socket.socket) -> tuple[dict, bytes]:
    (n,) = _U32.unpack(_recv_exact(sock, _U32.size))
    if not _U32.size <= n <= MAX_MESSAGE:
        raise ProtocolError(f"frame of {n} bytes (at most {MAX_MESSAGE})")
    data = _recv_exact(sock, n)
    (h,) = _U32.unpack_from(data)
    if h > min(MAX_HEADER, n - _U32.size):
        raise ProtocolError(f"frame header of {h} bytes runs past its frame or the {MAX_HEADER}-byte limit")
    try:
        header = loads(data[_U32.size:_U32.size + h], max_bytes=MAX_HEADER, max_depth=6)
    except JSONLimitError as e:
        raise ProtocolError(f"frame header: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    return header, data[_U32.size + h:]


def expected(specs: list[dict], payload: bytes) -> dict[str, tuple]:
    """wire.decode's expectations from a part's specs; a dimension the part leaves open (null) is read off the
    payload's header, bounded like any wire tensor."""
    _, header, _ = read_header(payload)
    shapes = {e.get("name"): e.get("shape") for e in header["tensors"] if isinstance(e, dict)}
    out = {}
    for s in specs:
        got = shapes.get(s["name"])
        shape = list(s["shape"])
        if any(d is None for d in shape):
            if not isinstance(got, list) or len(got) != len(shape):
                raise CodecError(f"tensor '{s['name']}': payload shape {got!r} does not have rank {len(shape)}")
            shape = [g if d is None else d for d, g in zip(shape, got)]
            if not all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
                raise CodecError(f"tensor '{s['name']}': payload shape {got!r} is not a shape of at most {MAX_ELEMENTS} elements")
        out[s["name"]] = (s["dtype"], tuple(shape))
    return out


# --------------------------------------------------------------------------- the parts of one device

class Parts:
    """onnxruntime sessions of the part files under ``folder``, loaded once each, on request."""

    def __init__(self, folder: str | Path, threads: int = 1):
        self.folder, self.base, self.threads = Path(folder), Path(folder).resolve(), threads
        self._sessions: dict[str, tuple] = {}
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()

    def path(self, file) -> Path:
        if not isinstance(file, str) or not file or len(file) > 4096 or "\0" in file or Path(file).is_absolute():
            raise SplitcError(f"part {str(file)[:80]!r} is not a file name relative to the output folder")
        resolved = (self.folder / file).resolve()
        if not resolved.is_relative_to(self.base):
            raise SplitcError(f"part {file[:80]!r} leaves the output folder {self.folder}: refused")
        if not resolved.is_file():
            raise SplitcError(f"part {file[:80]!r}: no such file in {self.folder}")
        return resolved

    def load(self, file, sha256=None) -> tuple:
        """The part's (session, input specs, output specs); ``sha256``: the plan's digest of the file, checked
        against the bytes here before they are loaded (a part swapped after compile is refused)."""
        path = self.path(file)  # checked on every request, also for a part loaded before
        with self._lock:
            if file in self._sessions and sha256 in (None, self._digests[file]):
                return self._sessions[file]
            digest = sha256_file(path)
            if sha256 is not None and digest != sha256:
                raise SplitcError(f"part {file}: its sha256 is not the plan's {str(sha256)[:16]}...; recompile, or restore the file")
            # onnxruntime: only once a part is asked for
            from splitc.runtimes.ort import session

            sess = session(path, threads=self.threads, spinning=False)
            specs = tuple([_spec(a) for a in group] for group in (sess.get_inputs(), sess.get_outputs()))
            self._sessions[file], self._digests[file] = (sess, *specs), digest
            return self._sessions[file]

    def loaded(self, file) -> tuple:
        self.path(file)
        with self._lock:
            if file not in self._sessions:
                raise SplitcError(f"part {file[:80]!r} is not loaded here; send a load request first")
            return self._sessions[file]

    def run(self, file, payload: bytes, tag: int, codec: str = "fp32") -> bytes:
        sess, inputs, outputs = self.loaded(file)
        check(codec)
        feeds = unpack(payload, expected(inputs, payload), codec)
        results = sess.run([o["name"] for o in outputs], feeds)
        return pack({o["name"]: np.asarray(r) for o, r in zip(outputs, results)}, codec, tag)


def _spec(arg) -> dict:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise SplitcError(f"part tensor '{arg.name}' has type {arg.type}, which the cluster runtime does not carry")
    return {"name": arg.name, "dtype": dtype, "shape": [d if type(d) is int and d >= 0 else None for d in arg.shape]}


def answer(parts: Parts, header: dict, body: bytes) -> tuple[dict, bytes]:
    """The reply to one request; a failure is a one-line error, never a dropped connection."""
    rid, op = header.get("id"), header.get("op")
    try:
        if op == "load":
            _, inputs, outputs = parts.load(header.get("file"), header.get("sha256"))
            return {"id": rid, "ok": True, "inputs": inputs, "outputs": outputs}, b""
        if op == "run":
            tag = header.get("tag", 0)
            if type(tag) is not int or not 0 <= tag < 1 << 62:
                raise SplitcError(f"frame tag {str(tag)[:40]!r} is not an integer in [0, 2^62)")
            return {"id": rid, "ok": True, "tag": tag}, parts.run(header.get("file"), body, tag, header.get("codec", "fp32"))
        if op == "ping":
            return {"id": rid, "ok": True}, b""
        raise SplitcError(f"unknown request {str(op)[:40]!r} (load, run, ping)")
    except (SplitcError, CodecError) as e:
        return {"id": rid, "ok": False, "error": str(e)}, b""
    except Exception as e:  # noqa: BLE001 - onnxruntime's run errors are not exported; the hub gets one line
        text = str(e).strip().splitlines()
        return {"id": rid, "ok": False, "error": f"{type(e).__name__}: {text[0][:300] if text else ''}"}, b""


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                send(self.request, *answer(self.server.parts, *recv(self.request)))
        except (ConnectionError, OSError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], parts: Parts):
        self.parts = parts
        super().__init__(listen, _Handler)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SplitcError(f"address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splitc.runtimes.cluster_worker", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any free port)")
    ap.add_argument("--dir", required=True, help="the compiled output folder; only part files inside it are loaded")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per part (0: all cores)")
    args = ap.parse_args(argv)
    try:
        if not Path(args.dir).is_dir():
            raise SplitcError(f"{args.dir}: no such folder")
        if not 0 <= args.threads <= 1024:
            raise SplitcError(f"--threads {args.threads} is not in [0, 1024]")
        server = Server(parse_address(args.listen), Parts(args.dir, args.threads))
    except (SplitcError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"splitc-worker listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
