"""Bandwidth adaptation for a plan compiled with ``--sweep-bandwidth``: the client estimates the uplink goodput and
the RTT from its own requests and runs each frame on the plan the sweep chose for that bandwidth.

Per answered frame: network time = round trip - the server's own decode+compute+encode; the bits it moved, counted
as uplink bits (the downlink is ``down_up_ratio`` times faster in the sweep, so a downlink byte weighs 1/ratio);
goodput = bits / (network time - RTT), smoothed in log space (a drop below half the estimate is taken as it is, smaller
drops weigh 0.8, rises ``alpha``). The RTT is the one the sweep assumed (the compile's link): the sweep chose each
plan for a bandwidth at that RTT, so a longer real RTT counts as less bandwidth, which prices a plan that uses the
server as it really costs (compute + that RTT + bits / rate). Health pings every ``ping_s`` (off by default) measure the
real RTT for the report only: on a loaded machine they came out 15-45 ms on a 10 ms link (the server's and the
client's scheduling), and subtracting them made a 0.4 Mbit/s link look like 0.8. The plan switches when the estimate
leaves the current plan's interval by more than ``hysteresis``. While on a plan that runs wholly on the device nothing is measured, so
every ``probe_s`` the slowest-link plan that uses the server is probed: ``run`` re-sends that plan's last payload in
the background (the frame itself is computed on the current plan, and the estimate takes the probe's answer when it
comes: a frame that went through the server as the probe took 4x a device-only frame at 0.4 Mbit/s, and these
frames were what put the frames after a drop 5-48% over the new plan's latency, ``benchmarks/serve_latency.py drop``);
before any payload was sent, and in a stream, the probe is a real frame. The first probe comes ``probe_s`` after the
switch to a device-only plan (the link was just measured).

A drop is seen while the frame that meets it is still out (``watchdog``): the request runs in a worker thread and
the client watches its upload through the socket's acknowledged bytes (Linux TCP_INFO): once fewer bytes have
crossed than the current plan's lowest rate (less the hysteresis) would have carried since one RTT after sending,
the goodput is at most what did cross; that bound is the estimate and the plan switches then. Where the socket says
nothing, the bound comes when the answer is later than its bytes at that rate plus the RTT and the server's recent
median time. A frame whose new plan runs wholly on the device is computed here at once
(its request is left to finish unread); otherwise it waits for its answer. Without it, a drop was seen only when
the frame's answer came: its upload at the new rate, then the server's compute and the download (170-290 ms at
18.9 -> 0.4 Mbit/s on this machine, ``benchmarks/serve_latency.py drop``).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.ort import RunResult
from splitc.runtimes.remote import RemoteSplitModel
from splitc.runtimes.remote_io import RemoteStats, tcp_progress

ACK_SLACK = 2 * 1448  # acknowledged bytes ahead of the rate's pace: the first segment (a token bucket's burst) and one in flight


class BandwidthEstimator:
    def __init__(self, rtt_prior_s: float, down_up_ratio: float = 1.0, alpha: float = 0.5, window: int = 8,
                 link: dict | None = None):
        self.rtt, self.ratio, self.alpha = float(rtt_prior_s), float(down_up_ratio or 1.0), alpha
        # the link's rate as the sweep priced it counts what goes on the wire: a message's framing and packet headers
        # (plan.json links[0]; a plan from before it has none: payload bytes only)
        link = link or {}
        self.message_bytes = float(link.get("message_bytes", 0.0))
        self.per_byte = 1.0 + float(link.get("segment_header_bytes", 0.0)) / float(link.get("mss_bytes", 1448.0))
        self.up_bps: float | None = None
        self.recent: deque = deque(maxlen=window)

    def observe_rtt(self, rtt_s: float) -> None:
        self.recent.append(rtt_s)
        self.rtt = min(self.recent)

    def wire_bits(self, bytes_up: int, bytes_down: int) -> float:
        """A frame's bits on the wire, counted as uplink bits: one message up, one down (when anything comes back)."""
        up = (bytes_up + self.message_bytes) * self.per_byte
        down = (bytes_down + self.message_bytes) * self.per_byte if bytes_down else 0.0
        return 8.0 * (up + down / self.ratio)

    def observe(self, network_s: float, bytes_up: int, bytes_down: int) -> float:
        return self.observe_bits(network_s, self.wire_bits(bytes_up, bytes_down))

    def observe_bits(self, network_s: float, bits: float) -> float:
        """``bits`` crossed in ``network_s`` (one RTT included): the smoothed goodput."""
        sample = bits / max(network_s - self.rtt, 0.1 * network_s, 1e-5)
        # a drop is believed at once (a filling queue is real and hurts every frame), a rise more slowly
        a = self.alpha
        if self.up_bps is not None and sample < self.up_bps:
            a = 1.0 if sample < 0.5 * self.up_bps else max(self.alpha, 0.8)  # halved or worse: the link changed
        self.up_bps = sample if self.up_bps is None else math.exp(a * math.log(sample) + (1 - a) * math.log(self.up_bps))
        return self.up_bps

    def bound(self, up_bps: float) -> float:
        """A frame still out says the goodput is at most ``up_bps``: believed at once when below the estimate."""
        if self.up_bps is None or up_bps < self.up_bps:
            self.up_bps = up_bps
        return self.up_bps


def _pool(model: RemoteSplitModel) -> ThreadPoolExecutor:
    if model._pool is None:
        model._pool = ThreadPoolExecutor(max_workers=max(1, model.inflight), thread_name_prefix="splitc-remote")
    return model._pool


class AdaptiveRemote:
    """Every plan variant of a sweep, each a RemoteSplitModel on the same server (``splitc serve`` serves them all)."""

    def __init__(self, out_dir: str | Path, url: str, *, hysteresis: float = 0.1, probe_s: float = 1.0, ping_s: float | None = None,
                 alpha: float = 0.5, watchdog: bool = True, **kw):
        out = Path(out_dir)
        self.plan = json.loads((out / "plan.json").read_text())
        sweep = self.plan.get("sweep")
        if not sweep:
            raise SplitcError(f"{out}: compiled without --sweep-bandwidth; there is one plan, nothing to adapt")
        self.intervals = sweep["intervals"]
        self.models = [RemoteSplitModel(out / iv["plan"], url, **kw) for iv in self.intervals]
        link = self.plan["links"][0]
        self.estimator = BandwidthEstimator(link["rtt_s"], sweep.get("down_up_ratio", 1.0), alpha, link=link)
        self.current = self._interval(link["up_bps"])
        self.hysteresis, self.probe_s, self.ping_s, self.watchdog = hysteresis, probe_s, ping_s, watchdog
        self.switches: list[dict] = []
        self.frame, self._last_probe, self._last_ping = 0, time.monotonic(), -math.inf
        self._probe: tuple | None = None  # (model, future) of run()'s background probe while it is out
        self.probes = [0, 0]  # background probes sent, answered
        self.pings: deque = deque(maxlen=8)  # health-request round trips (``ping_s``): reported, not estimated with
        self.last = self.models[self.current]

    def _interval(self, up_bps: float) -> int:
        for i, iv in enumerate(self.intervals):
            if up_bps <= iv["max_up_bps"]:
                return i
        return len(self.intervals) - 1

    def _pick(self, background: bool = False) -> RemoteSplitModel:
        """The current plan's model, or (every ``probe_s`` while on a device-only plan) the slowest-link server plan's;
        ``background``: that plan's last payload is sent again in the background instead, where it has one."""
        model = self.models[self.current]
        if not model.segment.remote and self._probe is None and time.monotonic() - self._last_probe >= self.probe_s:
            remote = [m for m in self.models if m.segment.remote]
            if remote:
                self._last_probe = time.monotonic()
                if background and remote[0].last_payloads:
                    self._probe = remote[0], _pool(remote[0]).submit(remote[0]._post, remote[0].last_payloads, 0)
                    self.probes[0] += 1
                else:
                    model = remote[0]
        if self.ping_s is not None and model.segment.remote and time.monotonic() - self._last_ping >= self.ping_s:
            self._last_ping = time.monotonic()
            rtt = model.ping()
            if rtt is not None:
                self.pings.append(rtt)
        return model

    def stream(self, frames, inflight: int | None = None, delta: bool = True, key_interval: int = 30):
        """``RemoteSplitModel.stream`` that adapts: splitc/runtimes/adaptive_stream.py."""
        from splitc.runtimes.adaptive_stream import stream

        return stream(self, frames, inflight, delta, key_interval)

    def _collect_probe(self) -> None:
        """The background probe's answer, once it has come: its goodput observed (the plan may switch)."""
        if self._probe is None or not self._probe[1].done():
            return
        model, future = self._probe
        self._probe = None
        try:
            answers, server, rtt = future.result()
        except Exception:  # noqa: BLE001 - a failed probe measures nothing; the next one comes probe_s later
            return
        self.probes[1] += 1
        self._choose(self.estimator.observe(rtt - sum(server.values()), sum(map(len, model.last_payloads.values())),
                                            sum(map(len, answers.values()))))

    def run(self, feeds) -> RunResult:
        self._collect_probe()
        model = self._pick(background=True)
        result = self._watched(model, feeds) if self.watchdog and model.segment.remote else model.run(feeds)
        if result is None:  # the link dropped under this frame and the new plan runs here: computed here, now
            model = self.models[self.current]
            result = model.run(feeds)
        self.last = model
        if "round_trip" in result.seconds and model.stats.remote > 1:  # (a model's first answer pays the connection)
            est = self.estimator.observe(result.seconds["round_trip"] - result.seconds.get("server", 0.0),
                                         result.bytes_up, result.bytes_down)
            self._choose(est)
        self.frame += 1
        return result

    def run_image(self, image) -> RunResult:
        """``run`` on a camera frame (``RemoteSplitModel.run_image``): an image input crosses as this frame."""
        from splitc.runtimes.image import frame_feeds

        local = self.models[0].local
        feeds, frames = frame_feeds(local.images, image, local.inputs)
        for m in self.models:
            m._frames = frames
        try:
            result = self.run(feeds)
        finally:
            for m in self.models:
                m._frames = {}
        result.inputs = feeds
        return result

    def _deadline(self, model: RemoteSplitModel, bytes_up: int) -> tuple[float, float, float] | None:
        """(seconds after sending by which the answer is due if the link still runs at the current plan's
        lowest rate less the hysteresis, the server time and the bits it assumes); None: no plan is meant for a slower link."""
        iv = self.intervals[self.current]
        if self.current == 0 or iv["min_up_bps"] <= 0 or len(model.stats.server_s) < 2:
            return None  # (the first answers pay the connection and the server's warm-up: no deadline yet)
        server = float(np.median(model.stats.server_s[-8:]))
        down = model._last_down
        bits = self.estimator.wire_bits(bytes_up, down)
        return self.estimator.rtt + server + bits / (iv["min_up_bps"] * (1 - self.hysteresis)), server, bits

    def _watched(self, model: RemoteSplitModel, feeds) -> RunResult | None:
        """``model.run(feeds)`` with the request in a worker thread, watched against its deadline (module docstring).
        None: the plan switched to one that runs wholly on the device while the request was out."""
        _pool(model)
        model.sending = None
        started = model._start(feeds, threaded=True)
        if started is None:
            return model._finish(feeds, started)
        sent = time.perf_counter()
        due = self._deadline(model, started[1].bytes_up)
        overdue = self._watch(model, started[3], sent, started[1].bytes_up, *due) if due is not None else None
        if overdue is not None:
            before = self.current
            self._choose(self.estimator.bound(overdue), during=True)
            if self.current != before and not self.models[self.current].segment.remote:
                return None  # its request finishes in the worker, unread; the frame is computed on the new plan
        result = model._finish(feeds, started)
        model._last_down = result.bytes_down or model._last_down
        return result

    def _watch(self, model: RemoteSplitModel, future, sent: float, bytes_up: int, deadline: float, server: float,
               bits: float) -> float | None:
        """Wait for the answer while it can still come at the current plan's lowest rate; when it cannot, the
        goodput it proves (bit/s, an upper bound). Three signs, from the upload's bytes the server's TCP has
        acknowledged (Linux TCP_INFO): while it is going, fewer have crossed than that rate would have carried since
        one RTT after sending (``ACK_SLACK`` aside); once it is through, its goodput timed by its last acknowledgement
        (the server's compute not waited for); and, where the socket says nothing, the answer's deadline."""
        floor = self.intervals[self.current]["min_up_bps"] * (1 - self.hysteresis)
        rtt, timed = self.estimator.rtt, False
        while not future.done():
            now = time.perf_counter()
            if now - sent >= deadline:
                return bits / max(now - sent - rtt - server, 1e-3)
            sending = model.sending  # set by the worker just before it writes the request
            progress = tcp_progress(getattr(sending[0], "splitc_socket", None)) if sending and sending[1] is not None else None
            if progress is not None and not timed:
                up, since_ack = progress[0] - sending[1], progress[1]
                if up >= bytes_up:  # through: the last acknowledgement says when
                    timed = True
                    proven = up * 8 * self.estimator.per_byte / max(now - since_ack - sending[2] - rtt, 1e-3)
                elif now - sending[2] - rtt > 0:  # (acknowledged bytes are TCP payload: their packets' headers added)
                    proven = (up + ACK_SLACK) * 8 * self.estimator.per_byte / (now - sending[2] - rtt)
                else:
                    proven = math.inf
                if proven < floor:
                    return proven
            wait([future], timeout=min(0.005, max(deadline - (now - sent), 0.0)))
        return None

    def _choose(self, est: float, during: bool = False) -> None:
        iv = self.intervals[self.current]
        if iv["min_up_bps"] * (1 - self.hysteresis) <= est <= iv["max_up_bps"] * (1 + self.hysteresis):
            return
        new = self._interval(est)
        if new != self.current:
            self.switches.append({"frame": self.frame, "from": iv["plan"], "to": self.intervals[new]["plan"],
                                  "estimated_up_mbps": est / 1e6, "rtt_ms": (min(self.pings) if self.pings else self.estimator.rtt) * 1e3,
                                  "t": time.monotonic(), "in_flight": during})
            self.current = new
            if not self.models[new].segment.remote:  # the link was just measured: the first probe comes probe_s on
                self._last_probe = time.monotonic()

    def lines(self) -> list[str]:
        return [f"frame {s['frame']}: switched {s['from']} -> {s['to']} (uplink {'at most' if s.get('in_flight') else 'estimated'}"
                f" {s['estimated_up_mbps']:.2f} Mbps{', seen while a frame was out' if s.get('in_flight') else ''},"
                f" RTT {s['rtt_ms']:.1f} ms)" for s in self.switches]

    @property
    def stats(self) -> RemoteStats:
        total = RemoteStats()
        for m in self.models:
            total.remote += m.stats.remote
            total.local += m.stats.local
            total.failures.update(m.stats.failures)
            for k, v in m.stats.first.items():
                total.first.setdefault(k, v)
            total.round_trip_s += m.stats.round_trip_s
            total.server_s += m.stats.server_s
            total.fallback_s += m.stats.fallback_s
        return total

    def close(self) -> None:
        for m in self.models:
            m.close()
