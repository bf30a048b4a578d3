"""The Python clients against the real session server (tiny DistilBERT, two CPU workers):
sync and asyncio agree, results read like transformers', errors keep their gRPC status,
deadlines and streams behave, and the client package stays free of torch. The clients'
signatures and docstrings: tests/unit/test_client.py."""

import asyncio
import dataclasses
import json
import os
import pickle
import queue
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from pipeserve.client import (
    AsyncClient,
    Client,
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    PipeserveError,
    StreamResult,
)
from tests.helpers import SEED_SENTENCES
from tests.servers import ServerProcess

TIMEOUT = 60.0
PAIR = ("Where is the course?", "The course is on the Hugging Face website.")
HIDDEN_SIZE = 32  # dim of the tiny DistilBERT (tests/checkpoints.py)


# --- Sync and async agree ---------------------------------------------------------------------

# Each call works on a Client (returns the result) and an AsyncClient (returns an awaitable).
CALLS: dict[str, Callable[[Any], Any]] = {
    "tokenize": lambda c: c.tokenize(
        [*SEED_SENTENCES, PAIR], return_tokens=True, return_offsets=True
    ),
    "forward": lambda c: c.forward(SEED_SENTENCES, outputs=["logits", "last_hidden_state"]),
    "classify": lambda c: c.classify([*SEED_SENTENCES, PAIR], top_k=None),
    "model_info": lambda c: c.model_info(),
}


def _check_same(name: str, sync: Any, aio: Any) -> None:
    if name == "tokenize":
        assert len(sync) == 3
        assert all(isinstance(e, Encoding) and e.input_ids for e in sync)
        assert sync == aio
    elif name == "forward":
        assert isinstance(aio, ForwardOutput)
        assert list(sync) == list(aio) == ["logits", "last_hidden_state"]
        assert sync.logits.shape == (2, 2)
        np.testing.assert_array_equal(sync.sequence_lengths, aio.sequence_lengths)
        for key in sync:
            assert sync[key].dtype == aio[key].dtype == np.float32
            np.testing.assert_allclose(sync[key], aio[key], rtol=1e-5, atol=1e-6)
    elif name == "classify":
        assert len(sync) == 3
        assert all(len(labels) == 2 for labels in sync)
        assert [[(s.label, s.index) for s in row] for row in sync] == [
            [(s.label, s.index) for s in row] for row in aio
        ]
        for row_sync, row_aio in zip(sync, aio, strict=True):
            # The product's fidelity bound: the two calls may be batched, so padded, apart.
            assert [s.score for s in row_sync] == pytest.approx(
                [s.score for s in row_aio], abs=1e-5
            )
    else:
        assert isinstance(aio, ModelInfo)
        assert sync.architecture == "DistilBertForSequenceClassification"
        assert sync.labels == ["NEGATIVE", "POSITIVE"]

        def static(info: ModelInfo) -> ModelInfo:
            # Batch counters move between the two calls; everything else must not.
            workers = [dataclasses.replace(w, batches=0, items=0) for w in info.workers]
            return dataclasses.replace(info, workers=workers)

        assert static(sync) == static(aio)


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(CALLS))
async def test_sync_and_async_clients_return_the_same(name: str, client: Client, address: str):
    sync = CALLS[name](client)
    async with AsyncClient(address, timeout=TIMEOUT) as aclient:
        aio = await CALLS[name](aclient)
    _check_same(name, sync, aio)


# --- Results ----------------------------------------------------------------------------------


def test_forward_output_reads_by_attribute_key_and_index(client: Client):
    out = client.forward(SEED_SENTENCES, outputs=["logits", "last_hidden_state"])

    assert out.logits is out["logits"] is out[0]
    assert out.last_hidden_state is out["last_hidden_state"] is out[1]
    assert out.to_tuple() == (out.logits, out.last_hidden_state)
    with pytest.raises(AttributeError, match="pooler_output"):
        _ = out.pooler_output

    lengths = [len(e.input_ids) for e in client.tokenize(SEED_SENTENCES, padding="do_not_pad")]
    assert out.sequence_lengths.tolist() == lengths
    assert out.logits.shape == (2, 2)
    assert out.last_hidden_state.shape == (2, max(lengths), HIDDEN_SIZE)
    # Beyond each item's length, per-token outputs are zero padding.
    short = int(np.argmin(lengths))
    assert not out.last_hidden_state[short, lengths[short] :].any()
    assert out.last_hidden_state[short, : lengths[short]].any()


def test_float16_returns_float16_arrays_close_to_float32(client: Client):
    names = ["logits", "last_hidden_state"]
    full = client.forward(SEED_SENTENCES, outputs=names)
    half = client.forward(SEED_SENTENCES, outputs=names, dtype="float16")
    also_half = client.forward(SEED_SENTENCES, outputs=names, dtype=np.float16)

    for name in names:
        assert half[name].dtype == also_half[name].dtype == np.float16
        assert half[name].shape == full[name].shape
        np.testing.assert_allclose(half[name], full[name], atol=1e-2, rtol=1e-2)


# --- Errors and deadlines ---------------------------------------------------------------------


def test_pipeserve_error_keeps_status_code_and_message(client: Client):
    with pytest.raises(PipeserveError) as caught:
        client.classify([SEED_SENTENCES[0], ""])
    error = caught.value

    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[1].text" in error.details
    assert str(error) == f"INVALID_ARGUMENT: {error.details}"
    assert isinstance(error.__cause__, grpc.RpcError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.details) == (error.code, error.details)


@pytest.mark.asyncio
async def test_async_client_raises_pipeserve_error_too(address: str):
    async with AsyncClient(address, timeout=TIMEOUT) as aclient:
        with pytest.raises(PipeserveError) as caught:
            await aclient.tokenize([("a text", "")])
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].text_pair" in caught.value.details


def _many_sentences(count: int = 200) -> list[str]:
    return [f"{SEED_SENTENCES[i % 2]} (number {i})" for i in range(count)]


def test_per_call_timeout_overrides_the_client_default(address: str):
    sentences = _many_sentences()
    with Client(address, timeout=TIMEOUT) as patient:
        with pytest.raises(PipeserveError) as caught:
            patient.classify(sentences, timeout=0.001)
        assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(patient.classify(sentences)) == len(sentences)  # the default still holds

    with Client(address, timeout=0.001) as hasty:
        with pytest.raises(PipeserveError) as caught:
            hasty.classify(sentences)
        assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(hasty.classify(sentences, timeout=TIMEOUT)) == len(sentences)


@pytest.mark.asyncio
async def test_async_per_call_timeout(address: str):
    sentences = _many_sentences()
    async with AsyncClient(address, timeout=TIMEOUT) as aclient:
        with pytest.raises(PipeserveError) as caught:
            await aclient.classify(sentences, timeout=0.001)
        assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(await aclient.classify(sentences)) == len(sentences)


# --- Closing ----------------------------------------------------------------------------------


def test_context_manager_closes_the_client(address: str):
    client = Client(address, timeout=TIMEOUT)
    with client as entered:
        assert entered is client
        assert client.tokenize(["hello"])[0].input_ids
    with pytest.raises(ValueError, match="closed"):
        client.tokenize(["hello"])


@pytest.mark.asyncio
async def test_async_context_manager_closes_the_client(address: str):
    aclient = AsyncClient(address, timeout=TIMEOUT)
    async with aclient as entered:
        assert entered is aclient
        assert (await aclient.tokenize(["hello"]))[0].input_ids
    with pytest.raises(grpc.aio.UsageError, match="closed"):
        await aclient.tokenize(["hello"])


# --- Streams ----------------------------------------------------------------------------------

STREAM = {
    "one": [SEED_SENTENCES[0]],
    "two": [SEED_SENTENCES[1], PAIR],
    "three": ["good", "bad", "fine"],
}


def _check_stream(results: list[StreamResult], client: Client) -> None:
    assert sorted(r.id for r in results) == sorted(STREAM)  # one result per id, no extra
    for result in results:
        assert result.error is None, result.error
        assert result.results is not None
        inputs = STREAM[result.id]
        assert len(result.results) == len(inputs)
        unary = client.classify(inputs, top_k=None)
        for labels, expected in zip(result.results, unary, strict=True):
            assert all(isinstance(label, LabelScore) for label in labels)
            assert [s.label for s in labels] == [s.label for s in expected]
            assert [s.score for s in labels] == pytest.approx([s.score for s in expected], abs=1e-3)


def test_classify_stream_reads_a_generator_while_results_come_back(client: Client):
    answered: queue.Queue[str] = queue.Queue()

    def requests() -> Iterator[tuple[str, list]]:
        for request_id, inputs in STREAM.items():
            yield request_id, inputs
            # The next request is only sent once this one is answered, so the client must
            # read the generator lazily, as results arrive.
            assert answered.get(timeout=TIMEOUT) == request_id

    results = []
    for result in client.classify_stream(requests(), top_k=None, timeout=TIMEOUT):
        results.append(result)
        answered.put(result.id)
    _check_stream(results, client)


@pytest.mark.asyncio
async def test_async_classify_stream_takes_an_async_generator(address: str, client: Client):
    answered: asyncio.Queue[str] = asyncio.Queue()

    async def requests() -> AsyncIterator[tuple[str, list]]:
        for request_id, inputs in STREAM.items():
            yield request_id, inputs
            async with asyncio.timeout(TIMEOUT):
                assert await answered.get() == request_id

    results = []
    async with AsyncClient(address, timeout=TIMEOUT) as aclient:
        async for result in aclient.classify_stream(requests(), top_k=None):
            results.append(result)
            answered.put_nowait(result.id)
    _check_stream(results, client)


# --- Packaging --------------------------------------------------------------------------------


def test_importing_the_client_loads_neither_torch_nor_transformers():
    code = (
        "import json, sys\n"
        "import pipeserve.client\n"
        "from pipeserve.client import AsyncClient, Client\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(json.dumps({'file': pipeserve.client.__file__, 'heavy': heavy}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(result.stdout)
    assert Path(loaded["file"]).parent.name == "client"  # the real package was imported
    assert loaded["heavy"] == []


# --- Workers ----------------------------------------------------------------------------------


def _cpu_labels(cores: list[int], workers: int) -> list[str]:
    """Device labels of `workers` CPU workers sharing `cores`: contiguous, as even as possible,
    the first ones taking the extra cores; with fewer cores than workers, one core each."""
    if workers >= len(cores):
        groups = [[cores[i % len(cores)]] for i in range(workers)]
    else:
        size, extra = divmod(len(cores), workers)
        groups, start = [], 0
        for i in range(workers):
            end = start + size + (1 if i < extra else 0)
            groups.append(cores[start:end])
            start = end

    def label(group: list[int]) -> str:
        if len(group) == 1:
            return f"cpu:{group[0]}"
        if group == list(range(group[0], group[-1] + 1)):
            return f"cpu:{group[0]}-{group[-1]}"
        return "cpu:" + ",".join(map(str, group))

    return [label(group) for group in groups]


def test_both_workers_serve_concurrent_traffic(client: Client, server: ServerProcess):
    sentences = _many_sentences(64)
    # The counters are the session server's since it started: only their change is this test's.
    before = {w.id: w for w in client.model_info().workers}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: client.classify(sentences[i : i + 4]), range(0, 64, 4)))
    assert [len(r) for r in results] == [4] * 16

    info = client.model_info()
    workers = info.workers
    assert [w.id for w in workers] == [0, 1]
    assert [w.device for w in workers] == _cpu_labels(sorted(os.sched_getaffinity(0)), 2)
    pids = [w.pid for w in workers]
    assert len(set(pids)) == 2
    assert server.proc.pid not in pids
    batches = {w.id: w.batches - before[w.id].batches for w in workers}
    items = {w.id: w.items - before[w.id].items for w in workers}
    for worker in workers:
        assert worker.ready
        assert batches[worker.id] > 0, f"worker {worker.id} computed no batch: {batches}"
        assert items[worker.id] >= batches[worker.id]
        os.kill(worker.pid, 0)  # a live process: raises ProcessLookupError otherwise
    assert sum(items.values()) == 64


def _cores(label: str) -> set[int]:
    """The cores of a device label such as cpu:0-2, cpu:0,3 or cpu:1."""
    cores: set[int] = set()
    for part in label.removeprefix("cpu:").split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


def test_each_cpu_worker_runs_on_its_own_cores(client: Client):
    workers = client.model_info().workers
    for worker in workers:
        assert os.sched_getaffinity(worker.pid) == _cores(worker.device), worker
    if len(os.sched_getaffinity(0)) >= len(workers):
        assert not set.intersection(*(_cores(w.device) for w in workers))
