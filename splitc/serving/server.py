"""Run the server stages of a compiled output folder (and every --sweep-bandwidth variant) with KServe.

KServe's ``ModelServer.start`` binds REST to 0.0.0.0 and gRPC to [::] with no hook for authentication
(kserve/protocol/rest/server.py: ``host="0.0.0.0"``; protocol/grpc/server.py: ``add_insecure_port("[::]:port")``),
so this module registers the models with a ``ModelServer`` and runs KServe's own ``RESTServer`` and gRPC
servicer itself: bound to ``--host``, behind :class:`Guard` (bearer token, request-size limit, only the
inference endpoints), TLS from uvicorn / grpc credentials. SIGTERM lets requests in flight finish, then exits 0.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import signal
from pathlib import Path

from splitc.errors import SplitcError
from splitc.serving import import_kserve

OPEN_PATHS = {"/v2/health/live", "/v2/health/ready"}  # probes need no token
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(/ready|/infer)?$")
SMALL_BODY = 65536  # any POST that names no served model


def plan_dirs(out: Path) -> list[Path]:
    """The output folder and, for a --sweep-bandwidth compile, every plan variant under plans/."""
    if not (out / "plan.json").is_file():
        raise SplitcError(f"{out}: no plan.json here; point at a directory written by 'splitc compile'")
    dirs = [out]
    plan = json.loads((out / "plan.json").read_text())
    for interval in (plan.get("sweep") or {}).get("intervals", []):
        sub = (out / str(interval["plan"])).resolve()
        if not sub.is_relative_to(out.resolve()):
            raise SplitcError(f"{out}/plan.json: sweep plan {interval['plan']!r} is outside the output folder")
        if sub not in dirs:
            dirs.append(sub)
    return dirs


def load_models(out: Path, threads: int = 0) -> tuple[list, list[str]]:
    """(models, notes): one model per distinct plan with server stages; a note for each plan that has none."""
    from splitc.serving.model import SplitStages
    from splitc.runtimes.segment import Segment

    models, notes, names = [], [], set()
    for d in plan_dirs(out):
        seg = Segment(json.loads((d / "plan.json").read_text()))
        if not seg.remote:
            notes.append(f"{d}: runs wholly on the device, nothing to serve")
        elif seg.name not in names:
            names.add(seg.name)
            models.append(SplitStages(d, threads=threads))
    if not models:
        raise SplitcError(f"{out}: no plan here has a stage off the device; nothing to serve")
    return models, notes


def _quiet_client_errors(record: logging.LogRecord) -> bool:
    """KServe logs a traceback for every 400/404 it answers: a flood of bad requests would flood the log (and a
    full stdout pipe would stall the server). The client gets the one-line reason; the log keeps real errors."""
    from kserve.errors import InvalidInput, ModelNotFound

    return not (record.exc_info and isinstance(record.exc_info[1], (InvalidInput, ModelNotFound)))


class Guard:
    """ASGI middleware in front of KServe's app: token, size limit, and only the endpoints a device needs."""

    def __init__(self, app, token: bytes | None, limits: dict[str, int], models: dict | None = None):
        self.app, self.token, self.limits, self.models = app, token, limits, models or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        m = _MODEL_PATH.match(path)
        if path not in OPEN_PATHS | {"/v2", "/metrics"} and m is None:
            return await _reply(send, 404, f"{method} {path}: not served here (Open Inference Protocol v2 endpoints only)")
        if self.token is not None and path not in OPEN_PATHS:
            if not hmac.compare_digest(headers.get(b"authorization", b""), b"Bearer " + self.token):
                return await _reply(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                    [(b"www-authenticate", b"Bearer")])
        if method != "POST":
            return await self.app(scope, receive, send)
        limit = self.limits.get(m.group(1), SMALL_BODY) if m else SMALL_BODY
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _reply(send, 413, f"request of {declared.decode(errors='replace')} bytes is over this model's limit of {limit}")
        body, more = [], True
        size = 0
        while more:  # read it all (KServe does anyway), counting, so a body without a length is bounded too
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body.append(msg.get("body", b""))
            size += len(body[-1])
            more = msg.get("more_body", False)
            if size > limit:
                return await _reply(send, 413, f"request body over this model's limit of {limit} bytes")
        whole = b"".join(body)
        if m and m.group(2) == "/infer" and m.group(1) in self.models and b"inference-header-content-length" in headers:
            answered = await self._binary(self.models[m.group(1)], whole, headers, send)
            if answered:
                return
        if m and m.group(2) == "/infer" and b"inference-header-content-length" not in headers:
            # a plain JSON request: tritonclient sends it without a Content-Type, which KServe then reads as bytes
            # and rejects for lacking this header; per OIP, a header length of the whole body means "all JSON"
            scope = {**scope, "headers": [*scope["headers"], (b"inference-header-content-length", str(len(whole)).encode())]}
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


    async def _binary(self, model, body: bytes, headers: dict, send) -> bool:
        """A binary-data-extension request to one of splitc's models (splitc/serving/fastpath.py); False: not one."""
        from kserve.errors import InvalidInput

        from splitc.serving import fastpath

        try:
            request = fastpath.parse(model.name, body, headers[b"inference-header-content-length"])
            if request is None:
                return False
            answer, extra = await fastpath.infer(model, request, {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()})
        except InvalidInput as e:
            await _reply(send, 400, str(e))
            return True
        except Exception as e:  # noqa: BLE001 - a bug: 500, logged, the server goes on
            logging.getLogger("splitc.serving").exception("inference failed")
            await _reply(send, 500, f"internal error: {type(e).__name__}")
            return True
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode()), *extra]})
        await send({"type": "http.response.body", "body": answer})
        return True


async def _reply(send, status: int, reason: str, extra=()) -> None:
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def serve(out: Path, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = 8001, token: bytes | None = None,
          tls_cert: str | None = None, tls_key: str | None = None, threads: int = 0, grace_s: float = 30.0,
          echo=print) -> int:
    import_kserve()
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, app
    from kserve.protocol.rest.server import RESTServer

    if bool(tls_cert) != bool(tls_key):
        raise SplitcError("TLS needs both --tls-cert and --tls-key")
    models, notes = load_models(out, threads)
    # KServe makes its app with FastAPI's deprecated ORJSONResponse as the default response class (a deprecation warning on
    # the first response); its endpoints return pydantic models, which FastAPI's own JSONResponse serializes directly
    from fastapi.responses import JSONResponse

    app.router.default_response_class = JSONResponse  # before RESTServer registers the routes, which take it then
    server = ModelServer(http_port=port, grpc_port=grpc_port or 0, enable_grpc=False, grace_period=int(grace_s),
                         ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):  # after KServe's logging setup
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("kserve").addFilter(_quiet_client_errors)
    for model in models:
        server.register_model(model)
    app.add_middleware(Guard, token=token, limits={m.name: m.max_request_bytes for m in models}, models={m.name: m for m in models})
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port,
                      grace_period=int(grace_s), ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    rest.config.host = host  # KServe hard-codes 0.0.0.0
    scheme = "https" if tls_cert else "http"
    for note in notes:
        echo(note)
    for model in models:
        stages = ", ".join(f"{s['artifact']} on {s['target']}" for s in model.segment.stages if s.get("artifact"))
        echo(f"loaded {model.name} ({model.dir}: {stages}; requests up to {model.max_request_bytes} bytes):"
             f" {scheme}://{host}:{port}/v2/models/{model.name}/infer")
    grpc = None
    if grpc_port:
        from splitc.serving.grpc_server import GuardedGRPCServer

        grpc = GuardedGRPCServer(host, grpc_port, server.dataplane, server.model_repository_extension, token=token,
                                 tls=(tls_cert, tls_key) if tls_cert else None,
                                 max_message=max(m.max_request_bytes for m in models), grace_s=grace_s)
        echo(f"gRPC GRPCInferenceService on {host}:{grpc_port}" + (" (TLS)" if tls_cert else ""))
    echo(f"metrics: {scheme}://{host}:{port}/metrics; health: {scheme}://{host}:{port}/v2/health/ready")

    async def main():
        # uvicorn drains requests in flight on SIGTERM/SIGINT, then re-raises the signal: let it land here, exit 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        task = asyncio.create_task(grpc.start()) if grpc else None
        await rest.start()
        if grpc:
            await grpc.stop()
            task.cancel()

    asyncio.run(main())
    echo("stopped: requests in flight finished")
    return 0
