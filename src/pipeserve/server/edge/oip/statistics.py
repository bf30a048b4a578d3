"""ModelStatistics: the ModelInfer calls this front end answered, per model, in Triton's
terms. A call's stages map onto Triton's: tokenizing is compute_input, the wait for a batch
queue, the forward compute_infer, postprocessing compute_output. pipeserve batches items
of all callers together, so an execution is a call here, not a batch of the model's."""

import time
from dataclasses import dataclass, field

from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.server.requests.infer import Timings

_NS_PER_MS = 1_000_000


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class _Counts:
    last_inference_ms: int = 0
    inferences: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class Statistics:
    def __init__(self) -> None:
        self._models: dict[str, _Counts] = {}

    def succeeded(self, model: str, items: int, seconds: float, timings: Timings) -> None:
        counts = self._models.setdefault(model, _Counts())
        counts.last_inference_ms = int(time.time() * 1000)
        counts.inferences += items
        counts.success.add(int(seconds * 1e9))
        counts.queue.add(int(timings.queue_ms * _NS_PER_MS))
        counts.compute_input.add(int(timings.tokenize_ms * _NS_PER_MS))
        counts.compute_infer.add(int(timings.forward_ms * _NS_PER_MS))
        counts.compute_output.add(int(timings.postprocess_ms * _NS_PER_MS))

    def failed(self, model: str, seconds: float) -> None:
        self._models.setdefault(model, _Counts()).fail.add(int(seconds * 1e9))

    def message(self, model: str, version: str) -> oip.ModelStatistics:
        counts = self._models.get(model, _Counts())

        def duration(d: _Duration) -> oip.StatisticDuration:
            return oip.StatisticDuration(count=d.count, ns=d.ns)

        return oip.ModelStatistics(
            name=model,
            version=version,
            last_inference=counts.last_inference_ms,
            inference_count=counts.inferences,
            execution_count=counts.success.count,
            inference_stats=oip.InferStatistics(
                success=duration(counts.success),
                fail=duration(counts.fail),
                queue=duration(counts.queue),
                compute_input=duration(counts.compute_input),
                compute_infer=duration(counts.compute_infer),
                compute_output=duration(counts.compute_output),
            ),
        )
