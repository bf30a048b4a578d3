"""The bearer token files (--auth-token-file, --admin-token-file): read once, checked together.

Kept free of gRPC, so that start-up reads them before anything loads (`preflight.py`), and the
edge of every front end reads them again the same way."""

from dataclasses import dataclass
from pathlib import Path

from pipeserve.server.errors import StartupError
from pipeserve.server.settings import Settings


@dataclass(frozen=True)
class Tokens:
    # Tokens accepted by the Inference service (empty: no token auth).
    inference: list[bytes]
    # Tokens accepted by the Admin service (empty: no Admin service).
    admin: list[bytes]


def load_tokens(path: Path, flag: str = "--auth-token-file") -> list[bytes]:
    """Accepted tokens, one per line; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise StartupError(f"{flag} {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise StartupError(f"{flag} {path}: not UTF-8 text ({error.reason})") from error
    tokens = [line.strip().encode() for line in lines if line.strip() and not line.startswith("#")]
    if not tokens:
        raise StartupError(f"{flag} {path} holds no token")
    return tokens


def read_tokens(settings: Settings) -> Tokens:
    """The server's tokens; StartupError if a file cannot be read, holds none, or an admin
    token is also an Inference one."""
    inference = admin = []
    if settings.auth_token_file is not None:
        inference = load_tokens(settings.auth_token_file)
    if settings.admin_token_file is not None:
        admin = load_tokens(settings.admin_token_file, "--admin-token-file")
        if set(admin) & set(inference):
            raise StartupError(
                "a token is in both --auth-token-file and --admin-token-file; an admin token "
                "must be one of its own"
            )
    return Tokens(inference, admin)
