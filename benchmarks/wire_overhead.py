"""Bytes a request really puts on the emulated link, beyond its payload: where Link.message_bytes and
segment_header_bytes (splitc/cost/targets.py) come from. As root (netns + veth + tc tbf):

    .venv/bin/python benchmarks/wire_overhead.py OUT_A/ OUT_B/ [--frames 20]   # two plans, different payload sizes

Frames run one at a time (K=1) through `splitc serve` behind the shaped veth (the device's own TCP on the link, as
in `serve_latency.py drop`). Per frame: payload bytes each way (what the client posted / got), and the bytes and
packets the veth's tbf qdisc sent each way (`tc -s qdisc`: every header included, what tbf paces). Between two
payload sizes, the extra bytes over the extra packets is the header per packet; what is left, a constant per message.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from serve_latency import start_server, stop, stream_frames
from splitc.runtimes.ort import SplitModel
from splitc.runtimes.remote import RemoteSplitModel
from splitc.serving.linkemu import Link


def qdisc_sent(dev: str, netns: str | None = None) -> tuple[int, int]:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["tc", "-s", "qdisc", "show", "dev", dev]
    m = re.search(r"Sent (\d+) bytes (\d+) pkt", subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return int(m.group(1)), int(m.group(2))


def measure(out: Path, frames: int, port: int, images: Path | None) -> dict:
    ln = json.loads((out / "plan.json").read_text())["links"][0]
    with Link(ln["up_bps"], ln["down_bps"], ln["rtt_s"], shape=True) as link:
        proc, _ = start_server(out, link.host, port, link.exec_prefix)
        try:
            proxy = link.proxy(port, at_server=True)
            local = SplitModel(out, spinning=False)
            remote = RemoteSplitModel(out, f"http://{proxy.host}:{proxy.port}", local=local, timeout=60)
            feeds = stream_frames(local, frames, images)
            for f in feeds[:2]:
                remote.run(f)
            devs = ((link._veth, None), (link._veth[:-1] + "s", link.netns))
            before = [qdisc_sent(*d) for d in devs]
            sizes = [(r.bytes_up, r.bytes_down) for r in (remote.run(f) for f in feeds)]
            time.sleep(0.5)  # the last acknowledgements
            after = [qdisc_sent(*d) for d in devs]
        finally:
            stop(proc)
    up, down = np.mean(sizes, axis=0)
    (bu, pu), (bd, pd) = [((a[0] - b[0]) / frames, (a[1] - b[1]) / frames) for a, b in zip(after, before)]
    return {"plan": str(out), "frames": frames, "payload_up": up, "payload_down": down, "wire_up": bu, "packets_up": pu,
            "wire_down": bd, "packets_down": pd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs=2, type=Path)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--port", type=int, default=18790)
    ap.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared/images")
    args = ap.parse_args()
    a, b = (measure(d, args.frames, args.port, args.images if args.images.is_dir() else None) for d in args.dirs)
    header = ((b["wire_up"] - b["payload_up"]) - (a["wire_up"] - a["payload_up"])) / (b["packets_up"] - a["packets_up"])
    message = [r["wire_up"] - r["payload_up"] - header * r["packets_up"] for r in (a, b)]
    mss = 1448.0
    fitted = [(r["wire_up"] / (1 + header / mss)) - r["payload_up"] for r in (a, b)]  # the linear model's constant
    print(json.dumps({"runs": [a, b], "header_bytes_per_packet": header, "framing_bytes_per_request": message,
                      "message_bytes_linear_model": fitted}, indent=1))


if __name__ == "__main__":
    main()
