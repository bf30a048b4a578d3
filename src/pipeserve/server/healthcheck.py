"""`python -m pipeserve.server.healthcheck`: the image's HEALTHCHECK. Exit 0 when the server
answers gRPC health with SERVING, 1 otherwise.

A probe that is told nothing: it reads the running server's command line from /proc and parses
it with the PIPESERVE_* environment it shares with the server, as the server did
(`parse_settings`), then calls health as a client of that server must. So `docker run IMAGE
--port 6000 --tls-cert ... --auth-token-file ...` stays healthy without repeating any of it:

- the port the server listens on, on loopback when it binds every interface;
- TLS when it serves TLS, trusting its own certificate chain and checking the name that
  certificate holds; with mutual TLS the probe presents the server's own certificate, which
  the client CA must therefore have signed;
- a token from its --auth-token-file unless --auth-open-health leaves health open.

The server is process 1 (the container's entrypoint) unless --pid names another; behind an
init (docker run --init) process 1's command line holds the server's after the init's own.
"""

import argparse
import ipaddress
import socket
import ssl
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.server.errors import StartupError
from pipeserve.server.settings import Settings, parse_settings
from pipeserve.server.token_files import load_tokens

# How the server's own arguments start in a command line: `pipeserve serve ...` (the
# entrypoint) or `python -m pipeserve.server ...`.
_SERVE_PREFIXES = (("pipeserve", "serve"), ("-m", "pipeserve.server"))


def server_arguments(cmdline: list[str]) -> list[str]:
    """The arguments after `pipeserve serve` or `-m pipeserve.server` in a command line."""
    for index in range(len(cmdline) - 1):
        if (Path(cmdline[index]).name, cmdline[index + 1]) in _SERVE_PREFIXES:
            return cmdline[index + 2 :]
    raise ValueError(f"not a pipeserve server: {' '.join(cmdline)}")


def server_settings(pid: int) -> Settings:
    """The settings of the server running as `pid`: its command line, and the PIPESERVE_*
    variables of this process, which a container's probe shares with its entrypoint (another
    process's environment is private to it)."""
    cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    return parse_settings(server_arguments([part.decode() for part in cmdline if part]))


def loopback_host(bound: str) -> str:
    """Where a local client reaches a server bound to `bound`: loopback for every interface."""
    if bound in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bound == "::":
        return "[::1]"
    try:
        return f"[{bound}]" if ipaddress.ip_address(bound).version == 6 else bound
    except ValueError:
        return bound  # a host name


def certificate_name(host: str, port: int, settings: Settings) -> str:
    """A name the server's certificate holds, for gRPC to check: the probe connects to an
    address the certificate need not name. Read from a handshake verified against the
    server's own chain (partial: the chain may stop below its root)."""
    context = ssl.create_default_context(cafile=str(settings.tls_cert))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if settings.tls_client_ca is not None:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        certificate = tls.getpeercert()
    alternatives = [value for kind, value in certificate.get("subjectAltName", ())]
    common_names = [
        v for rdn in certificate.get("subject", ()) for k, v in rdn if k == "commonName"
    ]
    names = alternatives + common_names
    if not names:
        raise ValueError(f"{settings.tls_cert} names no host")
    return names[0]


def check(settings: Settings, timeout: float) -> str:
    """The server's overall health status name, called as its own settings require."""
    if settings.port == 0:
        raise ValueError("the server picked its port (--port 0): nothing to probe")
    host = loopback_host(settings.host)
    target = f"{host}:{settings.port}"
    metadata = None
    if settings.auth_token_file is not None and not settings.auth_open_health:
        token = load_tokens(settings.auth_token_file)[0].decode()
        metadata = (("authorization", f"Bearer {token}"),)
    if settings.tls_cert is None:
        channel = grpc.insecure_channel(target)
    else:
        assert settings.tls_key is not None  # Settings checks they go together
        mutual = settings.tls_client_ca is not None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=settings.tls_cert.read_bytes(),
            private_key=settings.tls_key.read_bytes() if mutual else None,
            certificate_chain=settings.tls_cert.read_bytes() if mutual else None,
        )
        name = certificate_name(host, settings.port, settings)
        channel = grpc.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", name)]
        )
    with channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout, metadata=metadata
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeserve.server.healthcheck")
    parser.add_argument("--pid", type=int, default=1, help="the server's process (default: 1)")
    parser.add_argument("--timeout", type=float, default=5, help="seconds (default: 5)")
    args = parser.parse_args(argv)
    try:
        status = check(server_settings(args.pid), args.timeout)
    except (OSError, ValueError, StartupError, grpc.RpcError) as error:
        details = error.details() if isinstance(error, grpc.RpcError) else error
        print(f"unhealthy: {details}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
