"""Which backend the workers run, and, for openvino, the converted model they serve.

A checkpoint is converted once per precision and kept in the cache (HF_HOME/pipeserve, or
--cache-dir) under a key of what went into it: the checkpoint (a folder's files or the hub
commit), revision, task, quantisation, calibration text, and the converting libraries'
versions. A restart finds it there and converts nothing. The conversion runs in a child
process of its own, so torch's memory goes with it and the workers load only the IR.
Runs in the server process, which imports neither torch nor openvino.
"""

import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable
from importlib.metadata import version
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pipeserve.server.errors import ModelLoadError, StartupError
from pipeserve.server.logs import configure_logging
from pipeserve.server.settings import Backend, DType, Quantize, Settings, Task, precision_label
from pipeserve.server.terms import Terms

log = logging.getLogger("pipeserve.backend")

# Bumped when the export writes something a cached model of an older format lacks.
_FORMAT = 1
_MANIFEST = "manifest.json"  # written last by the export: its presence marks a whole model


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve_backend(settings: Settings, on_gpu: bool) -> Backend:
    """The backend asked for, auto resolved; raises StartupError if it cannot serve here."""
    backend = _auto(settings, on_gpu) if settings.backend is Backend.AUTO else settings.backend
    if backend is Backend.OPENVINO:
        if on_gpu:
            raise StartupError("--backend openvino runs on CPU workers; on GPUs use torch")
        if not _installed("openvino"):
            raise StartupError(
                "--backend openvino needs the OpenVINO runtime: pip install 'pipeserve[openvino]'"
            )
    quantized = settings.quantize is not Quantize.NONE
    if quantized and backend is Backend.OPENVINO and not _installed("nncf"):
        raise StartupError(
            f"--quantize {settings.quantize} on openvino needs nncf: "
            "pip install 'pipeserve[openvino]'"
        )
    if settings.quantize is Quantize.INT8_STATIC:
        if backend is not Backend.OPENVINO:
            raise StartupError("--quantize int8-static runs on --backend openvino only")
        if settings.calibration_file is None:
            raise StartupError(
                "--quantize int8-static needs --calibration-file FILE: UTF-8 text, one sample a "
                "line, like the traffic served (a few hundred lines), to set the int8 ranges of "
                "the activations. Without one, --quantize int8 quantises the weights alone"
            )
    return backend


def _auto(settings: Settings, on_gpu: bool) -> Backend:
    """openvino where it serves what was asked, else torch. On CPUs it runs the same float32
    model faster (README, Performance) and as exactly; torch keeps what only it does here:
    GPUs, --torch-compile, bfloat16 on any CPU (openvino's needs bfloat16 units), and
    --quantize int8 where nncf, which openvino's int8 needs, is not installed."""
    if on_gpu or settings.torch_compile or not _installed("openvino"):
        return Backend.TORCH
    if settings.dtype is not DType.FLOAT32:
        return Backend.TORCH
    if settings.quantize is Quantize.INT8 and not _installed("nncf"):
        return Backend.TORCH
    return Backend.OPENVINO


def backend_version(backend: Backend) -> str:
    """The backend's installed version, e.g. "2026.4.1" (no import)."""
    return version(str(backend))


def backend_label(backend: Backend) -> str:
    """The backend with its installed version, e.g. "openvino 2026.4.1"."""
    return f"{backend} {backend_version(backend)}"


def read_calibration(path: Path) -> list[str]:
    """The calibration file's non-empty lines; StartupError if there are none."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StartupError(f"cannot read --calibration-file {path}: {error}") from error
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise StartupError(f"--calibration-file {path} has no line of text to calibrate on")
    return texts


def cache_root(settings: Settings) -> Path:
    if settings.cache_dir is not None:
        return settings.cache_dir
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "pipeserve"


def _source(model: str, revision: str | None) -> dict:
    """What identifies the checkpoint's contents: a folder's files (so a checkpoint saved
    again in the same folder is converted again), or the hub commit the revision points at."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        files = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.iterdir()
            if p.is_file()
        )
        return {"folder": str(folder.resolve()), "files": files}
    from transformers.utils import cached_file

    config = cached_file(model, "config.json", revision=revision)
    return {"hub": model, "revision": revision, "commit": Path(config).parent.name}


def cache_entry(settings: Settings, task: Task, calibration: list[str]) -> Path:
    """The folder that holds (or will hold) this checkpoint converted at this precision."""
    quantized = settings.quantize is not Quantize.NONE
    key = {
        "format": _FORMAT,
        "source": _source(settings.model_source, settings.revision),
        "task": str(task),
        "quantize": str(settings.quantize),
        "calibration": hashlib.sha256("\n".join(calibration).encode()).hexdigest()
        if calibration
        else None,
        "allow_missing_weights": settings.allow_missing_weights,
        "openvino": version("openvino"),
        "nncf": version("nncf") if quantized else None,
        "transformers": version("transformers"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    source = settings.model_source
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source)
    return cache_root(settings) / "openvino" / f"{name}-{settings.quantize}-{digest}"


def converted_model(settings: Settings, task: Task, terms: Terms) -> Path:
    """The converted model's folder: reused from the cache, else converted into it now
    (`terms`: how the model's asker names its settings, for the conversion's messages)."""
    calibration = (
        read_calibration(settings.calibration_file)
        if settings.quantize is Quantize.INT8_STATIC and settings.calibration_file is not None
        else []
    )
    entry = cache_entry(settings, task, calibration)
    if (entry / _MANIFEST).is_file():
        log.info("openvino: reusing the converted model in %s (no conversion)", entry)
        return entry
    precision = precision_label(Backend.OPENVINO, settings.dtype, settings.quantize)
    log.info("openvino: converting %s (%s) into %s", settings.model_source, precision, entry)
    started = time.monotonic()
    partial = entry.with_name(f"{entry.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _convertin_child(settings, task, calibration, terms, partial)
        try:
            partial.rename(entry)  # whole or not at all, even if the server dies meanwhile
        except OSError:  # another server converted it first: theirs is as good
            if not (entry / _MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("openvino: converted in %.1f s", time.monotonic() - started)
    return entry


# The conversions and auto's measurements running, each in a thread that waits for its
# process: a shutdown meanwhile kills them (`stop_conversions`), and the threads, and so the
# server, need not wait a minute.
_children: set[BaseProcess] = set()


def stop_conversions() -> None:
    """Kills the conversions and measurements running (the server is stopping); theirs are
    left unconverted or unmeasured."""
    for process in list(_children):
        process.kill()


def _convertin_child(
    settings: Settings, task: Task, calibration: list[str], terms: Terms, folder: Path
) -> None:
    args = (settings, task, calibration, terms, folder)
    failure = in_child(_export, args, "pipeserve-convert", "conversion")
    if failure is not None:
        raise ModelLoadError(
            f"cannot convert model {settings.model_source!r} for openvino: {failure}"
        )


def in_child(target: Callable[..., None], args: tuple, name: str, what: str) -> Any:
    """Runs `target(*args, conn)` in a spawned process (the `what`, e.g. "conversion"), killed
    if the server stops meanwhile, and returns what it sent on `conn`, its one message: a
    result, or a line saying why it failed; such a line too if it died."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, child), name=name)
    process.start()
    _children.add(process)
    child.close()
    try:
        sent = parent.recv()
    except EOFError:
        sent = f"the {what} process died"
    finally:
        process.join()
        _children.discard(process)
    if sent is None and process.exitcode != 0:
        sent = f"the {what} process exited with code {process.exitcode}"
    return sent


def _export(
    settings: Settings,
    task: Task,
    calibration: list[str],
    terms: Terms,
    folder: Path,
    conn: Connection,
) -> None:
    """The child: converts, then tells the parent None (done) or why not, in one line."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    configure_logging(settings.log_level, settings.log_format)
    try:
        from pipeserve.server.backends.openvino_export import export

        export(
            settings.model_source,
            settings.revision,
            task,
            settings.quantize,
            calibration,
            settings.allow_missing_weights,
            terms,
            folder,
        )
    except Exception as exc:  # one line for the operator, as a worker's load failure
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send(None)
