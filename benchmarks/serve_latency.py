"""Server overhead per request on loopback, and predicted vs measured latency through an emulated link.

    .venv/bin/python benchmarks/serve_latency.py overhead OUT/ [--frames 60]
    .venv/bin/python benchmarks/serve_latency.py link OUT/ [--frames 30]      # as root: netns + veth + tc tbf
    .venv/bin/python benchmarks/serve_latency.py drop SWEEP_OUT/ --to 400000  # a --sweep-bandwidth plan; the uplink drops
    .venv/bin/python benchmarks/serve_latency.py drop SWEEP_OUT/ --to-link 3g # rates and RTT of links.toml's 3g
    .venv/bin/python benchmarks/serve_latency.py drop SWEEP_OUT/ --to 400000 --stream-k 4  # AdaptiveRemote.stream, K in flight
    .venv/bin/python benchmarks/serve_latency.py stream OUT/ --frames 60 --inflight 4 [--images DIR]  # frames/s, K in flight

overhead: the same frames, alternately in process (SplitModel.run) and through `splitc serve` on 127.0.0.1
(RemoteSplitModel.run); the overhead is the median of the per-frame differences (goal <= 2 ms). The server's
own decode+compute+encode is reported beside it, so the HTTP/KServe share is visible.

link: the server runs in a network namespace joined to this one by a veth pair, each direction shaped by tc
tbf to the plan link's rate; the link's RTT is added by splitc.serving.linkemu's userspace delay proxy (this
kernel has no netem). Measured end-to-end per frame vs plan.json's prediction (head, transfer, tail, RTT),
with the device and server compute replaced by what this machine measured (the plan predicts an rpi4 and a
T4; this machine is neither), so the comparison is of the network part the plan models.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from splitc.runtimes.ort import SplitModel, synthetic_inputs
from splitc.runtimes.remote import RemoteSplitModel
from splitc.serving.linkemu import Link


def start_server(out: Path, host: str, port: int, prefix: list[str] = ()) -> tuple[subprocess.Popen, object]:
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "splitc", "serve", str(out), "--host", host, "--port", str(port),
                             "--grpc-port", "0"], stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"splitc serve exited: {log.read()[-2000:]}")
        try:
            check = [*prefix, sys.executable, "-c", f"import urllib.request; urllib.request.urlopen('http://{host}:{port}/v2/health/ready', timeout=1)"]
            if subprocess.run(check, capture_output=True, timeout=10).returncode == 0:
                return proc, log
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("splitc serve did not become ready in 90 s")


@contextlib.contextmanager
def served_over_link(out: Path, port: int, shape: bool | None):
    """``splitc serve OUT`` behind an emulated copy of the plan's first link; yields the Link (stopped on exit)."""
    ln = json.loads((out / "plan.json").read_text())["links"][0]
    with Link(ln["up_bps"], ln["down_bps"], ln["rtt_s"], shape=shape) as link:
        proc, _ = start_server(out, link.host, port, link.exec_prefix)
        try:
            yield link
        finally:
            stop(proc)


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()


def overhead(out: Path, frames: int, port: int) -> dict:
    proc, _ = start_server(out, "127.0.0.1", port)
    try:
        local = SplitModel(out, spinning=False)
        remote = RemoteSplitModel(out, f"http://127.0.0.1:{port}", local=local, timeout=30)
        feeds = [synthetic_inputs(local.inputs, s) for s in range(4)]
        for f in feeds:  # warm both paths
            local.run(f), remote.run(f)
        t_local, t_remote, server = [], [], []
        for i in range(frames):  # alternate, so load changes hit both alike
            f = feeds[i % len(feeds)]
            t = time.perf_counter()
            local.run(f)
            t_local.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = remote.run(f)
            t_remote.append(time.perf_counter() - t)
            server.append(r.seconds.get("round_trip", float("nan")) - r.seconds.get("server", float("nan")))
        assert remote.stats.local == 0, remote.stats.lines()
        diff = np.array(t_remote) - np.array(t_local)
        return {"plan": str(out), "frames": frames, "in_process_ms": float(np.median(t_local)) * 1e3,
                "remote_ms": float(np.median(t_remote)) * 1e3, "overhead_ms": float(np.median(diff)) * 1e3,
                "round_trip_minus_server_ms": float(np.median(server)) * 1e3}
    finally:
        stop(proc)


def wire_s(ln: dict, payload: float, direction: str, framing: bool = True) -> float:
    """Seconds on the plan's link for one message of ``payload`` bytes, as the cost model prices it: the payload,
    the message's framing and every segment's packet headers (plan.json links[]); ``framing=False``: payload only
    (the model before they were priced)."""
    rate = ln["up_bps"] if direction == "up" else ln["down_bps"]
    if not framing:
        return payload * 8 / rate
    return (payload + ln.get("message_bytes", 0.0)) * (1 + ln.get("segment_header_bytes", 0.0) / ln.get("mss_bytes", 1448.0)) * 8 / rate


def through_link(out: Path, frames: int, port: int, shape: bool | None) -> dict:
    plan = json.loads((out / "plan.json").read_text())
    ln = plan["links"][0]
    with served_over_link(out, port, shape) as link:
        proxy = link.proxy(port)
        local = SplitModel(out, spinning=False)
        remote = RemoteSplitModel(out, f"http://127.0.0.1:{proxy.port}", local=local, timeout=60)
        feeds = [synthetic_inputs(local.inputs, s) for s in range(4)]
        for f in feeds[:2]:
            remote.run(f)
        rows = []
        for i in range(frames):
            t = time.perf_counter()
            r = remote.run(feeds[i % len(feeds)])
            e2e = time.perf_counter() - t
            head = sum(v for k, v in r.seconds.items() if k.startswith("stage"))
            transfer = wire_s(ln, r.bytes_up, "up") + wire_s(ln, r.bytes_down, "down")
            bare = wire_s(ln, r.bytes_up, "up", False) + wire_s(ln, r.bytes_down, "down", False)
            rows.append((e2e, head, r.seconds["server"], r.seconds["round_trip"] - r.seconds["server"], transfer, bare))
        assert remote.stats.local == 0, remote.stats.lines()
    a = np.array(rows)
    e2e, head, server, network, transfer, bare = a.T
    pred_one_rtt = head + server + transfer + ln["rtt_s"] + r.seconds.get("encode", 0) + r.seconds.get("decode", 0)
    pred_plan = head + server + transfer + plan["predicted"]["rtt_s"] + r.seconds.get("encode", 0) + r.seconds.get("decode", 0)
    err_one, err_plan = np.abs(e2e / pred_one_rtt - 1), np.abs(e2e / pred_plan - 1)
    net_err = np.abs(network / (transfer + ln["rtt_s"]) - 1)
    pred_bare = head + server + bare + ln["rtt_s"] + r.seconds.get("encode", 0) + r.seconds.get("decode", 0)
    err_bare = np.abs(e2e / pred_bare - 1)
    return {"plan": str(out), "link": ln["name"], "shaped_by": "tc tbf in netns + delay proxy" if link.shaped else "proxy (no root)",
            "frames": frames, "bytes_up": int(r.bytes_up), "bytes_down": int(r.bytes_down),
            "plan_predicted_ms": plan["predicted"]["total_s"] * 1e3, "measured_e2e_ms": float(np.median(e2e)) * 1e3,
            "device_ms": float(np.median(head)) * 1e3, "server_ms": float(np.median(server)) * 1e3,
            "network_measured_ms": float(np.median(network)) * 1e3, "network_predicted_ms": float(np.median(transfer) + ln["rtt_s"]) * 1e3,
            "network_predicted_payload_only_ms": float(np.median(bare) + ln["rtt_s"]) * 1e3,
            "err_e2e_payload_only_median": float(np.median(err_bare)), "err_e2e_payload_only_worst": float(np.max(err_bare)),
            "err_network_median": float(np.median(net_err)), "err_network_worst": float(np.max(net_err)),
            "err_e2e_one_rtt_median": float(np.median(err_one)), "err_e2e_one_rtt_worst": float(np.max(err_one)),
            "err_e2e_plan_rtt_median": float(np.median(err_plan))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("overhead", "link", "drop", "stream"))
    ap.add_argument("--inflight", type=int, nargs="+", default=[1, 4], help="stream: frames in flight, one run each")
    ap.add_argument("--images", type=Path, help="stream: frames from this folder of images (default: synthetic inputs)")
    ap.add_argument("--to", type=float, default=0.4e6, help="drop: the uplink after the drop, bit/s (default: %(default)s)")
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--port", type=int, default=18765)
    ap.add_argument("--no-shape", action="store_true", help="rate in the proxy even as root")
    ap.add_argument("--no-watchdog", action="store_true", help="drop: switch only on answered frames (as before)")
    ap.add_argument("--to-link", help="drop: to this built-in link (rates and RTT), e.g. 3g, instead of --to")
    ap.add_argument("--stream-k", type=int, help="drop: stream with this many frames in flight (AdaptiveRemote.stream)")
    args = ap.parse_args()
    for d in args.dirs:
        shape = False if args.no_shape else None
        if args.mode == "overhead":
            res = overhead(d, args.frames, args.port)
        elif args.mode == "link":
            res = through_link(d, args.frames, args.port, shape)
        elif args.mode == "stream":
            res = stream_rate(d, args.frames, args.port, args.inflight, shape, args.images)
        else:
            to = (args.to, None, None)
            if args.to_link:  # a links.toml link, e.g. 3g: its rates and RTT
                from splitc.cost.targets import builtin_links

                lk = builtin_links()[args.to_link]
                to = (lk.up_bps, lk.down_bps, lk.rtt_s)
            if args.stream_k:
                res = stream_drop(d, args.frames, args.port, to[0], shape, args.stream_k, to[1], to[2])
            else:
                res = bandwidth_drop(d, args.frames, args.port, to[0], shape, not args.no_watchdog, to[1], to[2])
        print(json.dumps(res), flush=True)



def sweep_choice(sweep: dict, rtt_prior_s: float, up_bps: float, rtt_s: float) -> str:
    """The sweep's best plan on a link of ``up_bps`` (downlink in the sweep's proportion) and ``rtt_s``: each
    interval's latency is a + b / bandwidth at the compile's RTT (its value_at_min/max), plus the RTT's change for a
    plan that uses the link."""
    best = None
    for iv in sweep["intervals"]:
        lo, hi = iv["min_up_bps"], iv["max_up_bps"]
        b = (iv["value_at_min"] - iv["value_at_max"]) / (1 / lo - 1 / hi)
        value = iv["value_at_max"] + b * (1 / up_bps - 1 / hi) + (rtt_s - rtt_prior_s if iv["cut"] else 0.0)
        best = min(best or (value, iv["plan"]), (value, iv["plan"]))
    return best[1]


def bandwidth_drop(out: Path, frames: int, port: int, to_bps: float, shape: bool | None, watchdog: bool = True,
                   to_down_bps: float | None = None, to_rtt_s: float | None = None) -> dict:
    """A --sweep-bandwidth plan streamed over its compile link; the uplink drops to ``to_bps`` (downlink in the
    sweep's proportion unless given; the RTT too when given: a wifi -> 3g drop) mid-stream: how long until the
    client runs the plan the sweep makes best for the new link."""
    from splitc.runtimes.adaptive import AdaptiveRemote

    plan = json.loads((out / "plan.json").read_text())
    ln, sweep = plan["links"][0], plan["sweep"]
    want = sweep_choice(sweep, ln["rtt_s"], to_bps, ln["rtt_s"] if to_rtt_s is None else to_rtt_s)
    with served_over_link(out, port, shape) as link:
        proxy = link.proxy(port, at_server=True)  # the client's TCP sees the shaped link (its watchdog reads it)
        client = AdaptiveRemote(out, f"http://{proxy.host}:{proxy.port}", timeout=60, probe_s=1.0, watchdog=watchdog)
        feeds = synthetic_inputs(client.models[0].local.inputs, 0)
        before = [client.run(feeds) for _ in range(frames)]
        start_plan = client.intervals[client.current]["plan"]
        link.set_rate(to_bps, to_down_bps or to_bps * sweep.get("down_up_ratio", 1.0), to_rtt_s)
        t0, n = time.monotonic(), 0
        while client.intervals[client.current]["plan"] != want and n < 60:
            client.run(feeds)
            n += 1
        switched = client.intervals[client.current]["plan"] == want
        after, alone, probes = [], [], []
        for i in range(frames):  # on the new plan: its frames, timed; and the same plan in process, alternately
            t = time.perf_counter()
            client.run(feeds)
            after.append(time.perf_counter() - t)
            if client.last is not client.models[client.current]:
                probes.append(i)  # a probe of a server plan (AdaptiveRemote.probe_s), not the new plan's frame
            t = time.perf_counter()
            client.models[client.current].local.run(feeds)
            alone.append(time.perf_counter() - t)
        client.close()
    sw = client.switches[-1] if client.switches else None
    return {"plan": str(out), "from_mbps": ln["up_bps"] / 1e6, "to_mbps": to_bps / 1e6, "to_rtt_ms": (to_rtt_s or ln["rtt_s"]) * 1e3,
            "start_plan": start_plan,
            "sweep_choice": want, "switched": switched, "frames_to_switch": n,
            "switch_after_ms": (sw["t"] - t0) * 1e3 if sw and switched else None, "estimated_mbps": sw["estimated_up_mbps"] if sw else None,
            "frames_before": len(before), "server_ms_before": float(np.median([r.seconds.get("server", np.nan) for r in before])) * 1e3,
            "after_median_incl_probes_ms": float(np.median(after)) * 1e3,
            "after_median_ms": float(np.median([x for i, x in enumerate(after) if i not in probes])) * 1e3,
            "new_plan_in_process_ms": float(np.median(alone)) * 1e3, "after_ms": [round(x * 1e3, 1) for x in after],
            "in_process_ms": [round(x * 1e3, 1) for x in alone], "probes_after": probes, "switches": client.lines()}


def stream_drop(out: Path, frames: int, port: int, to_bps: float, shape: bool | None, k: int,
                to_down_bps: float | None = None, to_rtt_s: float | None = None) -> dict:
    """``bandwidth_drop`` for a stream of 3 x ``frames`` frames, ``k`` in flight: the link drops when frame ``frames``
    is taken. Reported: when the stream switched (ms after the drop, frames answered on the old plan since the drop)
    and the frames' completion intervals before the drop and on the new plan."""
    from splitc.runtimes.adaptive import AdaptiveRemote

    plan = json.loads((out / "plan.json").read_text())
    ln, sweep = plan["links"][0], plan["sweep"]
    want = sweep_choice(sweep, ln["rtt_s"], to_bps, ln["rtt_s"] if to_rtt_s is None else to_rtt_s)
    with served_over_link(out, port, shape) as link:
        proxy = link.proxy(port, at_server=True)
        client = AdaptiveRemote(out, f"http://{proxy.host}:{proxy.port}", timeout=60, probe_s=1.0)
        feeds = [synthetic_inputs(client.models[0].local.inputs, s % 8) for s in range(3 * frames)]
        list(client.stream(feeds[:2 * k], inflight=k))  # warm: k connections, sessions
        t_drop = []

        def camera():
            for i, f in enumerate(feeds):
                if i == frames:
                    link.set_rate(to_bps, to_down_bps or to_bps * sweep.get("down_up_ratio", 1.0), to_rtt_s)
                    t_drop.append(time.monotonic())
                yield f

        done, ran = [], []
        for _ in client.stream(camera(), inflight=k):
            done.append(time.monotonic())
            ran.append(client.intervals[client.models.index(client.last)]["plan"])
        client.close()
    sw = [s for s in client.switches if s["t"] >= t_drop[0]]
    first_new = next((i for i, p in enumerate(ran) if i >= frames and p == want), None)
    gaps = np.diff(done) * 1e3
    return {"plan": str(out), "inflight": k, "from_mbps": ln["up_bps"] / 1e6, "to_mbps": to_bps / 1e6, "sweep_choice": want,
            "switch_after_ms": (sw[0]["t"] - t_drop[0]) * 1e3 if sw else None, "estimated_mbps": sw[0]["estimated_up_mbps"] if sw else None,
            "old_plan_frames_after_drop": sum(1 for i, (p, t) in enumerate(zip(ran, done)) if t > t_drop[0] and p != want),
            "frames": len(ran), "interval_before_ms": float(np.median(gaps[k:frames - 1])),
            "interval_new_plan_ms": float(np.median(gaps[first_new:])) if first_new is not None else None,
            "last_plan": ran[-1], "switches": client.lines()}


def stream_frames(model: SplitModel, n: int, images: Path | None) -> list[dict]:
    """n feeds: the images of a folder in turn (a camera's frames: fitted and normalized as plan.json says), or
    synthetic inputs."""
    if images is None:
        return [synthetic_inputs(model.inputs, s % 8) for s in range(n)]
    from splitc.runtimes.image import frame_feeds, list_images

    files = list_images(images)
    feeds = [frame_feeds(model.images, f, model.inputs)[0] for f in files]
    return [feeds[i % len(feeds)] for i in range(n)]


def stream_rate(out: Path, frames: int, port: int, inflights: list[int], shape: bool | None, images: Path | None) -> dict:
    """Frames/s of RemoteSplitModel.stream() with K frames in flight through the emulated link, vs the plan's
    predicted frames/s (1 / the busiest of device, uplink, server, downlink). The plan prices an rpi4 and a T4; the
    prediction "here" takes this machine's measured compute (device stages + codec, server decode+compute+encode) and
    the measured payload sizes at the plan's link rates, as the link mode does for latency."""
    plan = json.loads((out / "plan.json").read_text())
    ln = plan["links"][0]
    with served_over_link(out, port, shape) as link:
        proxy = link.proxy(port)
        local = SplitModel(out, spinning=False)
        feeds = stream_frames(local, frames, images)
        runs = {}
        for k in inflights:
            remote = RemoteSplitModel(out, f"http://127.0.0.1:{proxy.port}", local=local, timeout=60, inflight=k)
            list(remote.stream(feeds[:2 * k]))  # warm: k connections open, sessions warm
            done, results = [], []
            wire0 = link.wire_bytes()
            t0 = time.perf_counter()
            for r in remote.stream(feeds):
                done.append(time.perf_counter())
                results.append(r)
            wire = [(b - a) / len(feeds) for a, b in zip(wire0, link.wire_bytes())] if wire0 else None
            remote.close()
            assert remote.stats.local == 0, remote.stats.lines()
            steady = (len(done) - 1) / (done[-1] - done[0])  # between the first and the last answer: the pipeline is full
            runs[k] = (steady, len(done) / (done[-1] - t0), results, wire)
    rs = runs[max(inflights)][2]
    def med(xs) -> float:
        return float(np.median(xs))

    device = med([sum(v for k, v in r.seconds.items() if k.startswith("stage") or k in ("encode", "decode")) for r in rs])
    server = med([r.seconds["server"] for r in rs])
    up, down = med([r.bytes_up for r in rs]), med([r.bytes_down for r in rs])
    stages = {"device": device, "uplink": wire_s(ln, up, "up"), "server": server, "downlink": wire_s(ln, down, "down")}
    busiest = max(stages, key=stages.get)
    here = 1.0 / stages[busiest]
    bare = 1.0 / max(device, server, wire_s(ln, up, "up", False), wire_s(ln, down, "down", False))  # payload only
    wire = runs[max(inflights)][3]  # bytes per frame on the veth: payload + HTTP/OIP framing + TCP/IP headers + ACKs
    wire_fps = 1.0 / max(device, server, wire[0] * 8 / ln["up_bps"], wire[1] * 8 / ln["down_bps"]) if wire else None
    return {"plan": str(out), "link": ln.get("name"), "up_mbps": ln["up_bps"] / 1e6, "rtt_ms": ln["rtt_s"] * 1e3,
            "shaped_by": "tc tbf in netns + delay proxy" if link.shaped else "proxy (no root)", "frames": frames,
            "frames_from": str(images) if images else "synthetic", "bytes_up": int(up), "bytes_down": int(down),
            "plan_predicted_fps": plan["predicted"]["fps"], "plan_bytes_up": plan["predicted"]["link_bytes"][0]["up"],
            "stage_ms_here": {k: round(v * 1e3, 2) for k, v in stages.items()}, "busiest": busiest,
            "predicted_fps_here": here, "predicted_fps_here_payload_only": bare,
            "plan_wire_bytes_up": plan["predicted"]["link_bytes"][0].get("wire_up"), "wire_bytes_per_frame": [round(x) for x in wire] if wire else None,
            "link_capacity_fps": wire_fps,
            "measured": {k: {"fps_steady": v[0], "fps_incl_fill": v[1], "of_plan": v[0] / plan["predicted"]["fps"],
                             "of_here": v[0] / here, "of_here_payload_only": v[0] / bare, "of_capacity": v[0] / wire_fps if wire_fps else None}
                         for k, v in runs.items()}}


if __name__ == "__main__":
    main()
