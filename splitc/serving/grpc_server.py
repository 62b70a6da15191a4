"""KServe's gRPC ``GRPCInferenceService`` bound to ``--host``, with the bearer token and TLS KServe's server lacks."""

from __future__ import annotations

import hmac
from concurrent import futures

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer

_OPEN = {"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}


class TokenInterceptor(aio.ServerInterceptor):
    def __init__(self, token: bytes):
        self.token = token

    async def intercept_service(self, continuation, details):
        if details.method not in _OPEN:
            got = dict(details.invocation_metadata or ()).get("authorization", "")
            got = got.encode() if isinstance(got, str) else got
            if not hmac.compare_digest(got, b"Bearer " + self.token):
                async def deny(request, context):
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")

                return grpc.unary_unary_rpc_method_handler(deny)
        return await continuation(details)


class GuardedGRPCServer:
    def __init__(self, host: str, port: int, dataplane, repository, token: bytes | None, tls: tuple[str, str] | None,
                 max_message: int, grace_s: float = 30.0, workers: int = 4):
        self.addr = f"{host}:{port}"
        self.dataplane, self.repository = dataplane, repository
        self.token, self.tls, self.max_message, self.grace_s, self.workers = token, tls, max_message, grace_s, workers
        self._server = None

    async def start(self) -> None:
        interceptors = ([TokenInterceptor(self.token)] if self.token else []) + [ExceptionToStatusInterceptor()]
        self._server = aio.server(futures.ThreadPoolExecutor(max_workers=self.workers), interceptors=interceptors,
                                  options=[("grpc.max_receive_message_length", self.max_message)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane, self.repository), self._server)
        if self.tls:
            cert, key = (open(p, "rb").read() for p in self.tls)
            self._server.add_secure_port(self.addr, grpc.ssl_server_credentials([(key, cert)]))
        else:
            self._server.add_insecure_port(self.addr)
        await self._server.start()
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=self.grace_s)
