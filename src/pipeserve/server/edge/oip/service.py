"""The GRPCInferenceService servicer: the protocol's messages to the request path's calls
and back. Which request path a ModelInfer call takes is `mappings.py`'s choice; tensors are
read and written by `tensors.py`. Errors are mapped by `edge/status.py` and calls counted by
`metrics.py`, wrapped around each method when registered (`edge/handlers.py`), as for
pipeserve.v1. Triton's RPCs other than those here answer UNIMPLEMENTED."""

import time
from collections.abc import AsyncIterator

from pipeserve import __version__
from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.server.edge.convert import call_deadline
from pipeserve.server.edge.oip.mappings import choose
from pipeserve.server.edge.oip.metadata import VERSION, model_config, model_metadata
from pipeserve.server.edge.oip.parameters import Parameters
from pipeserve.server.edge.oip.statistics import Statistics
from pipeserve.server.edge.oip.tasks import Call
from pipeserve.server.edge.oip.tensors import add_output, read_inputs
from pipeserve.server.edge.status import status_of
from pipeserve.server.edge.streams import answer_each
from pipeserve.server.errors import InvalidInput, ModelNotFound, Unavailable
from pipeserve.server.requests.describe import describe
from pipeserve.server.requests.models import Models, ServedModel

SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# The protocol's optional extensions served here, by the names Triton gives them.
EXTENSIONS = ("parameters", "model_configuration", "statistics")


class OpenInferenceService:
    def __init__(self, models: Models, max_stream_in_flight: int) -> None:
        self._models = models
        # The server's own setting: a stream outlives any one model, the default included.
        self._max_stream_in_flight = max_stream_in_flight
        self._statistics = Statistics()

    def _model(self, name: str, version: str) -> ServedModel:
        """The served model `name` (empty: the default), NOT_FOUND for another version."""
        model = self._models.get(name)
        if version not in ("", VERSION):
            raise ModelNotFound(f"model {model.name!r} has version {VERSION} only; got {version!r}")
        return model

    async def ServerLive(self, request, context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> oip.ServerReadyResponse:
        alive = [model.engine.alive > 0 for model in self._models]
        ready = bool(alive) and all(alive) and not self._models.loading
        return oip.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: oip.ModelReadyRequest, context) -> oip.ModelReadyResponse:
        # As Triton: a model it does not serve is not ready, rather than an error.
        try:
            model = self._model(request.name, request.version)
        except (ModelNotFound, Unavailable):  # not served, or still loading at start-up
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=model.engine.alive > 0)

    async def ServerMetadata(self, request, context) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name="pipeserve", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context
    ) -> oip.ModelMetadataResponse:
        return model_metadata(self._model(request.name, request.version))

    async def ModelConfig(
        self, request: oip.ModelConfigRequest, context
    ) -> oip.ModelConfigResponse:
        model = self._model(request.name, request.version)
        return model_config(model, await describe(model))

    async def ModelStatistics(
        self, request: oip.ModelStatisticsRequest, context
    ) -> oip.ModelStatisticsResponse:
        """One model's statistics, or with no name every served model's."""
        if request.name:
            names = [self._model(request.name, request.version).name]
        else:
            names = [model.name for model in self._models]
        return oip.ModelStatisticsResponse(
            model_stats=[self._statistics.message(name, VERSION) for name in names]
        )

    async def _infer(
        self, request: oip.ModelInferRequest, deadline: float | None
    ) -> oip.ModelInferResponse:
        model = self._model(request.model_name, request.model_version)
        start = time.perf_counter()
        try:
            tensors = read_inputs(request)
            parameters = Parameters(request.parameters)
            mapping = choose(model, tensors, parameters)
            wanted = tuple(output.name for output in request.outputs)
            call = Call(tensors, parameters, wanted, deadline)
            outputs, timings = await mapping.run(model, call)
            unknown = sorted(set(wanted) - set(outputs))
            if unknown:
                raise InvalidInput(
                    f"{model.name} gives no output {unknown} as {mapping.rpc}; it gives "
                    f"{', '.join(outputs)}"
                )
        except Exception:
            self._statistics.failed(model.name, time.perf_counter() - start)
            raise
        rows = next(iter(outputs.values())).shape[0]
        self._statistics.succeeded(model.name, rows, time.perf_counter() - start, timings)
        response = oip.ModelInferResponse(
            model_name=model.name, model_version=VERSION, id=request.id
        )
        # Raw contents in, raw out: tritonclient reads raw outputs only.
        raw = len(request.raw_input_contents) > 0
        for name in wanted or tuple(outputs):
            add_output(response, name, outputs[name], raw)
        return response

    async def ModelInfer(self, request: oip.ModelInferRequest, context) -> oip.ModelInferResponse:
        return await self._infer(request, call_deadline(context))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[oip.ModelInferRequest], context
    ) -> AsyncIterator[oip.ModelStreamInferResponse]:
        """Each request answered as it finishes, through the shared batcher (`streams.py`); a
        failed one answers with its error message, its `id` telling which it was."""
        deadline = call_deadline(context)

        async def answer(request: oip.ModelInferRequest) -> oip.ModelStreamInferResponse:
            try:
                response = await self._infer(request, deadline)
                return oip.ModelStreamInferResponse(infer_response=response)
            except Exception as error:  # unexpected ones are logged there
                failed = oip.ModelInferResponse(
                    model_name=request.model_name, model_version=VERSION, id=request.id
                )
                return oip.ModelStreamInferResponse(
                    error_message=status_of(error).message, infer_response=failed
                )

        in_flight = self._max_stream_in_flight
        async for response in answer_each(request_iterator, answer, in_flight):
            yield response
