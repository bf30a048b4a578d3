"""From one model's settings to the pieces its engine needs: the model card, the backend
resolved (and an OpenVINO model converted), and its workers' specs. Used at start-up for
every model and by LoadModel for one loaded while serving (`engine/registry.py`)."""

import asyncio
import logging

from pipeserve.server.backends.select import backend_label, converted_model
from pipeserve.server.model.card import ModelCard, load_model_card
from pipeserve.server.schema import DeviceSpec, WorkerSpec
from pipeserve.server.settings import Backend, Settings, precision_label
from pipeserve.server.terms import Terms

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
    settings: Settings, card: ModelCard, backend: Backend, terms: Terms
) -> tuple[Settings, str | None]:
    """The model's settings with its backend resolved (`backend`, as `preflight.check_model`
    found it), and the converted model its workers load (OpenVINO; converted once and cached),
    else None."""
    settings = settings.model_copy(update={"backend": backend})
    log.info(
        "model %s: backend %s, precision %s",
        settings.model_name,
        backend_label(backend),
        precision_label(backend, settings.dtype, settings.quantize),
    )
    if backend is not Backend.OPENVINO:
        return settings, None
    loop = asyncio.get_running_loop()
    converted = await loop.run_in_executor(None, converted_model, settings, card.task, terms)
    return settings, str(converted)
