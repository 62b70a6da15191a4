"""splitc serve (KServe, Open Inference Protocol v2) and the remote device client, on 127.0.0.1 with real sockets.

Every loop is bounded; servers run as subprocesses (``python -m splitc serve``) and are stopped by their pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("kserve", reason="splitc serve needs KServe: pip install 'splitc[serve]'")
pytest.importorskip("tritonclient.http", reason="the remote client needs tritonclient: pip install 'splitc[remote]'")

from splitc.compiler import CompileOptions, compile_model  # noqa: E402
from splitc.runtimes.ort import SplitModel, synthetic_inputs  # noqa: E402
from splitc.runtimes.remote import RemoteSplitModel  # noqa: E402
from splitc.runtimes.segment import PAYLOAD_SUFFIX, Segment  # noqa: E402
from splitc.tools import zoo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
TOKEN = "s3cret-token-for-tests"


def slow_device_profile(path: Path) -> Path:
    """rpi4 with 1/100 of its compute: a camera so slow that the small bottlenet runs on the server."""
    import re

    text = (ROOT / "splitc/profiles/rpi4.toml").read_text().replace('name = "rpi4"', 'name = "slowcam"')
    text = re.sub(r"^(\w+) = ([0-9.]+)e9$", lambda m: f"{m.group(1)} = {m.group(2)}e7", text, flags=re.M)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve")
    onnx.save(zoo.bottlenet(size=64, classes=10, width=32, depth=2), d / "m.onnx")
    compile_model(d / "m.onnx", d / "out", CompileOptions(target=f"{slow_device_profile(d / 'slowcam.toml')},cloud",
                                                          link="up=100Mbps,down=300Mbps,rtt=5ms"))
    plan = json.loads((d / "out" / "plan.json").read_text())
    assert {s["target"] for s in plan["stages"]} == {"slowcam", "cloud"}, "the fixture plan must really cut"
    return d / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, out: Path, *extra: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while the test runs
        self.proc = subprocess.Popen([sys.executable, "-m", "splitc", "serve", str(out), "--port", str(self.port),
                                      "--grpc-port", "0", *extra], stdout=self.log, stderr=subprocess.STDOUT,
                                     text=True, env=ENV, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"splitc serve exited: {self.output()}"
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("splitc serve did not become ready within 60 s")

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode, self.output()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="module")
def server(plan_dir, tmp_path_factory):
    token = tmp_path_factory.mktemp("tok") / "token"
    token.write_text(TOKEN + "\n")
    s = Server(plan_dir, "--token-file", str(token))
    yield s
    s.stop()


def wait_ready(url: str, deadline: float) -> None:
    """Until ``url``'s /v2/health/ready answers or the monotonic ``deadline`` passes."""
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1)
            return
        except OSError:
            time.sleep(0.2)


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def binary_request(payloads: dict[str, bytes], outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """An OIP v2 request with the binary data extension, written by hand (what any HTTP client can send)."""
    head = {"inputs": [{"name": n, "shape": [len(p)], "datatype": "UINT8", "parameters": {"binary_data_size": len(p)}}
                       for n, p in payloads.items()],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs]}
    text = json.dumps(head).encode()
    return text + b"".join(payloads.values()), {"Inference-Header-Content-Length": str(len(text)),
                                               "Content-Type": "application/octet-stream",
                                               "Authorization": f"Bearer {TOKEN}"}


def head_payloads(plan_dir: Path, plan: dict | None = None, seed: int = 0) -> tuple[Segment, dict[str, bytes]]:
    """Run the device stages in process and encode what goes up, as the client does."""
    model = SplitModel(plan_dir)
    seg = Segment(plan or model.plan)
    store = dict(synthetic_inputs(model.inputs, seed))
    sess = model.sessions[0]
    store.update(zip([o.name for o in sess.get_outputs()], sess.run(None, {i.name: store[i.name] for i in sess.get_inputs()})))
    return seg, {hop["tensor"] + PAYLOAD_SUFFIX: seg.encode(hop, store) for hop in seg.up}


def test_remote_run_equals_in_process_run(server, plan_dir):
    local = SplitModel(plan_dir)
    remote = RemoteSplitModel(plan_dir, server.url, token=TOKEN, local=local)
    for seed in range(3):
        feeds = synthetic_inputs(local.inputs, seed)
        got, want = remote.run(feeds), local.run(feeds)
        for name in want.outputs:
            np.testing.assert_array_equal(got.outputs[name], want.outputs[name])
        assert got.bytes_up > 0 and got.seconds["round_trip"] > 0
    assert remote.stats.remote == 3 and remote.stats.local == 0
    streamed = list(remote.stream([synthetic_inputs(local.inputs, s) for s in range(5)], inflight=3))
    for s, r in enumerate(streamed):  # in order, each frame's own answer
        np.testing.assert_array_equal(r.outputs["logits"], local.run(synthetic_inputs(local.inputs, s)).outputs["logits"])
    assert remote.stats.remote == 8
    remote.close()


def test_independent_oip_client_plain_and_binary(server, plan_dir):
    """tritonclient speaking plain OIP tensors (JSON and binary) gets what the in-process runtime computes."""
    import tritonclient.http as http

    local = SplitModel(plan_dir)
    seg = Segment(local.plan)
    feeds = synthetic_inputs(local.inputs, 1)
    store = dict(feeds)
    sess = local.sessions[0]
    store.update(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for hop in seg.up:  # what crosses, as the server decodes it (an image input crosses as a JPEG frame)
        store.update(seg.decode(hop, seg.encode(hop, store)))
    want = local.run(feeds).outputs
    client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
    meta = client.get_model_metadata(seg.name, headers={"Authorization": f"Bearer {TOKEN}"})
    assert {i["name"] for i in meta["inputs"]} >= {w["name"] for w in seg.wire_specs(seg.up)}
    for binary in (False, True):
        inputs = []
        for w in seg.wire_specs(seg.up):
            arr = np.asarray(store[w["name"]])
            x = http.InferInput(w["name"], list(arr.shape), {"uint8": "UINT8", "float32": "FP32"}[arr.dtype.name])
            x.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(x)
        res = client.infer(seg.name, inputs, headers={"Authorization": f"Bearer {TOKEN}"},
                           outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(res.as_numpy("logits"), want["logits"], rtol=1e-6, atol=1e-6)
        params = res.get_response()["parameters"]
        assert set(params) >= {"decode_us", "compute_us", "encode_us"} and params["compute_us"] > 0


def test_bad_requests_get_their_status_and_one_line(server, plan_dir, tmp_path):
    seg, payloads = head_payloads(plan_dir)
    infer = f"{server.url}/v2/models/{seg.name}/infer"
    outs = [h["tensor"] + PAYLOAD_SUFFIX for h in seg.down]
    body, headers = binary_request(payloads, outs)
    assert post(infer, body, headers)[0] == 200
    # 401: no token, a wrong one (same length too)
    assert post(infer, body, {k: v for k, v in headers.items() if k != "Authorization"})[0] == 401
    assert post(infer, body, {**headers, "Authorization": "Bearer " + "x" * len(TOKEN)})[0] == 401
    # 404: unknown model; endpoints a device does not need are not exposed
    assert post(f"{server.url}/v2/models/nope/infer", body, headers)[0] == 404
    assert post(f"{server.url}/v2/repository/models/{seg.name}/unload", b"", headers)[0] == 404
    # 400: a payload made for another plan, truncated, or corrupted; each with one line naming the cause
    other = json.loads((plan_dir / "plan.json").read_text())
    other["model"]["sha256"] = "0" * 64
    _, foreign = head_payloads(plan_dir, other)
    code, text = post(infer, *binary_request(foreign, outs))
    assert code == 400 and "plan" in json.loads(text)["error"] and "\n" not in json.loads(text)["error"]
    name, blob = next(iter(payloads.items()))
    code, text = post(infer, *binary_request({name: blob[: len(blob) // 2]}, outs))
    assert code == 400 and "\n" not in json.loads(text)["error"]
    code, text = post(infer, *binary_request({name: b"SPLC" + bytes(40)}, outs))
    assert code == 400
    # 413: over the plan's request limit, by Content-Length and by a body that does not declare one
    limit = seg.max_request_bytes()
    assert post(infer, b"x" * (limit + 1), headers)[0] == 413

    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    req = urllib.request.Request(infer, data=chunks(), method="POST", headers={**headers, "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 413


def test_bounded_fuzz_never_crashes_or_leaks(server, plan_dir):
    seg, payloads = head_payloads(plan_dir)
    infer = f"{server.url}/v2/models/{seg.name}/infer"
    outs = [h["tensor"] + PAYLOAD_SUFFIX for h in seg.down]
    name, blob = next(iter(payloads.items()))
    good_body, good_headers = binary_request(payloads, outs)
    rng = np.random.default_rng(0)
    codes = []
    rss0 = None
    wire = seg.wire_specs(seg.up)[0]
    for i in range(120):
        kind = i % 5
        if kind == 0:  # byte edits in the payload
            b = bytearray(blob)
            for j in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[j] = int(rng.integers(0, 256))
            body, headers = binary_request({name: bytes(b)}, outs)
        elif kind == 1:  # truncations
            body, headers = binary_request({name: blob[: int(rng.integers(0, len(blob)))]}, outs)
        elif kind == 2:  # a wrong Inference-Header-Content-Length
            body, headers = good_body, {**good_headers, "Inference-Header-Content-Length": str(int(rng.integers(0, len(good_body) + 50)))}
        elif kind == 3:  # byte edits anywhere in the request, JSON header included
            b = bytearray(good_body)
            for j in rng.integers(0, len(b), size=4):
                b[j] = int(rng.integers(0, 256))
            body, headers = bytes(b), good_headers
        else:  # plain JSON tensors of the wrong shape: KServe's own decoder, then the model's checks
            shape = [int(rng.integers(1, 4))]
            body = json.dumps({"inputs": [{"name": wire["name"], "shape": shape, "datatype": "FP32", "data": [0.5] * shape[0]}]}).encode()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        code, text = post(infer, body, headers)
        codes.append(code)
        assert code < 500, f"request {i} (kind {kind}) got {code}: {text[:300]!r}"
        if i == 20:
            rss0 = server.rss_kb()
    assert sum(c == 400 for c in codes) > 60  # most of them are rejected by the codec or KServe's decoder
    assert server.rss_kb() - rss0 < 60_000, "the server's memory grew by more than 60 MB over 100 bad requests"
    code, text = post(infer, good_body, good_headers)
    assert code == 200  # still serving
    assert "Traceback" not in server.output()  # a bad request is the client's one line, not a traceback in the log


def test_no_frame_lost_through_refusal_restart_and_kill(plan_dir):
    local = SplitModel(plan_dir)
    port = free_port()
    remote = RemoteSplitModel(plan_dir, f"http://127.0.0.1:{port}", timeout=1.0, backoff=(0.05, 0.2), local=local)
    frames = [synthetic_inputs(local.inputs, s) for s in range(4)]
    want = [local.run(f).outputs["logits"] for f in frames]
    for f, w in zip(frames, want):  # nothing listens: every frame computed here
        np.testing.assert_array_equal(remote.run(f).outputs["logits"], w)
    assert remote.stats.local == 4 and remote.stats.failures["refused"] >= 1
    srv = Server(plan_dir, port=port)
    try:
        deadline = time.monotonic() + 20
        while remote.stats.remote == 0 and time.monotonic() < deadline:  # back-off ends, the server is used again
            np.testing.assert_array_equal(remote.run(frames[0]).outputs["logits"], want[0])
        assert remote.stats.remote >= 1
        srv.proc.kill()  # the server dies mid-stream
        srv.proc.wait(timeout=10)
        results = list(remote.stream(frames * 2, inflight=2))
        assert len(results) == 8
        for r, w in zip(results, want * 2):
            np.testing.assert_array_equal(r.outputs["logits"], w)
        assert sum(remote.stats.failures.values()) == remote.stats.local and remote.stats.local >= 8
    finally:
        srv.stop(signal.SIGKILL)
        remote.close()


def test_a_server_that_never_answers_times_out_to_local(plan_dir):
    local = SplitModel(plan_dir)
    with socket.socket() as mute:  # accepts connections (backlog), never reads or answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        remote = RemoteSplitModel(plan_dir, f"http://127.0.0.1:{mute.getsockname()[1]}", timeout=0.3, local=local)
        feeds = synthetic_inputs(local.inputs, 0)
        t = time.perf_counter()
        np.testing.assert_array_equal(remote.run(feeds).outputs["logits"], local.run(feeds).outputs["logits"])
        assert time.perf_counter() - t < 5
        assert remote.stats.failures["timeout"] == 1, remote.stats.lines()
        remote.close()


def test_sigterm_drains_requests_in_flight_and_exits_0(plan_dir):
    seg, payloads = head_payloads(plan_dir)
    srv = Server(plan_dir)
    body, headers = binary_request(payloads, [h["tensor"] + PAYLOAD_SUFFIX for h in seg.down])
    headers.pop("Authorization")
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(post(f"{srv.url}/v2/models/{seg.name}/infer", body, headers)[0]))
               for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    code, out = srv.stop(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert code == 0, out[-2000:]
    assert f"loaded {seg.name}" in out and "127.0.0.1" in out
    assert codes and all(c == 200 for c in codes), codes  # whatever was accepted was answered


def test_cli_run_remote_prints_frames_and_failures(server, plan_dir, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    proc = subprocess.run([sys.executable, "-m", "splitc", "run", str(plan_dir), "--remote", server.url, "--token-file",
                           str(token), "--samples", "3"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 frame(s) via the server, 0 computed locally, 0 lost" in proc.stdout
    assert "identical to the in-process split run" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "splitc", "run", str(plan_dir), "--remote", server.url, "--samples", "2",
                           "--json"], capture_output=True, text=True, env=ENV, timeout=120)
    report = json.loads(proc.stdout)  # no token: every frame computed locally, none lost
    assert report["computed_locally"] == 2 and report["lost"] == 0 and report["failures"] == {"unauthorized": 1, "backing off": 1}


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="needs the openssl command to make a test certificate")
def test_tls_and_grpc_with_token(plan_dir, tmp_path):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

    cert, key = self_signed(tmp_path)
    (tmp_path / "token").write_text(TOKEN)
    grpc_port = free_port()
    srv = Server.__new__(Server)  # HTTPS: the readiness probe needs the CA
    srv.port, srv.url = free_port(), None
    srv.log = tempfile.TemporaryFile("w+")
    srv.proc = subprocess.Popen([sys.executable, "-m", "splitc", "serve", str(plan_dir), "--port", str(srv.port), "--grpc-port",
                                 str(grpc_port), "--token-file", str(tmp_path / "token"), "--tls-cert", str(cert), "--tls-key",
                                 str(key)], stdout=srv.log, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    import ssl

    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert srv.proc.poll() is None and time.monotonic() < deadline, srv.output()
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{srv.port}/v2/health/ready", timeout=1, context=ctx)
                break
            except OSError:
                time.sleep(0.2)
        local = SplitModel(plan_dir)
        feeds = synthetic_inputs(local.inputs, 2)
        want = local.run(feeds).outputs["logits"]
        remote = RemoteSplitModel(plan_dir, f"https://127.0.0.1:{srv.port}", token=TOKEN, ca=str(cert), local=local)
        np.testing.assert_array_equal(remote.run(feeds).outputs["logits"], want)
        assert remote.stats.remote == 1
        untrusted = RemoteSplitModel(plan_dir, f"https://127.0.0.1:{srv.port}", token=TOKEN, local=local)  # no CA: refused
        np.testing.assert_array_equal(untrusted.run(feeds).outputs["logits"], want)
        assert untrusted.stats.remote == 0 and untrusted.stats.local == 1
        # gRPC GRPCInferenceService.ModelInfer over TLS, the payload as raw_input_contents
        seg, payloads = head_payloads(plan_dir, seed=2)
        channel = grpc.secure_channel(f"127.0.0.1:{grpc_port}", grpc.ssl_channel_credentials(cert.read_bytes()))
        stub = pbg.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=seg.name, inputs=[
            pb.ModelInferRequest.InferInputTensor(name=n, datatype="UINT8", shape=[len(p)]) for n, p in payloads.items()],
            raw_input_contents=list(payloads.values()))
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ModelInfer(request, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30)
        down = seg.down[0]
        got = seg.decode(down, reply.raw_output_contents[0])
        np.testing.assert_array_equal(got["logits"], want)
        channel.close()
    finally:
        code, out = srv.stop()
    assert code == 0, out[-2000:]


def test_bandwidth_estimator_takes_a_drop_at_once_and_a_rise_slowly():
    from splitc.runtimes.adaptive import BandwidthEstimator

    est = BandwidthEstimator(rtt_prior_s=0.02, down_up_ratio=3.0)
    up, down, rtt = 12_000, 3_000, 0.005  # bytes per frame; the true RTT is 5 ms, not the prior's 20
    for ping in (0.009, 0.005, 0.007):  # health requests: the smallest is the RTT
        est.observe_rtt(ping)
    assert est.rtt == rtt
    for _ in range(6):  # 50 Mbit/s
        est.observe(rtt + 8 * (up + down / 3) / 50e6, up, down)
    assert abs(est.up_bps / 50e6 - 1) < 0.05
    est.observe(rtt + 8 * (up + down / 3) / 1e6, up, down)  # the link drops to 1 Mbit/s: believed at the first frame
    assert abs(est.up_bps / 1e6 - 1) < 0.05
    for _ in range(3):  # and back up: believed more slowly (one fast frame is no proof)
        est.observe(rtt + 8 * (up + down / 3) / 50e6, up, down)
    assert 1e6 < est.up_bps < 50e6 * 0.9


def test_sweep_variants_are_all_served_and_the_client_switches(plan_dir, tmp_path):
    from splitc.runtimes.adaptive import AdaptiveRemote

    src = plan_dir.parent / "m.onnx"
    compile_model(src, tmp_path / "sweep", CompileOptions(target=f"{slow_device_profile(tmp_path / 'slowcam.toml')},cloud",
                                                          link="up=100Mbps,down=300Mbps,rtt=5ms", sweep_bps=(0.5e6, 200e6)))
    intervals = json.loads((tmp_path / "sweep" / "plan.json").read_text())["sweep"]["intervals"]
    remote_plans = [iv["plan"] for iv in intervals if Segment(json.loads((tmp_path / "sweep" / iv["plan"] / "plan.json").read_text())).remote]
    assert len(intervals) >= 2 and remote_plans, intervals
    srv = Server(tmp_path / "sweep")
    try:
        for p in remote_plans:  # every variant with server stages is there, under its fingerprint
            name = Segment(json.loads((tmp_path / "sweep" / p / "plan.json").read_text())).name
            with urllib.request.urlopen(f"{srv.url}/v2/models/{name}/ready", timeout=5) as r:
                assert r.status == 200
        client = AdaptiveRemote(tmp_path / "sweep", srv.url, probe_s=0.0)
        start = client.current
        assert client.intervals[start]["plan"] in remote_plans  # compiled for 100 Mbit/s: the server plan
        feeds = synthetic_inputs(client.models[0].local.inputs, 0)
        client.run(feeds)
        client.estimator.up_bps = 0.4e6  # as if the link had dropped below the sweep's lowest interval
        client._choose(client.estimator.up_bps)
        assert client.intervals[client.current]["plan"] == intervals[0]["plan"] and client.switches
        assert "switched" in client.lines()[0]
        # probes (probe_s=0) send the server plan's last payload again in the background; on loopback the answer
        # is fast and brings the client back to the server plan within a few frames
        for _ in range(50):
            client.run(feeds)
            if client.intervals[client.current]["plan"] in remote_plans:
                break
            time.sleep(0.02)
        assert client.intervals[client.current]["plan"] in remote_plans and client.probes[1] >= 1, client.lines()
        client.close()
    finally:
        srv.stop()


def test_write_deploy_gives_a_kserve_inferenceservice_and_a_containerfile(plan_dir, tmp_path):
    yaml = pytest.importorskip("yaml", reason="reading the manifest needs PyYAML (a kserve dependency)")
    import kserve
    from kubernetes.client import ApiClient

    dest = tmp_path / "deploy"
    proc = subprocess.run([sys.executable, "-m", "splitc", "serve", str(plan_dir), "--write-deploy", str(dest), "--image",
                           "registry.example/splitc-tail:1"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load((dest / "inferenceservice.yaml").read_text())
    k8s = ApiClient()
    meta = k8s._ApiClient__deserialize(doc["metadata"], "V1ObjectMeta")
    pred = doc["spec"]["predictor"]
    by_json = {v: k for k, v in kserve.V1beta1PredictorSpec.attribute_map.items()}
    assert set(pred) <= set(by_json), f"fields KServe's PredictorSpec does not have: {set(pred) - set(by_json)}"
    containers = [k8s._ApiClient__deserialize(c, "V1Container") for c in pred["containers"]]
    volumes = [k8s._ApiClient__deserialize(v, "V1Volume") for v in pred.get("volumes", [])]
    isvc = kserve.V1beta1InferenceService(api_version=doc["apiVersion"], kind=doc["kind"], metadata=meta,
                                          spec=kserve.V1beta1InferenceServiceSpec(
                                              predictor=kserve.V1beta1PredictorSpec(containers=containers, volumes=volumes)))
    assert isvc.kind == "InferenceService" and isvc.api_version == "serving.kserve.io/v1beta1"
    c = isvc.spec.predictor.containers[0]
    assert c.image == "registry.example/splitc-tail:1" and c.readiness_probe.http_get.path == "/v2/health/ready"
    assert c.args == ["--token-file", "/var/run/splitc/token"] and volumes[0].secret.secret_name == "splitc-token"
    assert meta.name == Segment(json.loads((plan_dir / "plan.json").read_text())).name
    text = (dest / "Containerfile").read_text()
    assert 'ENTRYPOINT ["splitc", "serve", "/deploy/plan", "--host", "0.0.0.0", "--port", "8080"' in text
    assert (dest / "plan" / "plan.json").is_file() and SplitModel(dest / "plan").plan == SplitModel(plan_dir).plan
    again = subprocess.run([sys.executable, "-m", "splitc", "serve", str(plan_dir), "--write-deploy", str(dest)],
                           capture_output=True, text=True, env=ENV, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr and again.stderr.count("\n") == 1


def test_emulated_link_limits_rate_and_adds_rtt(plan_dir):
    """As root (CI): the server in a network namespace behind tc tbf; otherwise the proxy shapes. Either way every
    frame pays at least the RTT plus its bytes at the link rate, and not wildly more."""
    from splitc.serving.linkemu import Link

    up, down, rtt = 2e6, 6e6, 0.04
    with Link(up, down, rtt) as link:
        srv_port = free_port()
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([*link.exec_prefix, sys.executable, "-m", "splitc", "serve", str(plan_dir), "--host", link.host,
                                 "--port", str(srv_port), "--grpc-port", "0"], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            proxy = link.proxy(srv_port)
            local = SplitModel(plan_dir)
            remote = RemoteSplitModel(plan_dir, f"http://127.0.0.1:{proxy.port}", timeout=10, local=local, backoff=(0.2, 0.5))
            feeds = synthetic_inputs(local.inputs, 0)
            deadline = time.monotonic() + 60
            while remote.stats.remote == 0 and time.monotonic() < deadline:  # the server starting up: frames go local
                remote.run(feeds)
                time.sleep(0.2)
            assert remote.stats.remote, remote.stats.lines()
            nets = []
            for _ in range(4):
                r = remote.run(feeds)
                assert "round_trip" in r.seconds
                floor = rtt + 8 * r.bytes_up / up + 8 * r.bytes_down / down
                nets.append((r.seconds["round_trip"] - r.seconds["server"]) / floor)
            assert 0.9 <= float(np.median(nets)) <= 2.0, (nets, link.shaped)
        finally:
            proc.terminate()
            proc.wait(timeout=40)


@pytest.fixture(scope="module")
def raw_plan(plan_dir) -> Path:
    """The fixture model with its input sent as int8 symbols (not a JPEG frame): a hop delta coding applies to."""
    out = plan_dir.parent / "out_raw"
    compile_model(plan_dir.parent / "m.onnx", out, CompileOptions(target=f"{plan_dir.parent / 'slowcam.toml'},cloud",
                                                                 link="up=100Mbps,down=300Mbps,rtt=5ms", input_codec="raw"))
    assert not Segment(json.loads((out / "plan.json").read_text())).is_image(Segment(json.loads((out / "plan.json").read_text())).up[0])
    return out


class LoseFrames:
    """RemoteSplitModel._post that loses the requests of the given frames (numbered from 0) before they are sent."""

    def __init__(self, remote, lost: set[int]):
        self.post, self.lost, self.n = remote._post, lost, 0
        remote._post = self

    def __call__(self, payloads, seq=0):
        self.n += 1
        if self.n - 1 in self.lost:
            raise ConnectionRefusedError("lost on the way (test)")
        return self.post(payloads, seq)


@pytest.mark.parametrize("inflight", [1, 3])
def test_remote_delta_stream_resyncs_after_a_failed_frame(raw_plan, inflight):
    """A static camera: frame 0 a key frame, then deltas (all zero, tiny); frame 3 is lost before the server sees it.
    Every frame's output is the in-process one, and after the loss the stream resyncs with a key frame and goes on
    through the server. With frames in flight, those already sent as deltas on frame 3 are a "stream gap" (400),
    computed locally without back-off."""
    srv = Server(raw_plan)
    try:
        local = SplitModel(raw_plan)
        feeds = synthetic_inputs(local.inputs, 0)
        want = local.run(feeds).outputs["logits"]
        remote = RemoteSplitModel(raw_plan, srv.url, local=local, backoff=(0.0, 0.0), timeout=10)
        LoseFrames(remote, {3})
        results = list(remote.stream([feeds] * 12, inflight=inflight))
        for r in results:
            np.testing.assert_array_equal(r.outputs["logits"], want)
        up = [r.bytes_up for r in results]
        key = up[0]
        assert all(b < key / 4 for b in up[1:3]), up  # deltas of a static scene
        remote_frames = [i for i, r in enumerate(results) if "round_trip" in r.seconds]
        gaps = remote.stats.failures.get("stream gap", 0)
        assert remote.stats.failures["refused"] == 1 and remote.stats.local == 1 + gaps, remote.stats.lines()
        assert gaps == inflight - 1, remote.stats.lines()  # the deltas on frame 3 already in flight
        resync = 3 + inflight  # the first frame encoded after the loss was known: a key frame, through the server
        assert up[resync] > key / 2 and resync in remote_frames, (up, remote_frames)
        assert remote_frames == [i for i in range(12) if not 3 <= i < resync], remote_frames
        assert all(b < key / 4 for b in up[resync + 1:]), up  # and deltas again
        assert (remote.stats.key_frames, remote.stats.delta_frames) == (2, 10), remote.stats.lines()  # frame 0, the resync
        assert "10 frame(s) sent as differences, 2 whole" in "\n".join(remote.stats.lines())
        remote.close()
    finally:
        srv.stop()


def test_a_delta_payload_without_a_stream_is_rejected(raw_plan):
    """A delta frame sent stateless (no sequence_id) would be decoded as values: garbage. It is a 400 instead. Sent
    in a stream over gRPC, it decodes."""
    from splitc.runtimes.delta import DeltaEncoder
    from splitc.runtimes.segment import hop_codec

    local = SplitModel(raw_plan)
    seg = Segment(local.plan)
    hop = seg.up[0]
    bits, entropy, _ = hop_codec(hop)
    enc = DeltaEncoder(bits, plan=seg.fingerprint, entropy=entropy)
    store = dict(synthetic_inputs(local.inputs, 0))
    sess = local.sessions[0]
    store.update(zip([o.name for o in sess.get_outputs()], sess.run(None, {i.name: store[i.name] for i in sess.get_inputs()})))
    tensors = {w["name"]: store[w["name"]] for w in hop["wire"]}
    key, delta = enc.encode(tensors), enc.encode(tensors)
    grpc_port = free_port()
    srv = Server(raw_plan, "--grpc-port", str(grpc_port))
    try:
        infer = f"{srv.url}/v2/models/{seg.name}/infer"
        outs = [h["tensor"] + PAYLOAD_SUFFIX for h in seg.down]
        assert post(infer, *binary_request({hop["tensor"] + PAYLOAD_SUFFIX: key}, outs))[0] == 200
        code, text = post(infer, *binary_request({hop["tensor"] + PAYLOAD_SUFFIX: delta}, outs))
        assert code == 400 and "delta frame" in json.loads(text)["error"], text
        # the same two frames as a stream over gRPC (sequence_id an int64 parameter): both decode, to the same answer
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

        want = local.run(synthetic_inputs(local.inputs, 0)).outputs["logits"]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pbg.GRPCInferenceServiceStub(channel)
            for payload in (key, delta):
                request = pb.ModelInferRequest(
                    model_name=seg.name, parameters={"sequence_id": pb.InferParameter(int64_param=42)},
                    inputs=[pb.ModelInferRequest.InferInputTensor(name=hop["tensor"] + PAYLOAD_SUFFIX, datatype="UINT8",
                                                                  shape=[len(payload)])], raw_input_contents=[payload])
                reply = stub.ModelInfer(request, timeout=30)
                np.testing.assert_array_equal(seg.decode(seg.down[0], reply.raw_output_contents[0])["logits"], want)
    finally:
        srv.stop()


def test_a_bandwidth_drop_switches_while_the_frame_is_still_out(plan_dir, tmp_path):
    """The uplink drops from 100 to 0.2 Mbit/s under a frame of ~11 KB (~0.45 s to upload now). The client sees it
    while the frame is out (its upload's acknowledged bytes; the answer's deadline where the socket says nothing),
    switches to the sweep's device-only plan and computes that frame here: the frame returns long before its upload
    could have crossed, with the in-process result, and nothing is lost."""
    from splitc.runtimes.adaptive import AdaptiveRemote
    from splitc.serving.linkemu import Link

    compile_model(plan_dir.parent / "m.onnx", tmp_path / "sweep", CompileOptions(
        target=f"{plan_dir.parent / 'slowcam.toml'},cloud", link="up=100Mbps,down=300Mbps,rtt=5ms", sweep_bps=(0.5e6, 200e6)))
    intervals = json.loads((tmp_path / "sweep" / "plan.json").read_text())["sweep"]["intervals"]
    assert intervals[0]["max_up_bps"] > 0.4e6 and intervals[0]["cut"] == [], intervals  # below ~1 Mbit/s: all on the camera
    with Link(100e6, 300e6, 0.005) as link:
        port = free_port()
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([*link.exec_prefix, sys.executable, "-m", "splitc", "serve", str(tmp_path / "sweep"), "--host",
                                 link.host, "--port", str(port), "--grpc-port", "0"], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            proxy = link.proxy(port, at_server=True)
            client = AdaptiveRemote(tmp_path / "sweep", f"http://{proxy.host}:{proxy.port}", timeout=20, backoff=(0.2, 0.5))
            feeds = synthetic_inputs(client.models[0].local.inputs, 0)
            want = {iv["plan"]: m.local.run(feeds).outputs["logits"] for iv, m in zip(intervals, client.models)}
            server_plan = client.intervals[client.current]["plan"]
            deadline = time.monotonic() + 60
            wait_ready(f"http://{proxy.host}:{proxy.port}", deadline)  # the server starting
            while client.stats.remote < 4 and time.monotonic() < deadline:  # warm frames
                np.testing.assert_array_equal(client.run(feeds).outputs["logits"], want[server_plan])
                time.sleep(0.05)
            assert client.stats.remote >= 4 and not client.switches, (client.stats.lines(), client.lines())
            link.set_rate(0.2e6, 0.6e6)
            t = time.perf_counter()
            result = client.run(feeds)
            took = time.perf_counter() - t
            assert client.intervals[client.current]["plan"] == intervals[0]["plan"] and client.switches[-1]["in_flight"], client.lines()
            np.testing.assert_array_equal(result.outputs["logits"], want[intervals[0]["plan"]])  # computed here, on the new plan
            assert took < 0.3, f"{took:.3f} s: the frame waited for its upload (~0.45 s at 0.2 Mbit/s)"
            assert "seen while a frame was out" in client.lines()[-1]
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=40)
            log.close()


def camera_frame(seed: int, h: int = 80, w: int = 96) -> np.ndarray:
    """A smooth HxWx3 uint8 picture (gradients and a disc): what a camera sees, not noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    disc = ((y - h / 2 - 8 * seed) ** 2 + (x - w / 3) ** 2 < (h / 4) ** 2) * 90.0
    rgb = np.stack([x * 255 / w, y * 255 / h, 128 + 40 * np.sin((x + y + 10 * seed) / 9)], axis=-1) + disc[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_camera_frames_through_splitc_run_remote_and_tritonclient_agree(server, plan_dir, tmp_path):
    """Camera frames (the plan's JPEG input codec) through RemoteSplitModel.run_image, through `splitc run --remote
    --input DIR`, and through tritonclient (an independent OIP client) sending the same frame, as the JPEG payload
    and as plain FP32 tensors: every output is bit for bit the in-process split run's."""
    import tritonclient.http as http
    from PIL import Image

    from splitc.runtimes.image import frame_feeds

    local = SplitModel(plan_dir)
    seg = Segment(local.plan)
    hop = seg.up[0]
    assert seg.is_image(hop) and hop["codec"].startswith("jpeg"), hop["codec"]
    remote = RemoteSplitModel(plan_dir, server.url, token=TOKEN, local=local)
    client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for seed in range(2):
        frame = camera_frame(seed)
        want = local.run_image(frame)
        got = remote.run_image(frame)
        assert "round_trip" in got.seconds and got.bytes_up == want.bytes_up  # the frame's own JPEG, not rebuilt
        np.testing.assert_array_equal(got.outputs["logits"], want.outputs["logits"])
        # tritonclient: the payload the device sends (binary data extension), then the decoded frame as FP32
        feeds, frames = frame_feeds(local.images, frame, local.inputs)
        payload = seg.encode(hop, feeds, frames[hop["tensor"]])
        x = http.InferInput(hop["tensor"] + PAYLOAD_SUFFIX, [len(payload)], "UINT8")
        x.set_data_from_numpy(np.frombuffer(payload, np.uint8), binary_data=True)
        res = client.infer(seg.name, [x], headers=dict(auth),  # (tritonclient writes into the dict it is given)
                           outputs=[http.InferRequestedOutput(seg.down[0]["tensor"] + PAYLOAD_SUFFIX)])
        answer = seg.decode(seg.down[0], res.as_numpy(seg.down[0]["tensor"] + PAYLOAD_SUFFIX).tobytes())
        np.testing.assert_array_equal(answer["logits"], got.outputs["logits"])
        pixels = seg.decode(hop, payload)[hop["tensor"]]  # what the server computes on, as any client may send it
        for binary in (False, True):
            x = http.InferInput(hop["tensor"], list(pixels.shape), "FP32")
            x.set_data_from_numpy(pixels, binary_data=binary)
            res = client.infer(seg.name, [x], headers=dict(auth), outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
            np.testing.assert_array_equal(res.as_numpy("logits"), got.outputs["logits"])
        Image.fromarray(frame).save(tmp_path / f"frame{seed}.png")
    list(remote.stream([synthetic_inputs(local.inputs, s) for s in range(4)], inflight=3))
    assert remote.headers == auth  # never handed to tritonclient, which writes each request's header length into it:
    remote.close()  # threads in flight would send one another's (a 400 when the JSON lengths differ)
    (tmp_path / "token").write_text(TOKEN)
    proc = subprocess.run([sys.executable, "-m", "splitc", "run", str(plan_dir), "--remote", server.url, "--token-file",
                           str(tmp_path / "token"), "--input", str(tmp_path), "--json", "--no-compare"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["via_server"] == 2 and report["same_as_in_process"] and report["lost"] == 0, report


def test_stream_overlaps_frames_in_flight_over_a_slow_link(raw_plan):
    """Through an emulated link with a 0.2 s RTT, K frames in flight take about 1/K of the time one at a time takes
    (the RTT overlaps), results still in order and each the in-process one; delta-coded (a static scene)."""
    from splitc.serving.linkemu import Link

    with Link(50e6, 50e6, 0.2) as link:
        port = free_port()
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([*link.exec_prefix, sys.executable, "-m", "splitc", "serve", str(raw_plan), "--host", link.host,
                                 "--port", str(port), "--grpc-port", "0"], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            proxy = link.proxy(port)
            local = SplitModel(raw_plan)
            remote = RemoteSplitModel(raw_plan, f"http://127.0.0.1:{proxy.port}", timeout=20, local=local, backoff=(0.2, 0.5))
            frames = [synthetic_inputs(local.inputs, s) for s in range(6)]
            want = [local.run(f).outputs["logits"] for f in frames]
            deadline = time.monotonic() + 60
            while remote.stats.remote == 0 and time.monotonic() < deadline:  # the server starting: frames go local
                remote.run(frames[0])
                time.sleep(0.2)
            list(remote.stream(frames[:3], inflight=3))  # three connections open
            before = remote.stats.local
            took = {}
            for k in (1, 3):
                t = time.perf_counter()
                results = list(remote.stream(frames, inflight=k))
                took[k] = time.perf_counter() - t
                for r, w in zip(results, want):
                    np.testing.assert_array_equal(r.outputs["logits"], w)
            assert remote.stats.local == before, remote.stats.lines()  # every timed frame went through the server
            assert took[1] > 6 * 0.2 and took[3] < 0.6 * took[1], took
            remote.close()
        finally:
            proc.terminate()
            proc.wait(timeout=40)
            log.close()
