"""`--backend auto` on a CPU, by measurement: the model on torch against its OpenVINO
conversion, each run as a worker runs it (its `forward`, on the worker's cores and threads),
over a few batch shapes, alternating so that a change in the host's load falls on both.

OpenVINO is usually the faster (README, Performance), but not on every CPU, model or thread
count, and auto must never be a silent slowdown. Pure: knows nothing of processes; the
measurement runs in a child pinned as a worker is (`workers/measure.py`), once per converted
model and core count (`model/loading.auto_choice` keeps it beside the converted model).
"""

import time
from collections.abc import Mapping

from pipeserve.server.backends.runner import ModelRunner, random_batch
from pipeserve.server.settings import Backend

# (rows, longest): a lone short request, a small batch and a full one of SST-2-like lengths,
# the rows of a batch padded as the batcher's are (see `random_batch`): a runner that packs
# gains there what it gains in serving.
MEASURE_SHAPES = ((1, 12), (8, 24), (32, 32))
# Rounds over every shape and runner after one round of warm-up (first calls of a shape
# allocate, OpenVINO's reshape its kernels).
_ROUNDS = 3


def measure(runners: Mapping[Backend, ModelRunner], vocab_size: int) -> dict[str, float]:
    """CPU seconds each runner spent on the measured rounds, by backend name. CPU time, not
    wall time: on a shared host the wall clock counts other jobs too."""
    batches = [random_batch(shape, vocab_size) for shape in MEASURE_SHAPES]
    spent = dict.fromkeys(map(str, runners), 0.0)
    for round_ in range(_ROUNDS + 1):
        for ids, mask in batches:
            for backend, runner in runners.items():
                start = time.process_time()
                runner.forward(ids, mask, None, None)
                if round_:
                    spent[str(backend)] += time.process_time() - start
    return spent


def faster(spent: Mapping[str, float]) -> Backend:
    """The backend that spent the least (OpenVINO on a tie: its workers hold no torch)."""
    openvino, torch = spent[str(Backend.OPENVINO)], spent[str(Backend.TORCH)]
    return Backend.OPENVINO if openvino <= torch else Backend.TORCH
