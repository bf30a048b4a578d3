"""TLS, mutual TLS and bearer-token authentication for the gRPC server."""

import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health

from pipeserve.server.edge.handlers import SERVICE, with_behavior
from pipeserve.server.edge.status import abort
from pipeserve.server.errors import Unauthenticated
from pipeserve.server.metrics import Metrics
from pipeserve.server.settings import Settings

_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
# The Admin service checks its own tokens (edge/admin.py), not the Inference ones.
_ADMIN_PREFIX = "/pipeserve.v1.Admin/"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from --tls-cert/--tls-key; with --tls-client-ca, clients must present
    a certificate signed by that CA (mutual TLS). None means plain text."""
    if settings.tls_cert is None:
        return None
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())  # type: ignore[union-attr]
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def bearer_accepted(
    metadata: Sequence[tuple[str, str | bytes]] | None, tokens: Sequence[bytes]
) -> bool:
    """Whether the call's `authorization: Bearer <token>` names one of `tokens` (the scheme
    in any case, as HTTP's authentication schemes are).

    Every accepted token is compared in constant time, so timing reveals neither which token
    matched nor how much of one did."""
    presented = b""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                presented = token.encode()
    matches = [hmac.compare_digest(presented, token) for token in tokens]
    return bool(presented) and any(matches)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with `authorization: Bearer <token>` naming an accepted token
    (`bearer_accepted`). Admin calls pass: their own tokens guard them."""

    def __init__(self, tokens: list[bytes], open_health: bool, metrics: Metrics) -> None:
        self._tokens = tokens
        self._open_health = open_health
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if self._open_health and handler_call_details.method.startswith(_HEALTH_PREFIX):
            return handler
        if handler_call_details.method.startswith(_ADMIN_PREFIX):
            return handler
        if bearer_accepted(handler_call_details.invocation_metadata, self._tokens):
            return handler
        method = handler_call_details.method
        if method.startswith(f"/{SERVICE.full_name}/"):
            # Refused before the service's own wrappers: counted here, as they would count it.
            return with_behavior(
                handler, self._metrics.count_unary(method.rsplit("/")[-1], _refuse)
            )
        return with_behavior(handler, _refuse)


async def _refuse(_request, context: grpc.aio.ServicerContext) -> None:
    await abort(context, Unauthenticated("missing or invalid bearer token"))
