"""The server's error vocabulary. Raised anywhere on the data path; `status.py` alone
maps each kind to a gRPC status code, so this module knows nothing of gRPC."""

from collections.abc import Iterable

# Most characters of a caller's value that a message repeats: gRPC sends the message in
# metadata, whose limit (8 KiB by default) would turn a long echo into RESOURCE_EXHAUSTED.
QUOTED_CHARS = 200


def quoted(value: str) -> str:
    """`value` as repr() gives it, cut to QUOTED_CHARS characters (and its length said)."""
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}... ({len(value)} characters)"


class PipeserveError(Exception):
    """Base of every error meant for the caller; the message is shown to them as is."""


class InvalidInput(PipeserveError):
    """The request itself is wrong (empty, malformed, out of range, over a limit)."""


class TooLarge(PipeserveError):
    """The request is well formed but asks for more than a configured limit allows."""


class Unauthenticated(PipeserveError):
    """No accepted bearer token came with the call."""


class Overloaded(PipeserveError):
    """The queue is full; the caller should retry later."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def __reduce__(self) -> tuple:
        # Pickled whole: the engine process refuses a front end's request with it.
        return (Overloaded, (str(self), self.retry_after_ms))


class Unavailable(PipeserveError):
    """No worker can take the work right now (none alive, or one died twice under it)."""


class DeadlineExceeded(PipeserveError):
    """The caller's deadline passed before its items reached a worker."""


class UnsupportedByModel(PipeserveError):
    """The RPC needs a model head the server was not started with."""


class ModelNotFound(PipeserveError):
    """The request names a model the server does not serve (or no longer serves)."""

    @classmethod
    def among(cls, asked: str, served: Iterable[str]) -> "ModelNotFound":
        names = ", ".join(served) or "none"
        return cls(f"model {quoted(asked)} is not served; served models: {names}")


class ModelExists(PipeserveError):
    """LoadModel names a model that is served already, or being loaded."""


class ModelBusy(PipeserveError):
    """An admin call on a model that is being loaded or unloaded by another one."""


class LoadFailed(PipeserveError):
    """LoadModel could not load the model (the reason in one line); nothing changed."""


class ModelFailed(PipeserveError):
    """The model raised on a batch; the worker survives and the message says why."""


class StartupError(Exception):
    """The server cannot start; start-up stops with this one line, no traceback."""


class ModelLoadError(StartupError):
    """The model or tokenizer cannot be loaded."""
