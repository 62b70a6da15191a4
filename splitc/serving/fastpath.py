"""Binary-data-extension requests to splitc's models, decoded without KServe's per-element copy.

KServe 0.21's REST decoder (``InferRequest.from_bytes``) turns every binary input into a Python list of ints
(``set_data_from_numpy(..., binary_data=False)``: ``[val.item() for val in input_tensor.flatten()]``) before the model
sees it: ~30 ms for a 40 KB payload on this machine, 60% of a request. Here the same request is read into KServe's own
``InferRequest`` with its ``raw_inputs`` (the bytes as they came), the model is called the way KServe's data plane calls
it (``Model.__call__``: pre/post-processing hooks, its Prometheus histograms) and the answer is KServe's
``InferResponse.to_rest()``. Requests with JSON ``data`` take KServe's own path.
"""

from __future__ import annotations

import json

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

MAX_INPUTS = 64


def parse(name: str, body: bytes, json_length: bytes) -> InferRequest | None:
    """The request, or None when an input carries JSON data (KServe's own decoder handles those)."""
    try:
        n = int(json_length)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length {json_length[:20]!r} is not a number") from None
    if not 0 <= n <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {n} is outside the {len(body)}-byte body")
    try:
        head = json.loads(body[:n])
        specs = head["inputs"]
        if not isinstance(specs, list) or not 0 < len(specs) <= MAX_INPUTS or not all(isinstance(x, dict) for x in specs):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("the request header is not JSON with an 'inputs' list") from None
    inputs, raws, pos = [], [], n
    for x in specs:
        size = (x.get("parameters") or {}).get("binary_data_size") if isinstance(x.get("parameters") or {}, dict) else None
        if size is None:
            return None
        shape = x.get("shape")
        if type(size) is not int or size < 0 or pos + size > len(body):
            raise InvalidInput(f"input {x.get('name')!r}: binary_data_size {size!r} runs past the body")
        if not isinstance(x.get("name"), str) or not isinstance(x.get("datatype"), str) or not isinstance(shape, list) \
                or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInput(f"input {x.get('name')!r}: needs a name, a datatype and a shape of non-negative integers")
        inputs.append(InferInput(x["name"], shape, x["datatype"]))
        raws.append(body[pos:pos + size])
        pos += size
    if pos != len(body):
        raise InvalidInput(f"{len(body) - pos} bytes after the last input")
    outputs = head.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise InvalidInput("'outputs' is not a list of {name, parameters}")
    params = head.get("parameters")
    return InferRequest(name, inputs, request_id=head.get("id") if isinstance(head.get("id"), str) else None, raw_inputs=raws,
                        parameters=params if isinstance(params, dict) else None,
                        request_outputs=[RequestedOutput(o["name"], o.get("parameters") if isinstance(o.get("parameters"), dict) else None)
                                         for o in outputs] or None)


async def infer(model, request: InferRequest, headers: dict) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(body, headers) of the answer, as KServe's REST endpoint writes it."""
    response, _ = await model(request, headers=headers)
    body, json_size = response.to_rest()
    if json_size is None:
        return json.dumps(body).encode(), [(b"content-type", b"application/json")]
    return body, [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", str(json_size).encode())]
