"""From one model's settings to the pieces its engine needs: the model card, the backend
resolved (an OpenVINO model converted, and auto's choice measured), and its workers' specs.
Used at start-up for every model and by LoadModel for one loaded while serving
(`engine/registry.py`)."""

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from pipeserve.server.backends.select import backend_label, converted_model, in_child
from pipeserve.server.backends.speed import faster
from pipeserve.server.launch import forks_worker, start_fork_server
from pipeserve.server.model.card import ModelCard, load_model_card
from pipeserve.server.schema import DeviceSpec, WorkerSpec
from pipeserve.server.settings import Backend, Settings, precision_label
from pipeserve.server.terms import Terms
from pipeserve.server.workers.measure import run_measure

log = logging.getLogger("pipeserve")


def worker_specs(
    settings: Settings,
    card: ModelCard,
    devices: list[DeviceSpec],
    converted: str | None,
    terms: Terms,
) -> list[WorkerSpec]:
    return [
        WorkerSpec(
            worker_id=i,
            model=settings.model_source,
            revision=settings.revision,
            task=card.task,
            dtype=settings.dtype,
            quantize=settings.quantize,
            device=device,
            allow_missing_weights=settings.allow_missing_weights,
            terms=terms,
            backend=settings.backend,
            converted=converted,
            torch_compile=settings.torch_compile,
            log_level=settings.log_level,
            log_format=settings.log_format,
            tracing=settings.tracing,
        )
        for i, device in enumerate(devices)
    ]


async def load_card(settings: Settings) -> ModelCard:
    log.info("loading tokenizer and config of %s", settings.model_source)
    card = await asyncio.get_running_loop().run_in_executor(None, load_model_card, settings)
    log.info(
        "model %s (%s): task %s, max length %d, %d labels",
        settings.model_name,
        card.name,
        card.task,
        card.max_length,
        len(card.id2label),
    )
    return card


async def prepare_backend(
    settings: Settings, card: ModelCard, backend: Backend, devices: list[DeviceSpec], terms: Terms
) -> tuple[Settings, str | None]:
    """The model's settings with its backend resolved (`backend`, as `preflight.check_model`
    found it), and the converted model its workers load (OpenVINO; converted once and cached),
    else None. Where auto chose OpenVINO by its rule, it keeps it only if measured faster than
    torch on the first worker's `devices` (`auto_choice`)."""
    auto = settings.backend is Backend.AUTO
    settings = settings.model_copy(update={"backend": backend})
    converted = None
    if backend is Backend.OPENVINO:
        loop = asyncio.get_running_loop()
        folder = await loop.run_in_executor(None, converted_model, settings, card.task, terms)
        converted = str(folder)
        if auto:
            (spec,) = worker_specs(settings, card, devices[:1], converted, terms)
            backend = await loop.run_in_executor(None, auto_choice, spec, card.vocab_size)
        if backend is Backend.TORCH:
            settings, converted = settings.model_copy(update={"backend": backend}), None
            if forks_worker(devices[0], backend):
                start_fork_server()
    log.info(
        "model %s: backend %s, precision %s",
        settings.model_name,
        backend_label(backend),
        precision_label(backend, settings.dtype, settings.quantize),
    )
    return settings, converted


def auto_choice(spec: WorkerSpec, vocab_size: int) -> Backend:
    """`--backend auto`'s choice between torch and the converted model of `spec` (its
    backend openvino): the one measured faster on `spec`'s device (`backends/speed.py`).
    The measurement is kept beside the converted model, one per core count, so a restart
    measures nothing; if it cannot be made, auto keeps openvino, its rule's choice."""
    assert spec.converted is not None
    cores = len(spec.device.cpus) or 1
    record = Path(spec.converted) / f"speed-{cores}-cores.json"
    if not record.is_file():
        log.info("auto: measuring torch against openvino on %s", spec.device.label)
        started = time.monotonic()
        sent = in_child(run_measure, (spec, vocab_size), "pipeserve-measure", "measurement")
        if isinstance(sent, str):
            log.warning(
                "auto: could not measure torch against openvino (%s): serving openvino", sent
            )
            return Backend.OPENVINO
        partial = record.with_name(f"{record.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps(sent), encoding="utf-8")
        partial.replace(record)  # whole or not at all
        log.info("auto: measured in %.1f s", time.monotonic() - started)
    spent = json.loads(record.read_text(encoding="utf-8"))
    choice = faster(spent)
    log.info(
        "auto: on %d core(s), openvino takes %.2fx torch's CPU time (%s): serving %s",
        cores,
        spent[Backend.OPENVINO] / spent[Backend.TORCH],
        record,
        choice,
    )
    return choice
