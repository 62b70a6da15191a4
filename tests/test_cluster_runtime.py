"""The embedded cluster runtime: worker processes over TCP run hand-made parts of a plan.json "cluster" section
(tests/cluster_fixture.py); outputs are compared with the original model in onnxruntime."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from splitc.errors import SplitcError
from splitc.runtimes import cluster_worker
from splitc.runtimes.cluster import ClusterRunner, weighted_round_robin
from splitc.runtimes.cluster_tcp import TcpEngine

try:
    import cluster_fixture as cf
except ImportError:  # pragma: no cover - run from the repository root
    from tests import cluster_fixture as cf

TOL = 1e-5


def _close(got: list[dict], want: list[np.ndarray]) -> float:
    assert len(got) == len(want)
    return max(float(np.abs(g["y"] - w).max()) for g, w in zip(got, want))


def _only(section: dict, n: int) -> dict:
    """The section with only its n-device plan."""
    return {**section, "plans": [p for p in section["plans"] if len(p["devices"]) == n]}


class Delayed(TcpEngine):
    """TcpEngine whose answers from ``slow`` devices arrive ``delay`` s late; records completion order and the most
    requests outstanding at once."""

    def __init__(self, *a, slow=(), delay=0.0, **kw):
        super().__init__(*a, **kw)
        self.slow, self.delay, self.done, self.calls = set(slow), delay, [], []
        self.outstanding = self.peak = 0
        self._count = threading.Lock()

    def submit(self, device, file, feeds, tag):
        inner, outer = super().submit(device, file, feeds, tag), Future()
        with self._count:
            self.calls.append((device, tag))
            self.outstanding += 1
            self.peak = max(self.peak, self.outstanding)

        def finish(f):
            with self._count:
                self.outstanding -= 1
                self.done.append(tag)
            outer.set_exception(f.exception()) if f.exception() else outer.set_result(f.result())

        def later(f):
            threading.Timer(self.delay, finish, [f]).start() if device in self.slow else finish(f)

        inner.add_done_callback(later)
        return outer


def test_weighted_round_robin_interleaves_replicas_by_share():
    assert weighted_round_robin([2, 1]) == [0, 1, 0]
    order = weighted_round_robin([3, 1, 2])
    assert [order.count(i) for i in range(3)] == [3, 1, 2]
    assert order[:2] != [0, 0]  # interleaved, not a run of replica 0


def test_three_device_plan_spatial_single_channel_equals_original(tmp_path):
    out = cf.write(tmp_path)
    frames = cf.frames(6)
    with ClusterRunner(out, spawn=True) as runner:
        assert runner.state.plan["devices"] == ["pi/0", "pi/1", "pi/2"]
        first = runner.run(frames[0])
        streamed = list(runner.stream(frames, max_in_flight=3))
    want = cf.reference(frames)
    assert np.abs(first["y"] - want[0]).max() <= TOL
    assert _close(streamed, want) <= TOL


def test_stream_returns_frame_order_when_replicas_finish_out_of_order(tmp_path):
    out = cf.write(tmp_path, _only(cf.section(), 2))  # data-parallel, shares 2:1 on pi/0, pi/1
    frames = cf.frames(9, seed=1)
    engine = Delayed(out, spawn=True, slow={"pi/0"}, delay=0.15)
    with ClusterRunner(out, engine=engine) as runner:
        got = list(runner.stream(frames, max_in_flight=4))
    assert _close(got, cf.reference(frames)) <= TOL
    assert engine.done != sorted(engine.done), "the slow replica should have finished its frames last"
    per = {d: sum(1 for dev, _ in engine.calls if dev == d) for d in ("pi/0", "pi/1")}
    assert per == {"pi/0": 6, "pi/1": 3}


def test_stream_keeps_at_most_max_in_flight_frames(tmp_path):
    out = cf.write(tmp_path, _only(cf.section(), 1))
    pulled, yielded, ahead = [0], [0], []

    def source():
        for f in cf.frames(12, seed=2):
            pulled[0] += 1
            ahead.append(pulled[0] - yielded[0])
            yield f

    engine = Delayed(out, spawn=True, slow={"pi/0"}, delay=0.02)
    with ClusterRunner(out, engine=engine) as runner:
        for _ in runner.stream(source(), max_in_flight=3):
            yielded[0] += 1
        with pytest.raises(SplitcError, match="max_in_flight"):
            list(runner.stream(cf.frames(1), max_in_flight=0))
    assert yielded[0] == 12 and max(ahead) == 3  # the iterator is read lazily: 3 frames ahead, never more
    assert engine.peak == 3


def _kill_mid_stream(tmp_path, caplog, how, timeout_s=30.0):
    out = cf.write(tmp_path)
    frames = cf.frames(30, seed=3)
    got = []
    caplog.set_level(logging.WARNING, logger="splitc.cluster")
    with ClusterRunner(out, spawn=True, timeout_s=timeout_s) as runner:
        victim = runner.engine.processes["pi/1"]
        for i, result in enumerate(runner.stream(frames, max_in_flight=4)):
            got.append(result)
            if i == 5:
                how(victim.pid)
        switches, binding, reruns = runner.switches, runner.state.binding, runner.reruns
        if how is _stop and victim.poll() is None:  # the engine kills a worker it gave up on; if not yet, wake it
            os.kill(victim.pid, signal.SIGCONT)
    assert _close(got, cf.reference(frames)) <= TOL  # every frame, in order, right
    assert len(switches) == 1 and switches[0]["device"] == "pi/1" and reruns >= 1  # in-flight frames were re-run
    assert binding == {"pi/0": "pi/0", "pi/1": "pi/2"}  # the 2-device plan, its slot pi/1 rebound to the live pi/2
    lines = [r.getMessage() for r in caplog.records if r.name == "splitc.cluster"]
    assert len(lines) == 1 and "pi/1" in lines[0] and "2-device plan" in lines[0] and "\n" not in lines[0]
    return switches[0]


def _stop(pid):
    os.kill(pid, signal.SIGSTOP)


def test_worker_killed_mid_stream_loses_no_frame(tmp_path, caplog):
    switch = _kill_mid_stream(tmp_path, caplog, lambda pid: os.kill(pid, signal.SIGKILL))
    assert switch["seconds"] < 5.0


def test_worker_that_hangs_is_dropped_after_the_timeout(tmp_path, caplog):
    switch = _kill_mid_stream(tmp_path, caplog, _stop, timeout_s=1.0)
    assert "no answer in 1 s" in switch["why"]


def test_a_busy_worker_past_the_timeout_answers_its_ping_and_is_kept(tmp_path, caplog):
    out = cf.write(tmp_path, _only(cf.section(), 2))
    frames = cf.frames(4, seed=8)
    caplog.set_level(logging.WARNING, logger="splitc.cluster")
    engine = Delayed(out, spawn=True, slow={"pi/0"}, delay=1.2)  # pi/0's answers come 1.2 s late, its worker is fine
    with ClusterRunner(out, engine=engine, timeout_s=0.5) as runner:
        got = list(runner.stream(frames, max_in_flight=2))
        assert runner.switches == [] and runner.live == ["pi/0", "pi/1", "pi/2"]
    assert _close(got, cf.reference(frames)) <= TOL and not caplog.records


def _serve(folder):
    server = cluster_worker.Server(("127.0.0.1", 0), cluster_worker.Parts(folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_runner_connects_to_workers_started_elsewhere(tmp_path):
    out = cf.write(tmp_path)
    servers = {f"pi/{k}": _serve(out) for k in range(3)}
    workers = {slot: f"127.0.0.1:{s.server_address[1]}" for slot, s in servers.items()}
    try:
        frames = cf.frames(3, seed=5)
        with ClusterRunner(out, workers) as runner:
            assert _close(list(runner.stream(frames, 2)), cf.reference(frames)) <= TOL
        with pytest.raises(SplitcError, match=r"no worker address for device pi/2; give workers="):
            ClusterRunner(out, {k: v for k, v in workers.items() if k != "pi/2"})
        with pytest.raises(SplitcError, match=r"cluster device pi/1: cannot reach its worker at 127.0.0.1:1 "):
            ClusterRunner(out, {**workers, "pi/1": "127.0.0.1:1"})
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def test_worker_loads_only_part_files_inside_its_folder(tmp_path):
    out = cf.write(tmp_path / "out")
    (tmp_path / "outside.onnx").write_bytes((out / "parts/whole.onnx").read_bytes())
    (out / "parts/link.onnx").symlink_to(tmp_path / "outside.onnx")
    server = _serve(out)
    try:
        with socket.create_connection(server.server_address) as sock:
            def ask(file):
                cluster_worker.send(sock, {"op": "load", "id": 1, "file": file})
                return cluster_worker.recv(sock)[0]

            assert ask("parts/whole.onnx")["ok"] is True
            for bad in ("../outside.onnx", str(tmp_path / "outside.onnx"), "parts/link.onnx"):
                reply = ask(bad)
                assert reply["ok"] is False and ("leaves the output folder" in reply["error"] or "relative" in reply["error"]), bad
            cluster_worker.send(sock, {"op": "run", "id": 2, "file": "../outside.onnx", "tag": 0}, b"")
            assert "leaves the output folder" in cluster_worker.recv(sock)[0]["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_worker_checks_the_part_digest_then_the_payload_against_the_parts_input(tmp_path):
    from splitc.runtimes.files import sha256_file
    from splitc.runtimes.wire import encode

    out = cf.write(tmp_path)
    server = _serve(out)
    try:
        with socket.create_connection(server.server_address) as sock:
            cluster_worker.send(sock, {"op": "run", "id": 2, "file": "parts/whole.onnx", "tag": 1}, b"")
            assert "not loaded here" in cluster_worker.recv(sock)[0]["error"]
            cluster_worker.send(sock, {"op": "load", "id": 3, "file": "parts/whole.onnx", "sha256": "0" * 64})
            assert "its sha256 is not the plan's 0000000000000000" in cluster_worker.recv(sock)[0]["error"]
            cluster_worker.send(sock, {"op": "load", "id": 4, "file": "parts/whole.onnx", "sha256": sha256_file(out / "parts/whole.onnx")})
            assert cluster_worker.recv(sock)[0]["ok"] is True
            wrong = encode({"x": np.zeros((1, 3, 9, 8), np.float32)}, entropy="raw")
            cluster_worker.send(sock, {"op": "run", "id": 5, "file": "parts/whole.onnx", "tag": 1}, wrong)
            reply = cluster_worker.recv(sock)[0]
            assert reply == {"id": 5, "ok": False, "error": reply["error"]} and "float32[1, 3, 8, 8]" in reply["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_plan_naming_a_part_outside_the_folder_is_refused(tmp_path):
    section = cf.section()
    section["plans"][1]["stages"][0]["parts"][1]["file"] = "../whole.onnx"
    out = cf.write(tmp_path / "out", section)
    with pytest.raises(SplitcError) as err:
        ClusterRunner(out, spawn=True)
    assert str(err.value) == "plan.json: cluster.plans[1].stages[0].parts[1].file '../whole.onnx' leaves the output folder"


def test_worker_command_line_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "splitc.runtimes.cluster_worker", "--listen", "127.0.0.1:0", "--dir",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "nope: no such folder" in proc.stderr


def test_cluster_runtime_imports_neither_the_compiler_nor_ray(tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import splitc.runtimes.cluster, splitc.runtimes.cluster_worker, splitc.runtimes.cluster_ray
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnx_ir", "pulp", "networkx", "ray"))))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_worker_closes_a_connection_whose_frame_does_not_parse(tmp_path):
    server = _serve(cf.write(tmp_path))
    try:
        for bad in (b"\xff\xff\xff\xff", b"\x08\x00\x00\x00\x04\x00\x00\x00[[[[", b"\x06\x00\x00\x00\x40\x00\x00\x00xx"):
            with socket.create_connection(server.server_address, timeout=10) as sock:
                sock.sendall(bad)
                assert sock.recv(1) == b"", bad  # closed without an answer
        with socket.create_connection(server.server_address, timeout=10) as sock:  # the worker still serves
            cluster_worker.send(sock, {"op": "ping", "id": 3})
            assert cluster_worker.recv(sock)[0] == {"id": 3, "ok": True}
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s["plans"][2]["stages"][0]["parts"][0].update(slot="pi/1"), "cluster.plans[2].stages[0].parts[0].slot 'pi/1' is not one of pi/0"),
    (lambda s: s["plans"][1]["stages"][0].update(shares=[2, 0]), "cluster.plans[1].stages[0].shares[1] 0 is not an integer in [1, 65536]"),
    (lambda s: s["plans"][0]["stages"][0]["parts"][1].update(output_rows=[3, 8]), "cluster.plans[0].stages[0].parts: output_rows [[0, 4], [3, 8]] do not tile"),
    (lambda s: s["plans"][0]["stages"][0]["parts"][0].update(input_rows=[6, 0]), "parts[0].input_rows list is not a row range"),
    (lambda s: s["plans"][0]["stages"][2].update(merge={"axis": 3}), "cluster.plans[0].stages[2].merge.axis 3 is not one of 1, -1"),
    (lambda s: s["plans"][0].update(devices=["pi/0", "pi/0"]), "cluster.plans[0].devices list names a device twice"),
    (lambda s: s.update(hub="cam"), "cluster.hub 'cam' is not one of pi/0, pi/1, pi/2"),
])
def test_cluster_section_fields_are_checked_before_anything_starts(tmp_path, edit, message):
    section = cf.section()
    edit(section)
    out = cf.write(tmp_path, section)
    with pytest.raises(SplitcError) as err:
        ClusterRunner(out, workers={})  # no worker is contacted: the plan is refused first
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_part_swapped_after_compile_is_refused_by_its_worker(tmp_path):
    out = cf.write(tmp_path)
    (out / "parts/fc1.onnx").write_bytes((out / "parts/fc0.onnx").read_bytes())  # same inputs, other weights
    with pytest.raises(SplitcError) as err:
        ClusterRunner(out, spawn=True)
    assert str(err.value).startswith("cluster device pi/2: part parts/fc1.onnx: its sha256 is not the plan's ")


def test_a_device_that_rejoins_gets_its_plan_back_mid_stream(tmp_path, caplog):
    out = cf.write(tmp_path)
    frames = cf.frames(30, seed=6)
    caplog.set_level(logging.WARNING, logger="splitc.cluster")
    got, plans = [], []
    with ClusterRunner(out, spawn=True) as runner:
        for i, result in enumerate(runner.stream(frames, max_in_flight=4)):
            got.append(result)
            plans.append(len(runner.state.plan["devices"]))
            if i == 5:
                os.kill(runner.engine.processes["pi/1"].pid, signal.SIGKILL)
            if i == 15:
                runner.join("pi/1")  # a new worker process for it
        with pytest.raises(SplitcError, match="device pi/1 is already running"):
            runner.join("pi/1")
        binding, whys = runner.state.binding, [s["why"] for s in runner.switches]
    assert _close(got, cf.reference(frames)) <= TOL
    assert plans[0] == 3 and 2 in plans and plans[-1] == 3
    assert binding == {"pi/0": "pi/0", "pi/1": "pi/1", "pi/2": "pi/2"} and whys[1] == "joined"
    lines = [r.getMessage() for r in caplog.records if r.name == "splitc.cluster"]
    assert len(lines) == 2 and lines[1].startswith("cluster: device pi/1 joined; switched to the 3-device plan [pi/0 pi/1 pi/2]")
