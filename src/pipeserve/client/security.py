"""What a client presents to a protected server: TLS credentials (for --tls-cert and
--tls-client-ca) and a bearer token (for --auth-token-file)."""

from pathlib import Path

import grpc


def tls_credentials(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: `ca_file` verifies the server (None: the system roots); `cert_file`
    and `key_file` are this client's certificate for a server that requires mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("give both cert_file and key_file, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )


def read_token(path: str | Path) -> str:
    """The bearer token in a file: its first line that is neither blank nor a # comment, so
    that a server's token file (--auth-token-file, --admin-token-file) serves as is."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    tokens = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not tokens:
        raise ValueError(f"token file {path} is empty")
    return tokens[0]
