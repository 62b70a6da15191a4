"""Bandwidth adaptation for a plan compiled with ``--sweep-bandwidth``: the client estimates the uplink goodput and
the RTT from its own requests and runs each frame on the plan the sweep chose for that bandwidth.

Per answered frame: network time = round trip - the server's own decode+compute+encode; the bits it moved, counted
as uplink bits (the downlink is ``down_up_ratio`` times faster in the sweep, so a downlink byte weighs 1/ratio);
goodput = bits / (network time - RTT), smoothed in log space (a drop below half the estimate is taken as it is, smaller drops weigh 0.8, rises ``alpha``). Frames of one plan all have about the same size, so
RTT and rate cannot be told apart from them: the RTT comes from a health request (no payload) every ``ping_s``,
the smallest of the recent ones (queues only add). The plan switches when the estimate leaves the current
plan's interval by more than ``hysteresis``. While on a plan that runs wholly on the device nothing is measured, so
every ``probe_s`` one frame goes through the slowest-link plan that uses the server (a real frame, not extra work).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path

from splitc.errors import SplitcError
from splitc.runtimes.ort import RunResult
from splitc.runtimes.remote import RemoteSplitModel, RemoteStats


class BandwidthEstimator:
    def __init__(self, rtt_prior_s: float, down_up_ratio: float = 1.0, alpha: float = 0.5, window: int = 8):
        self.rtt, self.ratio, self.alpha = float(rtt_prior_s), float(down_up_ratio or 1.0), alpha
        self.up_bps: float | None = None
        self.recent: deque = deque(maxlen=window)

    def observe_rtt(self, rtt_s: float) -> None:
        self.recent.append(rtt_s)
        self.rtt = min(self.recent)

    def observe(self, network_s: float, bytes_up: int, bytes_down: int) -> float:
        bits = 8.0 * (bytes_up + bytes_down / self.ratio)
        sample = bits / max(network_s - self.rtt, 0.1 * network_s, 1e-5)
        # a drop is believed at once (a filling queue is real and hurts every frame), a rise more slowly
        a = self.alpha
        if self.up_bps is not None and sample < self.up_bps:
            a = 1.0 if sample < 0.5 * self.up_bps else max(self.alpha, 0.8)  # halved or worse: the link changed
        self.up_bps = sample if self.up_bps is None else math.exp(a * math.log(sample) + (1 - a) * math.log(self.up_bps))
        return self.up_bps


class AdaptiveRemote:
    """Every plan variant of a sweep, each a RemoteSplitModel on the same server (``splitc serve`` serves them all)."""

    def __init__(self, out_dir: str | Path, url: str, *, hysteresis: float = 0.1, probe_s: float = 1.0, ping_s: float = 1.0,
                 alpha: float = 0.5, **kw):
        out = Path(out_dir)
        self.plan = json.loads((out / "plan.json").read_text())
        sweep = self.plan.get("sweep")
        if not sweep:
            raise SplitcError(f"{out}: compiled without --sweep-bandwidth; there is one plan, nothing to adapt")
        self.intervals = sweep["intervals"]
        self.models = [RemoteSplitModel(out / iv["plan"], url, **kw) for iv in self.intervals]
        link = self.plan["links"][0]
        self.estimator = BandwidthEstimator(link["rtt_s"], sweep.get("down_up_ratio", 1.0), alpha)
        self.current = self._interval(link["up_bps"])
        self.hysteresis, self.probe_s, self.ping_s = hysteresis, probe_s, ping_s
        self.switches: list[dict] = []
        self.frame, self._last_probe, self._last_ping = 0, time.monotonic(), -math.inf
        self.last = self.models[self.current]

    def _interval(self, up_bps: float) -> int:
        for i, iv in enumerate(self.intervals):
            if up_bps <= iv["max_up_bps"]:
                return i
        return len(self.intervals) - 1

    def run(self, feeds) -> RunResult:
        model = self.models[self.current]
        if not model.segment.remote and time.monotonic() - self._last_probe >= self.probe_s:
            remote = [m for m in self.models if m.segment.remote]
            if remote:
                model = remote[0]
                self._last_probe = time.monotonic()
        if model.segment.remote and time.monotonic() - self._last_ping >= self.ping_s:
            self._last_ping = time.monotonic()
            rtt = model.ping()
            if rtt is not None:
                self.estimator.observe_rtt(rtt)
        result = model.run(feeds)
        self.last = model
        if "round_trip" in result.seconds:
            est = self.estimator.observe(result.seconds["round_trip"] - result.seconds.get("server", 0.0),
                                         result.bytes_up, result.bytes_down)
            self._choose(est)
        self.frame += 1
        return result

    def _choose(self, est: float) -> None:
        iv = self.intervals[self.current]
        if iv["min_up_bps"] * (1 - self.hysteresis) <= est <= iv["max_up_bps"] * (1 + self.hysteresis):
            return
        new = self._interval(est)
        if new != self.current:
            self.switches.append({"frame": self.frame, "from": iv["plan"], "to": self.intervals[new]["plan"],
                                  "estimated_up_mbps": est / 1e6, "rtt_ms": self.estimator.rtt * 1e3,
                                  "t": time.monotonic()})
            self.current = new

    def lines(self) -> list[str]:
        return [f"frame {s['frame']}: switched {s['from']} -> {s['to']} (uplink estimated {s['estimated_up_mbps']:.2f} Mbps,"
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
