"""The emulated cluster (splitc/tools/clusteremu.py, clustercalib.py): CPU quotas slow a device by its share, a port
moves bytes at its rate plus the RTT, a shared LAN caps the cluster, and nothing is left behind, even on error."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from splitc.errors import SplitcError
from splitc.tools import clusteremu
from splitc.tools.clustercalib import (
    cpu_loop,
    profile_under_quota,
    start_sink,
    transfer_seconds,
)
from splitc.tools.clusteremu import (
    CGROUP_CPU,
    EmulatedCluster,
    can_shape,
    cgroup_reason,
)

SHAPE = pytest.mark.skipif(not can_shape(), reason="needs root, ip and tc with network namespaces")
QUOTA = pytest.mark.skipif(cgroup_reason() is not None, reason=f"no CPU quota: {cgroup_reason()}")


def _leftovers(cluster: EmulatedCluster) -> list[str]:
    """Namespaces, interfaces and cgroups of this cluster still present."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left = [ln for ln in netns.splitlines() if cluster.tag in ln]
    left += [ln.split(":")[1] for ln in links.splitlines() if f" {cluster._ifx}" in ln]
    return left + [str(p) for p in CGROUP_CPU.glob(f"*{cluster.tag}*")]


@SHAPE
@QUOTA
def test_a_quarter_share_gets_a_quarter_of_a_core():
    """The quota is a ceiling: a quarter share uses at most ~25% of a core's time, a full share more (all of it on
    an idle machine, where the loop then runs 4x slower; benchmarks/cluster.py measures that ratio with the load)."""
    with EmulatedCluster([("full", 1.0, 100e6, 0.0), ("quarter", 0.25, 100e6, 0.0)]) as cluster:
        runs = [(cpu_loop(cluster, "quarter", 2_000_000), cpu_loop(cluster, "full", 2_000_000)) for _ in range(3)]
    quarter = statistics.median(cpu / wall for (wall, cpu), _ in runs)
    full = statistics.median(cpu / wall for _, (wall, cpu) in runs)
    assert 0.1 <= quarter <= 0.28, runs
    assert full >= 1.3 * quarter, runs
    assert statistics.median(q[0] / f[0] for q, f in runs) >= 1.3, runs


@QUOTA
def test_real_time_shares_hold_whatever_else_runs():
    """SCHED_RR under cpu.rt_runtime_us: each device gets its share even on a loaded machine (a CFS quota is only a
    ceiling there), so a loop at 0.12 of a core runs ~4x slower than at 0.48."""
    with EmulatedCluster([("big", 0.48, None, 0.0), ("small", 0.12, None, 0.0)], realtime=True) as cluster:
        runs = [(cpu_loop(cluster, "small", 1_000_000), cpu_loop(cluster, "big", 1_000_000)) for _ in range(3)]
        assert (cluster._groups["small"].path / "cpu.rt_runtime_us").read_text().strip() == str(round(0.12 * clusteremu.PERIOD_US))
    small = statistics.median(cpu / wall for (wall, cpu), _ in runs)
    big = statistics.median(cpu / wall for _, (wall, cpu) in runs)
    assert 0.10 <= small <= 0.13 and 0.40 <= big <= 0.50, runs
    # the share of a core, not wall time: a 30 ms loop's CPU time itself varies 30% between runs (a wall ratio of 2.9
    # was seen with both shares exact), so the ~4x in wall time is benchmarks/cluster.py's to measure
    assert 3.3 <= big / small <= 5.0, runs


@QUOTA
def test_real_time_shares_over_the_kernels_limit_are_one_line_and_leave_nothing():
    cluster = EmulatedCluster([("a", 0.9, None, 0.0), ("b", 0.2, None, 0.0)], realtime=True)
    with pytest.raises(SplitcError, match=r"real-time CPU shares add up to 1.1 of a CPU, over the kernel's 0.95") as err:
        cluster.__enter__()
    assert "\n" not in str(err.value)
    assert list(CGROUP_CPU.glob(f"*{cluster.tag}*")) == []


@SHAPE
@QUOTA
def test_spawned_process_lives_in_its_namespace_and_cgroup():
    with EmulatedCluster([("pi", 0.5, 100e6, 0.0), ("hub", None, None, 0.0)]) as cluster:
        cluster.spawn("pi", [sys.executable, "-c", "import time; time.sleep(30)"], port=None)
        cluster.spawn("hub", [sys.executable, "-c", "import time; time.sleep(30)"], port=None)
        pi, hub = (cluster.processes[n][-1].pid for n in ("pi", "hub"))
        time.sleep(0.3)  # `ip netns exec` enters the namespace, then execs python
        ns = cluster.devices["pi"].netns
        assert os.stat(f"/proc/{pi}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
        assert os.stat(f"/proc/{hub}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino  # local to the hub
        group = CGROUP_CPU / f"splitc-emu-{cluster.tag}" / "pi"
        assert str(pi) in (group / "cgroup.procs").read_text().split()
        assert (group / "cpu.cfs_quota_us").read_text().strip() == str(cluster._groups["pi"].period_us // 2)
        assert (CGROUP_CPU / f"splitc-emu-{cluster.tag}" / "hub" / "cpu.cfs_quota_us").read_text().strip() == "-1"


@SHAPE
def test_a_port_moves_bytes_at_its_rate_plus_the_rtt_both_ways():
    rate, rtt, n = 10e6, 0.1, 1_000_000
    with EmulatedCluster([("pi", None, rate, rtt)]) as cluster:
        sink = start_sink(cluster, "pi")
        assert cluster.reason is None or "quota" in cluster.reason
        tiny = transfer_seconds(sink, 1, "up")
        up, down = transfer_seconds(sink, n, "up"), transfer_seconds(sink, n, "down")
    assert rtt * 0.95 <= tiny <= rtt + 0.08, tiny
    for took in (up, down):  # Ethernet/IP/TCP headers add ~4%
        assert 0.95 <= took / (n * 8 / rate + rtt) <= 1.25, (up, down)


@SHAPE
@QUOTA
def test_a_cluster_plan_runs_on_workers_inside_the_emulated_devices(tmp_path):
    """What benchmarks/cluster.py does, small: a cluster_worker per emulated device, the hub's ClusterRunner reaching
    them through the delay proxies and the bridge; the outputs are the original model's, the bytes crossed the LAN."""
    import numpy as np

    try:
        import cluster_fixture as cf
    except ImportError:  # pragma: no cover - run from the repository root
        from tests import cluster_fixture as cf
    from splitc.runtimes.cluster import ClusterRunner

    out = cf.write(tmp_path)
    devices = [(f"pi-{k}", 0.2, 100e6, 0.004) for k in range(3)]
    argv = [sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "{host}:{port}", "--dir", str(out)]
    frames = cf.frames(4)
    with EmulatedCluster(devices, lan_bps=100e6, realtime=True) as cluster:
        workers = {f"pi/{k}": "{}:{}".format(*cluster.spawn(f"pi-{k}", argv, stdout=subprocess.DEVNULL)) for k in range(3)}
        with ClusterRunner(out, workers=workers) as runner:
            got = [r["y"] for r in runner.stream(frames, max_in_flight=2)]
        sent = int(Path(f"/sys/class/net/{cluster._ifx}u0/statistics/tx_bytes").read_text())
    for g, w in zip(got, cf.reference(frames), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert sent > 4 * frames[0]["x"].nbytes  # every frame's input went to the devices over the uplink


@SHAPE
def test_the_lan_rate_caps_every_port():
    with EmulatedCluster([("pi", None, 1e9, 0.0)], lan_bps=8e6) as cluster:
        took = transfer_seconds(start_sink(cluster, "pi"), 1_000_000, "down")
    assert 0.95 <= took / 1.0 <= 1.25, took


def test_without_namespaces_the_proxy_shapes_and_says_so():
    with EmulatedCluster([("pi", None, 10e6, 0.1)], shape=False) as cluster:
        assert "loopback" in cluster.reason
        sink = start_sink(cluster, "pi")
        assert sink[0] == "127.0.0.1"
        took = transfer_seconds(sink, 500_000, "up")
    assert 0.9 <= took / (0.4 + 0.1) <= 1.5, took


@SHAPE
def test_nothing_is_left_behind_after_an_error_inside():
    with pytest.raises(RuntimeError, match="boom"):
        with EmulatedCluster([("a", 0.5, 10e6, 0.01), ("b", 0.5, 10e6, 0.01)], lan_bps=50e6) as cluster:
            cluster.spawn("a", [sys.executable, "-c", "import time; time.sleep(60)"], port=None)
            cluster.spawn("b", [sys.executable, "-m", "http.server", "--bind", "{host}", "{port}"])
            procs = [p for ps in cluster.processes.values() for p in ps]
            assert len(_leftovers(cluster)) >= 3
            raise RuntimeError("boom")
    assert all(p.poll() is not None for p in procs)
    assert _leftovers(cluster) == []


@SHAPE
def test_a_failure_half_way_through_setup_removes_what_was_made(monkeypatch):
    calls = []

    def tbf(dev, bps, netns=None):
        calls.append(dev)
        return ["false"] if len(calls) == 3 else clusteremu_tbf(dev, bps, netns)

    clusteremu_tbf = clusteremu._tbf
    monkeypatch.setattr(clusteremu, "_tbf", tbf)
    cluster = EmulatedCluster([("a", 0.5, 10e6, 0.0), ("b", 0.5, 10e6, 0.0)])
    with pytest.raises(SplitcError, match="emulated cluster: `false` failed"):
        cluster.__enter__()
    assert len(calls) == 4  # the commands are built first: the 3rd one (device b) fails when run
    assert _leftovers(cluster) == []


@SHAPE
def test_what_a_killed_run_left_is_removed_by_the_next():
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    ns, group = f"splitc-emu-{dead.pid}-1-0", CGROUP_CPU / f"splitc-emu-{dead.pid}-1" / "pi"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    if cgroup_reason() is None:
        group.mkdir(parents=True)
    with EmulatedCluster([("pi", None, 10e6, 0.0)]):
        pass
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not group.parent.exists()


@pytest.mark.parametrize("device, message", [
    (("pi", 0.0, 10e6, 0.0), "cpu share 0.0 of pi"), (("pi", float("nan"), 10e6, 0.0), "cpu share nan of pi"),
    (("pi", 1.0, -1.0, 0.0), "pi: port rate -1.0"), (("pi", 1.0, 10e6, float("inf")), "pi: rtt inf"),
    (("p i", 1.0, 10e6, 0.0), "device name 'p i'"),
])
def test_bad_devices_are_one_line_errors(device, message):
    with pytest.raises(SplitcError, match=message.replace("(", r"\(")) as err:
        with EmulatedCluster([device], shape=False):
            pass
    assert "\n" not in str(err.value)


@QUOTA
def test_a_profile_under_a_fifth_of_a_core_measures_five_times_the_cpu_time(tmp_path):
    """`splitc profile` runs inside the quota: the model it measured took ~ its CPU time / share (a fifth of a core
    binds even on a busy 2-core machine). (Its per-kernel fit is not asserted: the quota's 4 ms pauses land in
    0.3 ms kernels, and the fit predicted ~3x instead of 5x here.)"""
    import numpy as np
    import onnxruntime as ort
    from conftest import save_model

    from splitc.tools import zoo

    model = save_model(zoo.resnet18(size=96), tmp_path / "r18.onnx")
    path = profile_under_quota(0.2, [model], tmp_path, runs=8, warmup=2, calibration=False)
    measured = tomllib.loads(path.read_text())["measured"]["models"]["r18.onnx"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options)
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, 96, 96), np.float32)}
    session.run(None, feed)
    cpu = []
    for _ in range(8):
        t = time.process_time()
        session.run(None, feed)
        cpu.append(time.process_time() - t)
    # a CFS quota is a ceiling: on a loaded machine (CI shares its 2 cores) the profiled run gets less than its fifth,
    # so only the lower bound is tight (7.9x was seen in a CI run); the upper one catches a unit mistake
    assert 3.5 <= measured["wall_s"] / statistics.median(cpu) <= 20, (measured, cpu)
    t = time.monotonic()
    assert profile_under_quota(0.2, [model], tmp_path, runs=8, warmup=2, calibration=False) == path  # cached
    assert time.monotonic() - t < 1
    assert list(Path(tmp_path).glob("*.tmp.toml")) == []
    assert "0.2 of one core" in tomllib.loads(path.read_text())["description"]
