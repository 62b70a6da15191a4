"""AdaptiveRemote.stream (splitc/runtimes/adaptive_stream.py): a stream with frames in flight that switches plans."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("kserve", reason="splitc serve needs KServe: pip install 'splitc[serve]'")
pytest.importorskip("tritonclient.http", reason="the remote client needs tritonclient: pip install 'splitc[remote]'")

from test_serving import ENV, ROOT, free_port, plan_dir, wait_ready  # noqa: F401 - plan_dir: the fixture

from splitc.compiler import CompileOptions, compile_model
from splitc.runtimes.adaptive import BandwidthEstimator
from splitc.runtimes.adaptive_stream import busy_sample
from splitc.runtimes.ort import synthetic_inputs


def test_busy_sample_reads_the_link_rate_with_frames_in_flight():
    """Four frames of 10 kbit sent at once over a 1 Mbit/s link (RTT 20 ms, server 5 ms): their uploads queue, the
    last is answered 65 ms after it was sent. Its own bits over its own round trip read 0.27 Mbit/s; timed from the
    end of the upload ahead of it, they read the link's 1 Mbit/s. One frame at a time: its own round trip."""
    rate, rtt, server, bits = 1e6, 0.02, 0.005, 10_000
    history, up_end = [], 0.0
    for i in range(4):
        sent = 0.001 * i
        up_end = max(up_end, sent) + bits / rate
        history.append((sent, up_end + rtt + server, server, bits))
    est = BandwidthEstimator(rtt)
    assert abs(est.observe_bits(*busy_sample(history, rtt)) / rate - 1) < 0.01
    alone = BandwidthEstimator(rtt)  # the newest frame by itself (what AdaptiveRemote.run measures)
    assert alone.observe_bits(history[-1][1] - server - history[-1][0], bits) < 0.3 * rate
    spaced = [(0.0, 0.035, server, bits), (0.5, 0.535, server, bits)]  # the link idle between them: the frame's own
    assert busy_sample(spaced, rtt) == pytest.approx((0.03, bits))


@pytest.fixture(scope="module")
def sweep_dir(plan_dir):  # noqa: F811
    out = plan_dir.parent / "sweep_stream"
    compile_model(plan_dir.parent / "m.onnx", out, CompileOptions(
        target=f"{plan_dir.parent / 'slowcam.toml'},cloud", link="up=100Mbps,down=300Mbps,rtt=5ms", sweep_bps=(0.5e6, 200e6)))
    intervals = json.loads((out / "plan.json").read_text())["sweep"]["intervals"]
    assert intervals[0]["cut"] == [] and intervals[0]["max_up_bps"] > 0.4e6, intervals  # slow links: all on the camera
    return out


@contextmanager
def served_over_link(sweep_dir, **kw):
    """(link, client): ``splitc serve`` behind an emulated 100/300 Mbit/s, 5 ms link (shaped in a netns), and an
    AdaptiveRemote on it after 4 warm frames through the server."""
    from splitc.runtimes.adaptive import AdaptiveRemote
    from splitc.serving.linkemu import Link

    with Link(100e6, 300e6, 0.005) as link:
        port = free_port()
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([*link.exec_prefix, sys.executable, "-m", "splitc", "serve", str(sweep_dir), "--host",
                                 link.host, "--port", str(port), "--grpc-port", "0"], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            proxy = link.proxy(port, at_server=True)
            client = AdaptiveRemote(sweep_dir, f"http://{proxy.host}:{proxy.port}", timeout=20, backoff=(0.2, 0.5), **kw)
            assert client.intervals[client.current]["plan"] != client.intervals[0]["plan"]
            deadline = time.monotonic() + 60
            wait_ready(f"http://{proxy.host}:{proxy.port}", deadline)  # the server starting
            feeds = synthetic_inputs(client.models[0].local.inputs, 0)
            while client.stats.remote < 4 and time.monotonic() < deadline:  # warm: the sessions on both sides
                client.run(feeds)
                time.sleep(0.05)
            assert client.stats.remote >= 4 and not client.switches, (client.stats.lines(), client.lines())
            yield link, client
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=40)
            log.close()


def test_a_bandwidth_drop_mid_stream_switches_plan_and_loses_no_frame(sweep_dir):
    """16 different frames streamed 3 in flight over an emulated 100 Mbit/s link that drops to 0.2 Mbit/s before
    frame 6. The stream moves to the sweep's device-only plan between frames; frames in flight on the server plan
    finish there. Every frame comes back, in order, with the in-process output of the plan it ran on."""
    with served_over_link(sweep_dir, probe_s=600) as (link, client):
        intervals = client.intervals
        frames = [synthetic_inputs(client.models[0].local.inputs, s) for s in range(16)]
        want = {iv["plan"]: [m.local.run(f).outputs["logits"] for f in frames] for iv, m in zip(intervals, client.models)}
        start = client.intervals[client.current]["plan"]
        before, f0 = client.stats, client.frame

        def camera():
            for i, f in enumerate(frames):
                if i == 6:
                    link.set_rate(0.2e6, 0.6e6)
                yield f

        ran = []
        for i, r in enumerate(client.stream(camera(), inflight=3)):
            plan = client.intervals[client.models.index(client.last)]["plan"]
            np.testing.assert_array_equal(r.outputs["logits"], want[plan][i])  # in order, right for its plan
            ran.append((plan, "round_trip" in r.seconds))
    assert len(ran) == 16
    assert all(p == start and remote for p, remote in ran[:6]), ran  # before the drop: through the server, no switch
    assert ran[-1] == (intervals[0]["plan"], False), ran  # after it: the device-only plan
    switched = [s for s in client.switches if s["to"] == intervals[0]["plan"]]
    assert switched and not switched[0]["in_flight"] and 6 <= switched[0]["frame"] - f0 <= 12, client.lines()
    after = client.stats
    assert after.local - before.local == sum(not remote for _, remote in ran) and not after.failures, after.lines()


def test_probes_of_a_slow_link_never_hold_a_frame(sweep_dir):
    """On the device-only plan after a drop to 0.1 Mbit/s, the client probes the server plan every 0.2 s by sending
    its last payload again in the background (~5.7 KB on the wire: ~0.45 s at that rate). The frames meanwhile are
    computed here in ~1 ms each, right; the probes' answers keep the estimate low, so the plan stays. (A probe that
    was a real frame waited for its upload: >= 0.45 s.)"""
    with served_over_link(sweep_dir, probe_s=0.2) as (link, client):
        device = client.intervals[0]["plan"]
        feeds = synthetic_inputs(client.models[0].local.inputs, 1)
        want = {id(m): m.local.run(feeds).outputs["logits"] for m in client.models}
        link.set_rate(0.1e6, 0.3e6)
        client.run(feeds)  # the watchdog sees the drop under this frame
        assert client.intervals[client.current]["plan"] == device, client.lines()
        took, t_end = [], time.monotonic() + 2.0
        while time.monotonic() < t_end:
            t = time.perf_counter()
            r = client.run(feeds)
            took.append(time.perf_counter() - t)
            np.testing.assert_array_equal(r.outputs["logits"], want[id(client.last)])  # right for the plan it ran on
            time.sleep(0.02)
        assert max(took) < 0.25, f"a frame took {max(took):.3f} s: it waited for a probe"
        sent, answered = client.probes
        assert sent >= 2 and answered >= 1, client.probes
        assert client.intervals[client.current]["plan"] == device and client.estimator.up_bps < 0.3e6, client.lines()


def test_cli_run_remote_stream_on_a_sweep_plan_adapts(sweep_dir):
    """`splitc run SWEEP --remote URL --stream` streams through the adaptive client (its report lists the switches:
    none on loopback, where the 100 Mbit/s plan stays right); every frame through the server, in-process outputs."""
    from test_serving import Server

    srv = Server(sweep_dir)
    try:
        proc = subprocess.run([sys.executable, "-m", "splitc", "run", str(sweep_dir), "--remote", srv.url, "--stream",
                               "--inflight", "2", "--samples", "5", "--json", "--no-compare"], check=False,
                              capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        srv.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["switches"] == [] and report["via_server"] == 5 and report["lost"] == 0, report
    assert report["same_as_in_process"], report
