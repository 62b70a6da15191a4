"""``AdaptiveRemote.stream``: a stream of frames with up to K in flight that switches between the plans of a
``--sweep-bandwidth`` compile as the uplink changes.

Each frame is started on the plan current when the device takes it (or a probe, as ``AdaptiveRemote.run`` does);
frames already in flight finish on the plan they were sent on (their server stages are that plan's), so a switch
applies from the next frame on and no frame is lost or recomputed. Results come back in frame order; the oldest is
answered as soon as it is done (not only when K are out), so the estimate follows the link frame by frame. Every
plan with server stages keeps its own delta-coded stream (its own OIP ``sequence_id``).

With K frames in flight a frame's round trip also holds the uploads of the frames sent before it that share the
link, so one frame's bits over its own round trip would read the goodput up to K times low. Each answered frame's
bits are timed instead from when the link could take them: its sending, or, when it was sent while the frame before
was still uploading, the end of that upload (that frame's answer less its server time and the RTT), to its own
answer less its server time (the estimator takes the RTT off). One frame at a time, that is the frame's own round
trip, as ``AdaptiveRemote.run``. (Timing the bits of the last K frames together read the same rate in a steady
stream, but after a drop from 18.9 to 0.4 Mbit/s it still counted the fast frames before it: the switch came
555-565 ms after the drop in 3 of 5 runs, against 152-162 ms for the others.)
The watchdog (a drop seen while a frame is out) is for ``run``; in a stream a drop is seen at the first answer of a
frame that met it.
"""

from __future__ import annotations

import time
from collections import deque


def busy_sample(history, rtt: float) -> tuple[float, float]:
    """(seconds, bits) the link took for the newest answered frame of ``history`` (oldest first; each ``(sent,
    answered, server_s, bits)``), the seconds with one RTT in (BandwidthEstimator.observe_bits)."""
    sent, answered, server, bits = history[-1]
    if len(history) > 1:  # the upload before it ended (its answer less its server time and the RTT) after it was sent
        sent = max(sent, history[-2][1] - history[-2][2] - rtt)
    return answered - server - sent, bits


def stream(client, frames, inflight: int | None = None, delta: bool = True, key_interval: int = 30):
    remote = [m for m in client.models if m.segment.remote]
    k = max(1, inflight or client.models[0].inflight)
    for m in remote:
        m.open_stream(k, delta, key_interval)
    pending: deque = deque()  # (model, feeds, started, sent)
    history: deque = deque(maxlen=2)  # the last answered frames, for busy_sample
    answered = {id(m): 0 for m in client.models}  # per plan in this stream: its first K answers open connections

    def finish(model, feeds, started, sent):
        result = model._finish(feeds, started)
        client.last = model
        client.frame += 1
        if "round_trip" not in result.seconds:  # computed here: no link sample, and the busy period is broken
            history.clear()
            return result
        model._last_down = result.bytes_down or model._last_down
        server = result.seconds.get("server", 0.0)
        history.append((sent, sent + result.seconds["round_trip"], server,
                        client.estimator.wire_bits(result.bytes_up, result.bytes_down)))
        answered[id(model)] += 1
        if answered[id(model)] > k:
            client._choose(client.estimator.observe_bits(*busy_sample(history, client.estimator.rtt)))
        return result

    try:
        for feeds in frames:
            model = client._pick()
            started = model._start(feeds, threaded=True)
            pending.append((model, feeds, started, time.perf_counter()))
            while pending and (len(pending) >= k or pending[0][2] is None or pending[0][2][3].done()):
                yield finish(*pending.popleft())
        while pending:
            yield finish(*pending.popleft())
    finally:
        for m in remote:
            m.close_stream()
