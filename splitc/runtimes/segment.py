"""The part of a plan that runs off the device, as one request: what the device sends, what comes back.

A plan's stages run in order; the stages not on the device (the first target) must form one contiguous run,
the *remote segment*: the device sends the hops that leave it before the segment (one wire payload per
boundary tensor), the server runs every remote stage (hops between server tiers stay in its memory) and answers
with the hops that come back to the device. Shared by the device client (splitc/runtimes/remote.py) and the
server (splitc/serving/), so both sides agree on names and sizes from their own copy of plan.json.
"""

from __future__ import annotations

import math
import time

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.wire import CodecError, decode, encode, plan_fingerprint

PAYLOAD_SUFFIX = ".splc"  # an OIP tensor carrying one hop's wire payload (UINT8, binary data extension)
_OIP = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8", "int8": "INT8", "int16": "INT16",
        "int32": "INT32", "int64": "INT64", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL"}
_ITEMSIZE = {"bool": 1}


def model_name(plan: dict) -> str:
    """The OIP model name a plan is served under: its wire fingerprint (sender and receiver compute it alike)."""
    return f"splitc-{plan_fingerprint(plan)}"


def oip_datatype(dtype: str) -> str:
    if dtype not in _OIP:
        raise SplitcError(f"tensor dtype {dtype} has no Open Inference Protocol datatype")
    return _OIP[dtype]


def hop_entropy(hop: dict) -> str:
    """The entropy coder a hop's codec names: lz4, ans (``+ans`` and ``+ctx``: the plan's tables) or zstd."""
    return {"lz4": "lz4", "ans": "ans", "ctx": "ans"}.get(hop.get("codec", "").rpartition("+")[2], "zstd")


def hop_models(hop: dict) -> dict | None:
    """An ans hop's models (its uint8 symbol tensors), from plan.json's tables (validated by AnsModel); else None."""
    tables = (hop.get("quant") or {}).get("ans")
    if tables is None or hop_entropy(hop) != "ans":
        return None
    from splitc.runtimes.ans import AnsError, AnsModel

    try:
        model = AnsModel(tables)
    except AnsError as err:
        raise SplitcError(f"plan.json: the ans tables of the hop of '{hop.get('tensor')}' are invalid: {err}") from None
    return {w["name"]: model for w in hop["wire"] if w["dtype"] == "uint8"}


def hop_codec(hop: dict) -> tuple[dict[str, int], str, dict[str, tuple]]:
    """(bit widths, entropy coder, expected wire tensors) of one boundary hop, as the in-process runtime uses them."""
    wire = hop["wire"]
    bits = {w["name"]: w["bits"] for w in wire if w.get("bits", 8) != 8}
    entropy = hop_entropy(hop)
    expected = {w["name"]: (w["dtype"], tuple(w["shape"]), w.get("bits", 8)) for w in wire}
    return bits, entropy, expected


IMAGE_CODECS = ("jpeg", "png", "webp")


def _image(hop: dict, images: dict):
    if hop.get("codec", "").partition(":")[0] not in IMAGE_CODECS:
        return None
    record = images.get(hop["tensor"])
    if record is None:
        raise SplitcError(f"plan.json: the hop of '{hop['tensor']}' is coded {hop['codec']}, but input_codec does not describe that input")
    return record


def encode_hop(hop: dict, store: dict, fingerprint: str, images: dict | None = None, frame=None,
               models: dict | None = None) -> bytes:
    """One hop's payload, as the in-process runtime makes it: an image input as its compressed frame
    (splitc/runtimes/image.py), anything else through the wire codec."""
    record = _image(hop, images or {})
    if record is not None:
        from splitc.runtimes.image import encode_frame

        return encode_frame(record, frame, store[hop["tensor"]], fingerprint)
    bits, entropy, _ = hop_codec(hop)
    return encode({w["name"]: store[w["name"]] for w in hop["wire"]}, bits=bits, plan=fingerprint, entropy=entropy,
                  models=models)


def decode_hop(hop: dict, payload: bytes, fingerprint: str, images: dict | None = None,
               models: dict | None = None) -> dict[str, np.ndarray]:
    """A hop's tensors from a payload; anything that is not what the plan expects raises CodecError."""
    record = _image(hop, images or {})
    if record is not None:
        from splitc.runtimes.image import ImageCodecError, decode_frame

        try:
            return {hop["tensor"]: decode_frame(record, payload, fingerprint)}
        except ImageCodecError as e:
            raise CodecError(str(e)) from None
    header: dict = {}
    out = decode(payload, hop_codec(hop)[2], plan=fingerprint, header_out=header, models=models)
    if header["delta"]:  # differences to a frame this receiver does not hold: the values would be garbage
        from splitc.runtimes.delta import StreamGap

        raise StreamGap(f"the hop of '{hop['tensor']}' is a delta frame ({sorted(header['delta'])}) outside a stream:"
                        " send it with a sequence_id, or request a key frame")
    return out


class Segment:
    """The remote segment of a plan (raises a one-line SplitcError for plans it cannot serve as one request)."""

    def __init__(self, plan: dict):
        self.plan = plan
        self.device = plan["targets"][0]["name"]
        self.fingerprint = plan_fingerprint(plan)
        self.name = model_name(plan)
        idx = [i for i, s in enumerate(plan["stages"]) if s["target"] != self.device]
        self.stages = [plan["stages"][i] for i in idx]
        if idx and idx != list(range(idx[0], idx[-1] + 1)):
            raise SplitcError(f"plan {self.name}: its server stages {idx} are not one contiguous run (--allow-return with"
                              " several round trips); serve it in one process with 'splitc run' instead")
        self.first = idx[0] if idx else None  # index of the first remote stage (None: the plan runs on the device)
        self.up = [b for b in plan["boundary"] if b["from"] == self.device and b["to"] != self.device]
        self.down = [b for b in plan["boundary"] if b["to"] == self.device and b["from"] != self.device]
        self.inner = [b for b in plan["boundary"] if b["from"] != self.device and b["to"] != self.device]
        from splitc.runtimes.image import input_records

        self.images = input_records(plan)  # image inputs cross as compressed frames
        self._models = {id(b): hop_models(b) for b in plan["boundary"]}  # ans hops: built once

    def encode(self, hop: dict, store: dict, frame=None) -> bytes:
        """``frame``: an image input's uint8 frame as the camera had it (sent as it is, not rebuilt from the tensor)."""
        return encode_hop(hop, store, self.fingerprint, self.images, frame, self._models.get(id(hop)))

    def decode(self, hop: dict, payload: bytes) -> dict[str, np.ndarray]:
        return decode_hop(hop, payload, self.fingerprint, self.images, self._models.get(id(hop)))

    def is_image(self, hop: dict) -> bool:
        """The hop carries an image input as its compressed frame (never delta-coded)."""
        return _image(hop, self.images) is not None

    @property
    def remote(self) -> bool:
        return bool(self.stages)

    def wire_specs(self, hops: list[dict]) -> list[dict]:
        return [w for hop in hops for w in hop["wire"]]

    def max_request_bytes(self) -> int:
        """Largest request the server accepts: every up-going tensor as JSON text (the largest form an OIP client
        may send; <= 32 characters per value) plus 64 KiB of framing. Binary payloads are far below it."""
        elements = sum(math.prod(w["shape"]) for w in self.wire_specs(self.up))
        return 65536 + 32 * elements

    def raw_up_bytes(self) -> int:
        return sum(math.prod(w["shape"]) * _ITEMSIZE.get(w["dtype"], np.dtype(w["dtype"]).itemsize)
                   for w in self.wire_specs(self.up))


def run_segment(model, segment: Segment, stores: dict[str, dict], seconds: dict[str, float]) -> None:
    """Run the remote stages of ``model`` (a SplitModel) on ``stores`` (the up hops already decoded into them);
    hops between server tiers go through the codec in memory as in the in-process runtime."""
    from splitc.runtimes.ort import RunResult

    scratch = RunResult({}, link_bytes=[{"up": 0, "down": 0} for _ in model.plan["links"]])
    for stage in segment.stages:
        sess = model.sessions.get(stage["index"])
        if sess is not None:
            t = time.perf_counter()
            store = stores[stage["target"]]
            names = [o.name for o in sess.get_outputs()]
            store.update(zip(names, sess.run(names, {i.name: store[i.name] for i in sess.get_inputs()})))
            seconds["compute"] = seconds.get("compute", 0.0) + time.perf_counter() - t
        for hop in model.hops.get(stage["index"], []):
            if hop["to"] != segment.device:
                model._send(hop, stores, scratch)
