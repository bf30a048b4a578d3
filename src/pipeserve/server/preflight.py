"""Every start-up check that needs no model, run before torch, transformers or any worker
loads: settings that conflict with each other or with this machine, files that cannot be read,
a port another process holds, a head the checkpoint does not have.

Without them such a setting fails only once the model has loaded, half a minute later on a
busy machine. Each failure is one StartupError line. LoadModel runs the model's checks
(`check_model`) on a model loaded while serving.
"""

import errno
import socket
from pathlib import Path

from pipeserve.server.backends.select import read_calibration, resolve_backend
from pipeserve.server.errors import StartupError
from pipeserve.server.model.source import check_model_source, declared_architectures
from pipeserve.server.settings import (
    HEAD_SUFFIX,
    UNSERVED_HEADS,
    Backend,
    Quantize,
    Settings,
    Task,
    task_of_architecture,
)
from pipeserve.server.terms import Terms, start_up_terms
from pipeserve.server.token_files import load_tokens, read_tokens
from pipeserve.server.workers.devices import check_precision, plan_models


def preflight(settings: Settings) -> None:
    """Raises StartupError, one line, if the server as `settings` describe it cannot start."""
    read_tokens(settings)
    if settings.metrics_token_file is not None:
        load_tokens(settings.metrics_token_file, "--metrics-token-file")
    for flag, path in (
        ("--tls-cert", settings.tls_cert),
        ("--tls-key", settings.tls_key),
        ("--tls-client-ca", settings.tls_client_ca),
    ):
        if path is not None:
            _readable(flag, path)
    per_model = settings.per_model()
    plans = plan_models([(m.devices, m.workers_per_device) for m in per_model])
    for model, plan in zip(per_model, plans, strict=True):
        terms = start_up_terms(settings.models_file is not None, model.model_name)
        check_model(model, terms, on_gpu=plan[0].gpu is not None)
    check_port(settings.host, settings.port, "--port")
    if settings.metrics_port is not None:
        check_port(settings.metrics_host or settings.host, settings.metrics_port, "--metrics-port")


def check_model(settings: Settings, terms: Terms, on_gpu: bool) -> Backend:
    """Checks one model's settings (`terms`: how its asker names them) against its
    checkpoint's config and this machine; returns its backend, resolved."""
    check_model_source(settings.model_source, terms)
    _check_head(settings, terms)
    check_precision(settings, on_gpu=on_gpu)
    backend = resolve_backend(settings, on_gpu=on_gpu)
    if settings.quantize is Quantize.INT8_STATIC and settings.calibration_file is not None:
        read_calibration(settings.calibration_file)
    return backend


def _check_head(settings: Settings, terms: Terms) -> None:
    """Refuses a checkpoint whose config declares only heads, none of them the one asked for
    (a sentiment classifier asked to fill masks), or a head no RPC serves. A checkpoint of a
    bare encoder, or of an architecture not named after its head, is left to the loading,
    which lists the weights it lacks."""
    architectures = declared_architectures(settings.model_source, settings.revision)
    if not architectures:
        return
    source = settings.model_source
    if settings.task is Task.AUTO:
        unserved = [
            what for suffix, what in UNSERVED_HEADS.items() if architectures[0].endswith(suffix)
        ]
        if unserved:
            raise StartupError(
                f"cannot serve model {source!r}: it is a {architectures[0]}, a {unserved[0]} "
                "head, which no RPC serves; serve its encoder (Forward, Embed) with "
                f"{terms.setting('task', Task.FEATURE_EXTRACTION)}"
            )
        return
    suffix = HEAD_SUFFIX.get(settings.task)
    if suffix is None or settings.allow_missing_weights:
        return
    heads = [task_of_architecture(a) for a in architectures]
    only_heads = all(
        task is not None or a.endswith(tuple(UNSERVED_HEADS))
        for a, task in zip(architectures, heads, strict=True)
    )
    if not only_heads or settings.task in heads:
        return
    own = next((task for task in heads if task is not None), None)
    serve_own = (
        f"serve it as the {own} model it is with {terms.setting('task', Task.AUTO)}"
        if own is not None
        else f"serve its encoder with {terms.setting('task', Task.FEATURE_EXTRACTION)}"
    )
    raise StartupError(
        f"cannot load model {source!r} with {terms.setting('task', settings.task)}: it is a "
        f"{architectures[0]}, without the {settings.task} head (...{suffix}); {serve_own}, or "
        f"serve that head randomly initialised with {terms.allow_missing_weights}"
    )


def _readable(flag: str, path: Path) -> None:
    try:
        path.read_bytes()
    except OSError as error:
        raise StartupError(f"{flag} {path}: {error.strerror or error}") from error


def check_port(host: str, port: int, flag: str) -> None:
    """Refuses a port another process holds (0 picks a free one), found by binding it as the
    server will (SO_REUSEADDR), and letting it go again at once."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"--host {host}: cannot resolve it ({error.strerror})") from error
    problem: OSError | None = None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return  # the server binds what it can of the addresses, as here
            except OSError as error:
                problem = error
    assert problem is not None
    held = (
        "; another process holds it: stop that one, or choose another port"
        if problem.errno == errno.EADDRINUSE
        else ""
    )
    raise StartupError(
        f"cannot listen on {host}:{port} ({flag}): {problem.strerror or problem}{held} "
        f"({flag} 0 picks a free one)"
    )
