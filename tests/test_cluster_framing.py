"""The worker protocol's framing that the cluster evaluator prices (splitc.cost.cluster.FRAMING_BYTES): the bytes a
run request and its answer carry beyond the tensors' bytes as the evaluator counts them (fp32: raw; int8: raw/4 + 5),
measured on the real framing (cluster_worker.send) of real payloads (cluster_codec.pack), as TcpEngine sends them."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from splitc.cost.cluster import FRAMING_BYTES
from splitc.runtimes.cluster_codec import pack
from splitc.runtimes.cluster_worker import send
from splitc.runtimes.wire import read_header


def _sent(header: dict, body: bytes) -> int:
    """Bytes ``send`` puts on a socket for one message."""
    a, b = socket.socketpair()
    got = [0]

    def read():
        while chunk := b.recv(1 << 20):
            got[0] += len(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    send(a, header, body)
    a.close()
    reader.join(10)
    b.close()
    return got[0]


@pytest.mark.parametrize("codec", ["fp32", "int8"])
@pytest.mark.parametrize("shape", [(1, 3, 139, 320), (1, 128, 7, 20)])
def test_framing_bytes_are_what_the_worker_protocol_sends(codec, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    body = pack({"maxpool_3": x}, codec, frame=1234)  # a 9-character tensor name, as the constant assumes
    _, head, _ = read_header(body)
    # the tensors' stored bytes: fp32 the raw bytes; int8 the (zstd-coded) values + scale (4) + zero point (1), whose
    # uncoded size is the evaluator's raw/4 + 5: what is left of the message is framing, however well zstd codes
    tensors = sum(t["stored"] for t in head["tensors"])
    assert tensors == x.nbytes if codec == "fp32" else tensors < x.nbytes // 4 + 5
    request = {"op": "run", "file": "parts/edefd0576f381f43.onnx", "tag": 1234, "id": 17} | ({"codec": codec} if codec != "fp32" else {})
    req, ans = _sent(request, body) - tensors, _sent({"id": 17, "ok": True}, body) - tensors
    want_req, want_ans = FRAMING_BYTES[codec]
    assert abs(req - want_req) <= 8 and abs(ans - want_ans) <= 8, (req, ans)  # ids and frame numbers vary by a few digits
