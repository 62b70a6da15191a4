"""The device side of a split across a network: head here, server stages behind an OIP v2 server (splitc serve).

``RemoteSplitModel(out, url)`` runs the device stages in onnxruntime, posts each boundary payload as one UINT8
tensor with the OIP binary data extension (``tritonclient[http]``: ``pip install 'splitc[remote]'``), over a
kept-alive connection per thread, and decodes the answer. No frame is lost: when the server refuses, times
out, answers 5xx or rejects the payload (another plan's fingerprint), that frame is computed locally in full
(the device keeps every part of the plan for this) and counted by failure class; the server is tried again
after a back-off that doubles up to ``backoff[1]`` and resets on the first success.

``stream()`` keeps up to K frames in flight and delta-codes each boundary tensor going up against the frame before
(splitc/runtimes/delta.py; the stream named by the OIP ``sequence_id``, the server decodes it in order:
splitc/serving/streams.py). After any frame that fails, the next frame sent is a key frame (resync); a delta frame
the server cannot place (its reference was lost) is answered 400 "stream gap" and computed here, without back-off.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.delta import DeltaEncoder
from splitc.runtimes.ort import RunResult, SplitModel
from splitc.runtimes.remote_io import (  # noqa: F401
    Done,
    RemoteFailure,
    RemoteStats,
    acked_bytes,
    classify,
    no_delay,
    tcp_progress,
)
from splitc.runtimes.segment import PAYLOAD_SUFFIX, Segment, hop_codec

INSTALL = "the remote client needs tritonclient: pip install 'splitc[remote]'"


def _tritonclient():
    try:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise SplitcError(INSTALL) from None
    return http, InferenceServerException


class RemoteSplitModel:
    """``SplitModel`` whose server stages run behind ``url`` (``http(s)://host:port``)."""

    def __init__(self, out_dir: str | Path, url: str, *, timeout: float = 2.0, token: str | None = None,
                 ca: str | None = None, backoff: tuple[float, float] = (0.25, 8.0), inflight: int = 4,
                 optimization: str = "all", threads: int = 0, local: SplitModel | None = None):
        self.local = local or SplitModel(out_dir, optimization=optimization, threads=threads, spinning=False)
        self.plan = self.local.plan
        self.segment = Segment(self.plan)
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SplitcError(f"--remote {url!r}: give http://HOST:PORT or https://HOST:PORT")
        self.url, self.https, self.ca = url, parts.scheme == "https", ca
        self.hostport = f"{parts.hostname}:{parts.port or (443 if self.https else 80)}"
        self.timeout = float(timeout)
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.backoff = backoff
        self._delay, self._retry_at = backoff[0], 0.0
        self.stats = RemoteStats()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.inflight = max(1, inflight)
        self._pool: ThreadPoolExecutor | None = None
        self._encoders: dict[str, DeltaEncoder] = {}  # per up hop while a delta-coded stream runs
        self._seq = 0  # its OIP sequence_id (0: stateless requests)
        self._last_down = 0  # bytes the last answer brought back (the adaptive client's deadline)
        self.sending: tuple | None = None  # (client, its socket's acked bytes, time) of the last request sent
        self._frames: dict[str, np.ndarray] = {}  # the uint8 frames of the current run_image call
        self.last_payloads: dict[str, bytes] | None = None  # the last stateless request's (AdaptiveRemote's probes)
        _tritonclient()  # fail now, in one line, when the extra is missing

    # ---------------------------------------------------------------- connection (one kept-alive client per thread)
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            http, _ = _tritonclient()
            client = http.InferenceServerClient(self.hostport, connection_timeout=self.timeout, network_timeout=self.timeout,
                                                ssl=self.https, ssl_options={"ca_certs": self.ca} if self.ca else None)
            no_delay(client)
            self._local.client = client
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    @property
    def last(self) -> "RemoteSplitModel":
        """The model the last frame ran on (this one; an AdaptiveRemote answers with the variant it chose)."""
        return self

    def ping(self) -> float | None:
        """Seconds for a readiness request (no payload: the RTT plus the server's least work); None when it fails."""
        t = time.perf_counter()
        try:
            ok = self._client().is_server_ready(headers=self.headers)
        except Exception:  # noqa: BLE001 - a failed ping measures nothing; frames find out the rest
            self._drop_client()
            return None
        return time.perf_counter() - t if ok else None

    # ---------------------------------------------------------------- one frame
    def run(self, feeds: dict[str, np.ndarray]) -> RunResult:
        return self._finish(feeds, self._start(feeds, threaded=False))

    def run_image(self, image) -> RunResult:
        """Run on a frame as a camera has it (a path, an HxW[xC] uint8 array, or a dict of them per input), like
        ``SplitModel.run_image``: an image input that crosses is sent as this frame compressed (JPEG per plan.json),
        not rebuilt from the normalized tensor. ``result.inputs`` holds the feeds it made."""
        from splitc.runtimes.image import run_frame

        return run_frame(self, self.local.images, self.local.inputs, image)

    def stream(self, frames, inflight: int | None = None, delta: bool = True, key_interval: int = 30):
        """Results of ``frames`` in order, with up to ``inflight`` frames' requests in flight while the device
        computes the next heads (bounded queue: the producer waits for the oldest answer). ``delta``: each boundary
        tensor going up is sent as its difference to the previous frame (a key frame every ``key_interval``)."""
        k = self.open_stream(inflight, delta, key_interval)
        pending: deque = deque()
        try:
            for feeds in frames:
                pending.append((feeds, self._start(feeds, threaded=True)))
                if len(pending) >= k:
                    yield self._finish(*pending.popleft())
            while pending:
                yield self._finish(*pending.popleft())
        finally:
            self.close_stream()

    def open_stream(self, inflight: int | None = None, delta: bool = True, key_interval: int = 30) -> int:
        """Workers for ``inflight`` requests at once and, with ``delta``, a new delta-coded stream; returns K."""
        k = inflight or self.inflight
        if self._pool is None or self._pool._max_workers < k:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="splitc-remote")
        if delta:  # (an image input crosses as its JPEG, never as a delta: a plan that sends only images is stateless)
            self._encoders = {}
            for hop in self.segment.up:
                if not self.segment.is_image(hop):
                    bits, entropy, _ = hop_codec(hop)
                    self._encoders[hop["tensor"]] = DeltaEncoder(bits, key_interval, self.segment.fingerprint, entropy=entropy,
                                                                 smaller=True)
            self._seq = (secrets.randbits(63) or 1) if self._encoders else 0
        return k

    def close_stream(self) -> None:
        self._encoders, self._seq = {}, 0

    def _start(self, feeds, threaded: bool):
        """Run the device stages before the server's and send (or, when backing off, mark the frame local)."""
        if not self.segment.remote or time.monotonic() < self._retry_at:
            return None
        result = RunResult({}, link_bytes=[{"up": 0, "down": 0} for _ in self.plan["links"]])
        stores = {t: {} for t in self.local.targets}
        stores[self.segment.device].update(feeds)
        after = self._device_stages(stores, result, before=True)
        t = time.perf_counter()
        payloads = {hop["tensor"]: self._encode(hop, stores[hop["from"]]) for hop in self.segment.up}
        result.seconds["encode"] = time.perf_counter() - t
        if self._encoders:
            enc = next(iter(self._encoders.values()))
            with self._lock:
                if enc.last_key == enc.frame:
                    self.stats.key_frames += 1
                else:
                    self.stats.delta_frames += 1
        result.bytes_up = result.link_bytes[0]["up"] = sum(map(len, payloads.values()))
        if not self._encoders:
            self.last_payloads = payloads
        if threaded:
            future = self._pool.submit(self._post, payloads, self._seq)
        else:
            future = Done(self._post, payloads, self._seq)
        frame = next(iter(self._encoders.values())).frame if self._encoders else None
        return stores, result, after, future, frame

    def _encode(self, hop: dict, store: dict) -> bytes:
        encoder = self._encoders.get(hop["tensor"])
        if encoder is None:
            return self.segment.encode(hop, store, self._frames.get(hop["tensor"]))
        return encoder.encode({w["name"]: store[w["name"]] for w in hop["wire"]})

    def _finish(self, feeds, started) -> RunResult:
        if started is None:
            return self._fallback(feeds, "backing off" if self.segment.remote else None)
        stores, result, after, future, frame = started
        try:
            answers, server, rtt = future.result()
            t = time.perf_counter()
            for hop in self.segment.down:
                if hop["tensor"] not in answers:
                    raise RemoteFailure("rejected", f"answer lacks {hop['tensor']}{PAYLOAD_SUFFIX}")
                stores[self.segment.device].update(self.segment.decode(hop, answers[hop["tensor"]]))
            result.seconds["decode"] = time.perf_counter() - t
        except Exception as err:  # noqa: BLE001 - any failure of the remote path: this frame is computed here
            return self._fallback(feeds, classify(err), frame)
        result.bytes_down = result.link_bytes[0]["down"] = sum(len(answers[h["tensor"]]) for h in self.segment.down)
        result.seconds["round_trip"], result.seconds["server"] = rtt, sum(server.values())
        self._device_stages(stores, result, before=False, start=after)
        result.outputs = {o["name"]: stores[self.segment.device][o["name"]] for o in self.plan["model"]["outputs"]}
        with self._lock:
            self.stats.remote += 1
            self.stats.round_trip_s.append(rtt)
            self.stats.server_s.append(result.seconds["server"])
            self._delay, self._retry_at = self.backoff[0], 0.0
        return result

    def _device_stages(self, stores, result: RunResult, before: bool, start: int = 0) -> int:
        """Run the device stages before the server's (``before``) or from ``start`` on; returns where it stopped."""
        stages = self.plan["stages"]
        i = start
        while i < len(stages):
            stage = stages[i]
            if stage["target"] != self.segment.device:
                if before:
                    return i + len(self.segment.stages)
                i += 1
                continue
            sess = self.local.sessions.get(stage["index"])
            if sess is not None:
                t = time.perf_counter()
                store = stores[stage["target"]]
                names = [o.name for o in sess.get_outputs()]
                store.update(zip(names, sess.run(names, {x.name: store[x.name] for x in sess.get_inputs()})))
                key = f"stage{stage['index']}_{stage['target']}"
                result.seconds[key] = result.seconds.get(key, 0.0) + time.perf_counter() - t
            i += 1
        return i

    def _post(self, payloads: dict[str, bytes], seq: int = 0) -> tuple[dict[str, bytes], dict[str, float], float]:
        http, InferenceServerException = _tritonclient()
        inputs = []
        for tensor, payload in payloads.items():
            x = http.InferInput(tensor + PAYLOAD_SUFFIX, [len(payload)], "UINT8")
            x.set_data_from_numpy(np.frombuffer(payload, np.uint8), binary_data=True)
            inputs.append(x)
        outputs = [http.InferRequestedOutput(h["tensor"] + PAYLOAD_SUFFIX, binary_data=True) for h in self.segment.down]
        client = self._client()
        self.sending = (client, acked_bytes(getattr(client, "splitc_socket", None)), time.perf_counter())
        t = time.perf_counter()
        try:
            # a copy: tritonclient writes this request's Inference-Header-Content-Length into the dict it is given,
            # and requests in flight on other threads would send one another's
            response = client.infer(self.segment.name, inputs, outputs=outputs, headers=dict(self.headers or {}), sequence_id=seq)
        except InferenceServerException as err:
            if not (err.status() or "").isdigit():
                self._drop_client()
            raise classify(err, err.status()) from None
        except Exception as err:  # noqa: BLE001 - socket, gevent and SSL errors: reconnect next time
            self._drop_client()
            raise classify(err) from None
        rtt = time.perf_counter() - t
        answers = {}
        for hop in self.segment.down:
            arr = response.as_numpy(hop["tensor"] + PAYLOAD_SUFFIX)
            if arr is not None:
                answers[hop["tensor"]] = np.ascontiguousarray(arr, np.uint8).tobytes()
        params = (response.get_response() or {}).get("parameters") or {}
        server = {k[:-3]: v / 1e6 for k, v in params.items() if k.endswith("_us") and type(v) is int and 0 <= v < 1e9}
        return answers, server, rtt

    def _fallback(self, feeds, failure: RemoteFailure | str | None, frame: int | None = None) -> RunResult:
        t = time.perf_counter()
        self.local._frames = self._frames  # a camera frame is computed from the same compressed frame as remotely
        try:
            result = self.local.run(feeds)
        finally:
            self.local._frames = {}
        for encoder in self._encoders.values():  # the server may lack this frame: the next one sent is a key frame
            if frame is None or encoder.last_key <= frame:  # (unless one was sent after it already)
                encoder.request_key()
        with self._lock:
            self.stats.local += 1
            self.stats.fallback_s.append(time.perf_counter() - t)
            if isinstance(failure, RemoteFailure):
                self.stats.failures[failure.kind] += 1
                self.stats.first.setdefault(failure.kind, failure.reason)
                if failure.kind != "stream gap":  # a gap is the stream's, not the server's: no back-off
                    self._retry_at = time.monotonic() + self._delay
                    self._delay = min(self._delay * 2, self.backoff[1])
            elif failure:
                self.stats.failures[failure] += 1
                self.stats.first.setdefault(failure, f"server not retried until {self._delay:g} s after a failure")
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._drop_client()
