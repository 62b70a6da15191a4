"""The server's side of remote delta coding: one DeltaDecoder per (stream, hop), frames decoded in order.

A device streaming with delta coding (``RemoteSplitModel.stream``) names its stream with the OIP sequence extension
(``sequence_id`` in the request parameters) and sends frame t of each hop as a difference to frame t-1
(splitc/runtimes/delta.py). Its requests travel on up to K connections at once and are served by several threads,
so frame t+1 may be read before frame t: a delta frame waits (at most ``wait_s``) until its reference frame has
been decoded. A frame whose reference never arrives (lost, failed, or overtaken by a key frame) is a StreamGap:
a 400 the client answers by computing that frame itself and sending a key frame next (resync).

Streams are untrusted and bounded: at most ``max_streams`` (the least recently used is dropped; its device
resyncs with a key frame), each holding one frame of symbols per hop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from splitc.runtimes.delta import DeltaDecoder, StreamGap
from splitc.runtimes.segment import hop_codec
from splitc.runtimes.wire import CodecError, read_header

MAX_SEQUENCE = (1 << 63) - 1


def sequence_id(parameters) -> int | None:
    """The stream a request belongs to (OIP sequence extension), or None for a stateless request. ``parameters``:
    a REST request's dict, or a gRPC request's map of InferParameter."""
    if parameters is not None and not isinstance(parameters, dict) and hasattr(parameters, "items"):
        from kserve.protocol.infer_type import to_http_parameters

        parameters = to_http_parameters(parameters)
    seq = (parameters or {}).get("sequence_id") if isinstance(parameters or {}, dict) else None
    if seq is None or seq == 0:
        return None
    if type(seq) is not int or not 0 < seq <= MAX_SEQUENCE:
        raise CodecError(f"sequence_id {str(seq)[:30]!r} is not a stream number (1 .. 2^63-1)")
    return seq


class _Stream:
    def __init__(self):
        self.cond = threading.Condition()
        self.decoders: dict[str, DeltaDecoder] = {}


class Streams:
    def __init__(self, fingerprint: str, max_streams: int = 64, wait_s: float = 1.0):
        self.fingerprint, self.max_streams, self.wait_s = fingerprint, max_streams, wait_s
        self._streams: OrderedDict[int, _Stream] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, seq: int) -> _Stream:
        with self._lock:
            stream = self._streams.pop(seq, None) or _Stream()
            self._streams[seq] = stream  # most recently used last
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
            return stream

    def decode(self, seq: int, hop: dict, payload: bytes) -> dict[str, np.ndarray]:
        """One hop's tensors from a frame of stream ``seq``, after the frame before it (or a key frame)."""
        _, header, _ = read_header(payload)  # checksum and frame number before anything waits on them
        frame, key = header["frame"], header["key"]
        stream = self._get(seq)
        with stream.cond:
            dec = stream.decoders.get(hop["tensor"])
            if dec is None:
                dec = stream.decoders[hop["tensor"]] = DeltaDecoder(hop_codec(hop)[2], self.fingerprint)

            def ready() -> bool:  # its reference is decoded, or can no longer come (a later frame went first)
                return key or dec.frame is not None and dec.frame >= frame - 1

            if not stream.cond.wait_for(ready, timeout=self.wait_s):
                raise StreamGap(f"stream {seq}: frame {frame} is a delta on frame {frame - 1}, which did not arrive within"
                                f" {self.wait_s:g} s: request a key frame")
            if not key and dec.frame >= frame:  # overtaken by a later (key) frame: the chain goes on from that one
                raise StreamGap(f"stream {seq}: frame {frame} is a delta on frame {frame - 1}, but frame {dec.frame} was"
                                " decoded already: request a key frame")
            try:
                return dec.decode(payload)
            finally:
                stream.cond.notify_all()
