"""The one channel factory of the client package: target, TLS, bearer token, message size,
and balancing across replicas.

Client, AsyncClient, every `pipeserve` command and the load tester open their channels through
an Endpoint, so whatever reaches a protected server from one of them reaches it from all.
"""

import ipaddress
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def build_channel_options(
    max_message_bytes: int, extra: Sequence[tuple[str, Any]] | None
) -> list[tuple[str, Any]]:
    """Message size limits first, then the caller's options, which win on the same key."""
    if max_message_bytes < 1:
        raise ValueError(f"max_message_bytes must be positive; got {max_message_bytes}")
    options: dict[str, Any] = {
        # gRPC's 4 MiB default receive limit is below one Forward of hidden states.
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.max_send_message_length": max_message_bytes,
    }
    options.update(extra or ())
    return list(options.items())


# Every pipeserve RPC is idempotent, so when the client balances across replicas, a call that
# one replica answers UNAVAILABLE (shutting down, still loading, no live worker) is retried once,
# on the next replica round_robin picks. Once only: a request that kills workers (UNAVAILABLE
# after a worker died twice under it) then reaches one more replica, not all of them.
_RETRY_ONCE: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "pipeserve.v1.Inference"}],
            "retryPolicy": {
                "maxAttempts": 2,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
# Client-side health checking: round_robin sends calls only to replicas whose health for the
# Inference service is SERVING, so a replica that is loading, has no live worker or is draining
# gets none. The server answers health checks without a token only with --auth-open-health, so
# a client with a token leaves this out (else an UNAUTHENTICATED health check would take every
# replica out of the rotation).
_HEALTH_CHECK: dict[str, Any] = {"healthCheckConfig": {"serviceName": "pipeserve.v1.Inference"}}


def balanced_channel_options(health_check: bool) -> list[tuple[str, Any]]:
    """The channel options of a balanced target: round_robin, one retry, health checking."""
    config = {**_RETRY_ONCE, **(_HEALTH_CHECK if health_check else {})}
    return [("grpc.lb_policy_name", "round_robin"), ("grpc.service_config", json.dumps(config))]


# Target schemes whose name can stand for several servers.
_BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def _list_address(entry: object) -> tuple[int, str]:
    """(IP version, "host:port") of one entry of a list target."""
    if not isinstance(entry, str):
        raise TypeError(f"target addresses must be strings; got {type(entry).__name__}")
    address = entry.strip()
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"target address {entry!r} is not host:port")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"target address {entry!r}: a list of targets takes IP addresses such as "
            "'10.0.0.1:50051' or '[::1]:50051'; for a host name use 'dns:///name:port'"
        ) from None
    if ip.version == 6 and not bracketed:
        raise ValueError(f"target address {entry!r}: write IPv6 addresses in brackets, [::1]:port")
    return ip.version, address


def build_target(target: str | Sequence[str]) -> tuple[str, bool]:
    """The gRPC target string for `target`, and whether calls are balanced across servers.

    A string is used as is; it is balanced when its scheme can name several servers (dns:,
    ipv4:, ipv6:), e.g. "dns:///pipeserve.ns.svc.cluster.local:50051" for the pods behind a
    headless Service. A list of "ip:port" addresses becomes "ipv4:a:p,b:q" (or "ipv6:" for
    bracketed addresses; one family per list) and is balanced.
    """
    if isinstance(target, str):
        return target, target.startswith(_BALANCED_SCHEMES)
    if not isinstance(target, Sequence):
        raise TypeError(f"target must be a string or a list of strings; got {type(target)}")
    if not target:
        raise ValueError("target is an empty list of addresses")
    parsed = [_list_address(entry) for entry in target]
    versions = {version for version, _ in parsed}
    if len(versions) > 1:
        raise ValueError("a list target takes IPv4 or IPv6 addresses, not both")
    return f"ipv{versions.pop()}:" + ",".join(address for _, address in parsed), True


class Endpoint:
    """A server, or replicas of one, and how to reach it; opens sync and asyncio channels.

    `target` becomes the gRPC target (see build_target). A balanced target gets the round_robin
    load-balancing policy, one retry on UNAVAILABLE and, without a token, health checking
    (balanced_channel_options); `channel_options` setting "grpc.lb_policy_name" or
    "grpc.service_config" replaces those. `credentials` (see tls_credentials) makes the channel
    TLS; `token` goes with every call as a bearer token, in `metadata`.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        self.target, balanced = build_target(target)
        self.credentials = credentials
        # The server compares it with its --auth-token-file tokens.
        self.metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {token}"),) if token else None
        )
        defaults = balanced_channel_options(health_check=token is None) if balanced else []
        self.channel_options = build_channel_options(
            max_message_bytes, [*defaults, *(channel_options or ())]
        )

    def channel(self) -> grpc.Channel:
        """A blocking channel."""
        return self._open(grpc)

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel, bound to the running event loop."""
        return self._open(grpc.aio)

    def _open(self, channels: Any) -> Any:
        # The grpc and grpc.aio modules have factories of the same names and arguments.
        if self.credentials is None:
            return channels.insecure_channel(self.target, options=self.channel_options)
        return channels.secure_channel(self.target, self.credentials, options=self.channel_options)


class CallDefaults:
    """What every call of one client carries unless the call says otherwise."""

    def __init__(self, endpoint: Endpoint, timeout: float | None, wait_for_ready: bool) -> None:
        self._metadata = endpoint.metadata
        self._timeout = timeout
        self._wait_for_ready = wait_for_ready

    def __call__(self, timeout: float | None) -> dict[str, Any]:
        """Keyword arguments for one stub call; a call's own timeout beats the default."""
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "wait_for_ready": self._wait_for_ready,
            "metadata": self._metadata,
        }


class ChannelOwner:
    """A blocking client's channel, closed by `close` or on leaving a `with` block."""

    _channel: grpc.Channel

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncChannelOwner:
    """An asyncio client's channel, closed by `close` or on leaving an `async with` block."""

    _channel: grpc.aio.Channel

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
