"""One compiled plan's server stages as a KServe model (Open Inference Protocol v2).

Requests carry either one UINT8 tensor ``<tensor>.splc`` per boundary tensor going up (the wire payload, with
the plan fingerprint, sent with the OIP binary data extension), or the wire tensors themselves as plain OIP
tensors (any OIP client: JSON or binary). The answer has the same form: payloads of the hops back to the
device, or plain tensors. Every payload is decoded by the hardened codec; anything that does not decode to
what the plan expects is a 400 with a one-line reason.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from splitc.serving import import_kserve

import_kserve()  # before anything of kserve: it parses sys.argv on import
from kserve import InferOutput, InferRequest, InferResponse, Model  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402

from splitc.runtimes.ort import SplitModel, numpy_dtype
from splitc.runtimes.segment import PAYLOAD_SUFFIX, Segment, oip_datatype, run_segment
from splitc.runtimes.wire import CodecError
from splitc.serving.streams import Streams, sequence_id


class SplitStages(Model):
    """Every stage of the plan in ``out_dir`` that does not run on the device."""

    def __init__(self, out_dir: str | Path, threads: int = 0):
        self.split = SplitModel(out_dir, threads=threads, spinning=False)
        self.segment = Segment(self.split.plan)
        super().__init__(self.segment.name)
        self.dir = Path(out_dir)
        self.max_request_bytes = self.segment.max_request_bytes()
        self.streams = Streams(self.segment.fingerprint)  # delta-coded streams of devices (OIP sequence_id)
        self.ready = True

    # ---------------------------------------------------------------- metadata (GET /v2/models/{name})
    def get_input_types(self) -> list[dict]:
        return _specs(self.segment, self.segment.up)

    def get_output_types(self) -> list[dict]:
        return _specs(self.segment, self.segment.down)

    # ---------------------------------------------------------------- inference
    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        """Decode, run the server stages, encode; the seconds each took go back as integer microseconds in the
        response parameters ``decode_us``, ``compute_us``, ``encode_us`` (gRPC parameters hold no floats in KServe)."""
        if not isinstance(payload, InferRequest):  # a v1 or raw body: this model speaks the v2 protocol only
            raise InvalidInput(f"model {self.name}: send an Open Inference Protocol v2 request (POST /v2/models/{self.name}/infer)")
        outputs, seconds = await asyncio.get_running_loop().run_in_executor(None, self.infer, payload)
        return InferResponse(payload.id or "", self.name, outputs, parameters={f"{k}_us": round(v * 1e6) for k, v in seconds.items()},
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)

    def infer(self, request: InferRequest) -> tuple[list[InferOutput], dict[str, float]]:
        seg = self.segment
        inputs = {i.name: i for i in request.inputs}
        binary = any(name.endswith(PAYLOAD_SUFFIX) for name in inputs)
        stores = {t: {} for t in self.split.targets}
        seconds = {"decode": 0.0, "compute": 0.0, "encode": 0.0}
        t = time.perf_counter()
        try:
            if binary:
                want = sorted(hop["tensor"] + PAYLOAD_SUFFIX for hop in seg.up)
                if sorted(inputs) != want:
                    raise CodecError(f"inputs {sorted(inputs)}; this plan takes {want}")
                seq = sequence_id(request.parameters)
                for hop in seg.up:
                    tensor = inputs[hop["tensor"] + PAYLOAD_SUFFIX]
                    if tensor.datatype != "UINT8":
                        raise CodecError(f"input {tensor.name} is {tensor.datatype}; a wire payload is UINT8")
                    blob = _bytes(tensor)
                    stream = seq is not None and not seg.is_image(hop)
                    stores[hop["to"]].update(self.streams.decode(seq, hop, blob) if stream else seg.decode(hop, blob))
            else:
                for hop in seg.up:
                    stores[hop["to"]].update(_plain(hop, inputs))
                extra = sorted(set(inputs) - {w["name"] for w in seg.wire_specs(seg.up)})
                if extra:
                    raise CodecError(f"unexpected input(s) {extra}; this plan takes {[w['name'] for w in seg.wire_specs(seg.up)]}")
        except CodecError as e:
            raise InvalidInput(f"model {self.name}: {e}") from None
        seconds["decode"] = time.perf_counter() - t
        run_segment(self.split, seg, stores, seconds)
        t = time.perf_counter()
        outputs = []
        for hop in seg.down:
            store = stores[hop["from"]]
            if binary:
                blob = np.frombuffer(seg.encode(hop, store), np.uint8)
                outputs.append(_output(hop["tensor"] + PAYLOAD_SUFFIX, blob))
            else:
                outputs += [_output(w["name"], np.ascontiguousarray(store[w["name"]])) for w in hop["wire"]]
        seconds["encode"] = time.perf_counter() - t
        return outputs, seconds


def _output(name: str, arr: np.ndarray) -> InferOutput:
    """An output holding raw bytes: KServe 0.21's gRPC encoder fails on an ndarray ``data`` of more than one element
    (``if use_raw_outputs and infer_output.data``); REST turns raw bytes into JSON when the client asks for JSON."""
    out = InferOutput(name, list(arr.shape), oip_datatype(arr.dtype.name))
    out.set_data_from_numpy(arr, binary_data=True)
    return out


def _specs(seg: Segment, hops: list[dict]) -> list[dict]:
    """Both forms a tensor may take: the payload (UINT8, any length) and its plain wire tensors."""
    out = [{"name": hop["tensor"] + PAYLOAD_SUFFIX, "datatype": "UINT8", "shape": [-1]} for hop in hops]
    return out + [{"name": w["name"], "datatype": oip_datatype(w["dtype"]), "shape": list(w["shape"])}
                  for w in seg.wire_specs(hops)]


def _bytes(tensor) -> bytes:
    if len(tensor.shape) != 1:
        raise CodecError(f"input {tensor.name} has shape {tensor.shape}; a wire payload is one-dimensional")
    try:
        arr = tensor.as_numpy()
    except Exception as e:  # noqa: BLE001 - kserve raises ValueError/InvalidInput/TypeError on data that does not fit
        raise CodecError(f"input {tensor.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise CodecError(f"input {tensor.name} holds {arr.dtype}{list(arr.shape)}; a wire payload is uint8[n]")
    return arr.tobytes()


def _plain(hop: dict, inputs: dict) -> dict[str, np.ndarray]:
    """One hop's wire tensors sent as plain OIP tensors, checked against the plan before they are used."""
    out = {}
    for w in hop["wire"]:
        if w.get("bits", 8) != 8:
            raise CodecError(f"tensor {w['name']} is bit-packed on the wire; send it as a {PAYLOAD_SUFFIX} payload")
        tensor = inputs.get(w["name"])
        if tensor is None:
            raise CodecError(f"input {w['name']} missing")
        if tensor.datatype != oip_datatype(w["dtype"]) or list(tensor.shape) != list(w["shape"]):
            raise CodecError(f"input {w['name']} is {tensor.datatype}{list(tensor.shape)}; the plan expects "
                             f"{oip_datatype(w['dtype'])}{list(w['shape'])}")
        try:
            arr = tensor.as_numpy()
        except Exception as e:  # noqa: BLE001 - see _bytes
            raise CodecError(f"input {w['name']}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        want = numpy_dtype(w["dtype"])
        if arr.dtype != want or list(arr.shape) != list(w["shape"]):
            raise CodecError(f"input {w['name']} holds {arr.dtype}{list(arr.shape)}; the plan expects {want}{list(w['shape'])}")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise CodecError(f"input {w['name']} holds non-finite values")
        out[w["name"]] = arr
    return out
