"""Inter-frame delta coding for streams: a stateful encoder/decoder pair over the wire codec.

Quantized symbols (uint8, ``bits`` wide) of frame t are sent as ``(q_t - q_{t-1}) mod 2^bits`` (exact: the
receiver adds them back mod 2^bits), which zstd codes far smaller when consecutive frames are alike. Every
``key_interval``-th frame, and the frame after the receiver asks for one, is a key frame (symbols as they
are). Tensors that are not uint8 symbols (fp32 results, a dynamic scale) are always sent whole.

A lost or reordered frame breaks the chain: the decoder raises :class:`StreamGap` (a CodecError) for every
delta frame until the next key frame, and the receiver asks the sender for one (``encoder.request_key()``).
"""

from __future__ import annotations

import numpy as np

from splitc.runtimes.wire import CodecError, decode, encode


RESYNC = "request a key frame"  # ends every StreamGap message: the receiver's word for "resync"


class StreamGap(CodecError):
    """A delta frame whose reference frame this decoder does not hold: request a key frame."""


def _mask(bits: int) -> np.uint8:
    return np.uint8((1 << bits) - 1)


class DeltaEncoder:
    def __init__(self, bits: dict[str, int] | None = None, key_interval: int = 30, plan: str | None = None, level: int = 3,
                 entropy: str | dict[str, str] = "zstd", smaller: bool = False):
        """``smaller``: a delta frame that codes larger than the frame itself (a scene cut, unrelated frames) is sent
        as a key frame instead (both are coded: one more zstd pass per frame)."""
        self.bits = dict(bits or {})
        self.smaller = smaller
        self.key_interval = max(1, key_interval)
        self.plan, self.level, self.entropy = plan, level, entropy
        self.frame = -1
        self.last_key = -1  # the last key frame sent
        self.prev: dict[str, np.ndarray] = {}
        self._force_key = True

    def request_key(self) -> None:
        """The receiver lost the chain: make the next frame a key frame."""
        self._force_key = True

    def encode(self, tensors: dict[str, np.ndarray]) -> bytes:
        self.frame += 1
        key = self._force_key or self.frame % self.key_interval == 0
        self._force_key = False
        if key:
            self.last_key = self.frame
        send, delta = {}, set()
        for name, arr in tensors.items():
            arr = np.asarray(arr)
            prev = self.prev.get(name)
            if not key and arr.dtype == np.uint8 and arr.ndim and prev is not None and prev.shape == arr.shape:
                send[name] = np.asarray((arr - prev) & _mask(self.bits.get(name, 8)), np.uint8)  # wraps mod 256
                delta.add(name)
            else:
                send[name] = arr
            if arr.dtype == np.uint8:
                self.prev[name] = arr.copy()
        payload = encode(send, self.level, bits=self.bits, plan=self.plan, entropy=self.entropy, frame=self.frame, key=key,
                         delta=delta)
        if delta and self.smaller:
            whole = encode({n: np.asarray(a) for n, a in tensors.items()}, self.level, bits=self.bits, plan=self.plan,
                           entropy=self.entropy, frame=self.frame, key=True)
            if len(whole) < len(payload):
                self.last_key = self.frame
                return whole
        return payload


class DeltaDecoder:
    def __init__(self, expected: dict[str, tuple], plan: str | None = None):
        self.expected = expected
        self.plan = plan
        self.frame: int | None = None
        self.prev: dict[str, np.ndarray] = {}

    def decode(self, payload: bytes) -> dict[str, np.ndarray]:
        header: dict = {}
        out = decode(payload, self.expected, plan=self.plan, header_out=header)
        frame, key, delta = header["frame"], header["key"], header["delta"]
        if delta and (key or self.frame is None or frame != self.frame + 1):
            last = "none" if self.frame is None else self.frame
            self.frame = None  # the chain is broken until a key frame
            raise StreamGap(f"frame {frame} is a delta on frame {frame - 1}, but the last frame decoded here is {last}:"
                            " request a key frame")
        result = {}
        for name, arr in out.items():
            if name in delta:
                prev = self.prev.get(name)
                if prev is None or arr.dtype != np.uint8:
                    self.frame = None
                    raise StreamGap(f"tensor '{name}': delta without a reference: request a key frame")
                bits = self.expected[name][2] if len(self.expected[name]) > 2 else 8
                arr = np.asarray((prev + arr) & _mask(bits), np.uint8)
            result[name] = arr
            if arr.dtype == np.uint8:
                self.prev[name] = arr
        self.frame = frame
        return result
