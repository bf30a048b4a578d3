"""Served results equal the same checkpoint run in-process with transformers, one sentence at a
time, however the server batches and pads concurrent requests."""

import asyncio
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from pipeserve.client import (
    AsyncClient,
    Client,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    PipeserveError,
    StreamResult,
)
from tests.helpers import SEED_SENTENCES, in_process, sst2_sentences

LOGITS_ATOL = 1e-5
SCORE_ATOL = 1e-5
MINILM_ATOL = 1e-4


def _chunks(items: list[str], seed: int, sizes: tuple[int, ...] = (1, 2, 3, 4)) -> list[list[str]]:
    """Consecutive requests of 1-4 items, sizes drawn reproducibly."""
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(items):
        size = rng.choice(sizes)
        chunks.append(items[start : start + size])
        start += size
    return chunks


@dataclass(frozen=True)
class Reference:
    logits: np.ndarray
    last_hidden_state: np.ndarray


# --- The tiny DistilBERT classifier, two workers -------------------------------------------


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sst2_sentences(300)


@pytest.fixture(scope="module")
def id2label(tiny_distilbert) -> dict[int, str]:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_distilbert).id2label


@pytest.fixture(scope="module")
def reference(tiny_distilbert, sentences) -> dict[str, Reference]:
    from transformers import AutoModelForSequenceClassification

    logits, hidden = in_process(tiny_distilbert, AutoModelForSequenceClassification, sentences,
                                "logits", "last_hidden_state")  # fmt: skip
    return {s: Reference(*row) for s, *row in zip(sentences, logits, hidden, strict=True)}


def _info(client: Client) -> ModelInfo | PipeserveError:
    """ModelInfo, or the error it failed with, so value checks do not depend on ModelInfo."""
    try:
        return client.model_info()
    except PipeserveError as error:
        return error


@dataclass(frozen=True)
class Load:
    """What a concurrent load sent and got back, and ModelInfo around it."""

    items: int
    before: ModelInfo | PipeserveError
    after: ModelInfo | PipeserveError


def _check_batched_on_every_worker(load: Load) -> None:
    for info in (load.before, load.after):
        if isinstance(info, PipeserveError):
            pytest.fail(f"ModelInfo failed, so batching cannot be checked: {info!r}")
    before = {w.id: w for w in load.before.workers}
    after = {w.id: w for w in load.after.workers}
    assert before.keys() == after.keys()
    assert len(after) == 2
    batches = {i: after[i].batches - before[i].batches for i in after}
    items = {i: after[i].items - before[i].items for i in after}
    print(f"batches per worker {batches}, items per worker {items}")
    assert sum(items.values()) == load.items, (batches, items)
    assert all(count > 0 for count in batches.values()), f"a worker served nothing: {batches}"
    assert sum(batches.values()) < load.items, f"no batch had more than one item: {batches}"


def _check_logits(label: str, got: np.ndarray, expected: np.ndarray, diffs: list[float]) -> None:
    assert got.shape == expected.shape, label
    diffs.append(float(np.abs(got - expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOGITS_ATOL, err_msg=label)


def _check_labels(
    sentence: str,
    labels: list[LabelScore],
    expected_logits: np.ndarray,
    id2label: dict[int, str],
    diffs: list[float],
) -> None:
    shifted = np.exp(expected_logits - expected_logits.max())
    probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities, kind="stable")
    assert [s.index for s in labels] == order.tolist(), sentence
    assert [s.label for s in labels] == [id2label[int(i)] for i in order], sentence
    scores = np.array([s.score for s in labels])
    diffs.append(float(np.abs(scores - probabilities[order]).max()))
    np.testing.assert_allclose(
        scores, probabilities[order], rtol=0, atol=SCORE_ATOL, err_msg=sentence
    )


@dataclass(frozen=True)
class ThreadedResults:
    load: Load
    results: list[tuple[list[str], ForwardOutput, list[list[LabelScore]]]]


@pytest.fixture(scope="module")
def threaded(client, sentences) -> ThreadedResults:
    """Forward and Classify for every sentence, from 24 threads sharing one Client."""

    def call(chunk: list[str]):
        out = client.forward(chunk, outputs=["logits", "last_hidden_state"])
        labels = client.classify(chunk, top_k=None)
        return chunk, out, labels

    chunks = _chunks(sentences, seed=0)
    before = _info(client)
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, chunks))
    after = _info(client)
    return ThreadedResults(Load(2 * len(sentences), before, after), results)


def test_concurrent_forward_equals_in_process_model(threaded, reference):
    logit_diffs: list[float] = []
    hidden_diffs: list[float] = []
    for chunk, out, _ in threaded.results:
        assert list(out) == ["logits", "last_hidden_state"]
        lengths = out.sequence_lengths.tolist()
        assert out.last_hidden_state.shape[:2] == (len(chunk), max(lengths))
        for row, sentence in enumerate(chunk):
            expected = reference[sentence]
            _check_logits(sentence, out.logits[row], expected.logits, logit_diffs)
            length = lengths[row]
            assert length == len(expected.last_hidden_state), sentence
            hidden = out.last_hidden_state[row]
            _check_logits(sentence, hidden[:length], expected.last_hidden_state, hidden_diffs)
            assert not hidden[length:].any(), f"padding rows are not zero: {sentence}"
    assert len(logit_diffs) == len(reference)
    print(f"distilbert max |logits diff| {max(logit_diffs):.3g}, hidden {max(hidden_diffs):.3g}")


def test_concurrent_classify_equals_in_process_model(threaded, reference, id2label):
    diffs: list[float] = []
    for chunk, _, labels in threaded.results:
        assert len(labels) == len(chunk)
        for sentence, row in zip(chunk, labels, strict=True):
            _check_labels(sentence, row, reference[sentence].logits, id2label, diffs)
    assert len(diffs) == len(reference)
    print(f"distilbert max |score diff| {max(diffs):.3g}")


def test_concurrent_load_is_batched_on_both_workers(threaded):
    _check_batched_on_every_worker(threaded.load)


@dataclass(frozen=True)
class StreamedResults:
    load: Load
    chunks: dict[int, list[str]]
    results: list[StreamResult]


@pytest.fixture(scope="module")
def streamed(client, sentences) -> StreamedResults:
    """Every sentence through one ClassifyStream, as many small requests with their own ids."""
    chunks = dict(enumerate(_chunks(sentences, seed=1, sizes=(1, 2, 3))))
    requests = [(f"req-{i}", chunk) for i, chunk in chunks.items()]
    before = _info(client)
    results = list(client.classify_stream(iter(requests), top_k=None))
    after = _info(client)
    return StreamedResults(Load(len(sentences), before, after), chunks, results)


def test_classify_stream_equals_in_process_model(streamed, sentences, reference, id2label):
    ids = sorted(f"req-{i}" for i in streamed.chunks)
    assert sorted(r.id for r in streamed.results) == ids
    diffs: list[float] = []
    for result in streamed.results:
        assert result.error is None, result
        assert result.results is not None
        chunk = streamed.chunks[int(result.id.removeprefix("req-"))]
        assert len(result.results) == len(chunk)
        for sentence, labels in zip(chunk, result.results, strict=True):
            _check_labels(sentence, labels, reference[sentence].logits, id2label, diffs)
    assert len(diffs) == len(sentences)
    print(f"classify_stream max |score diff| {max(diffs):.3g}")


def test_classify_stream_is_batched_on_both_workers(streamed):
    _check_batched_on_every_worker(streamed.load)


def test_async_client_gather_equals_in_process_model(address, sentences, reference):
    chunks = _chunks(sentences, seed=2)

    async def run() -> list[ForwardOutput]:
        async with AsyncClient(address, timeout=120) as client:
            return await asyncio.gather(*(client.forward(chunk) for chunk in chunks))

    outputs = asyncio.run(run())

    diffs: list[float] = []
    for chunk, out in zip(chunks, outputs, strict=True):
        assert list(out) == ["logits"]  # the head's own output by default
        for row, sentence in enumerate(chunk):
            _check_logits(sentence, out.logits[row], reference[sentence].logits, diffs)
    assert len(diffs) == len(sentences)
    print(f"async max |logits diff| {max(diffs):.3g}")


# --- Real pretrained all-MiniLM-L6-v2 --------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_client(minilm_server) -> Iterator[Client]:
    with Client(minilm_server.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def minilm_sentences() -> list[str]:
    return sst2_sentences(50)


@pytest.fixture(scope="module")
def minilm_reference(minilm_path, minilm_sentences) -> dict[str, dict[str, np.ndarray]]:
    from transformers import AutoModel

    names = ("last_hidden_state", "pooler_output")
    rows = in_process(minilm_path, AutoModel, minilm_sentences, *names)
    return {
        s: dict(zip(names, row, strict=True))
        for s, *row in zip(minilm_sentences, *rows, strict=True)
    }


def test_minilm_concurrent_forward_equals_in_process_model(
    minilm_client, minilm_sentences, minilm_reference
):
    names = ["last_hidden_state", "pooler_output"]
    chunks = _chunks(minilm_sentences, seed=3, sizes=(1, 2, 3))
    with ThreadPoolExecutor(max_workers=16) as pool:
        outputs = list(pool.map(lambda chunk: minilm_client.forward(chunk, outputs=names), chunks))

    hidden_diffs: list[float] = []
    pooled_diffs: list[float] = []
    for chunk, out in zip(chunks, outputs, strict=True):
        assert list(out) == names
        for row, sentence in enumerate(chunk):
            expected = minilm_reference[sentence]
            length = int(out.sequence_lengths[row])
            assert length == len(expected["last_hidden_state"]), sentence
            hidden = out.last_hidden_state[row]
            real = hidden[:length]
            hidden_diffs.append(float(np.abs(real - expected["last_hidden_state"]).max()))
            np.testing.assert_allclose(
                real, expected["last_hidden_state"], rtol=0, atol=MINILM_ATOL
            )
            assert not hidden[length:].any(), f"padding rows are not zero: {sentence}"
            pooled = out.pooler_output[row]
            pooled_diffs.append(float(np.abs(pooled - expected["pooler_output"]).max()))
            np.testing.assert_allclose(pooled, expected["pooler_output"], rtol=0, atol=MINILM_ATOL)
    assert len(hidden_diffs) == len(minilm_sentences)
    # Chunks of several sentences were padded, so padding did not change the real positions.
    assert any(len(set(out.sequence_lengths.tolist())) > 1 for out in outputs)
    print(
        f"minilm max |last_hidden_state diff| {max(hidden_diffs):.3g}, "
        f"|pooler_output diff| {max(pooled_diffs):.3g}"
    )


def test_minilm_float16_outputs(minilm_client, minilm_sentences):
    names = ["last_hidden_state", "pooler_output"]
    inputs = [*SEED_SENTENCES, *minilm_sentences[:6]]

    full = minilm_client.forward(inputs, outputs=names)
    half = minilm_client.forward(inputs, outputs=names, dtype="float16")

    assert half.sequence_lengths.tolist() == full.sequence_lengths.tolist()
    for name in names:
        assert full[name].dtype == np.float32, name
        assert half[name].dtype == np.float16, name
        assert half[name].shape == full[name].shape, name
        diff = np.abs(half[name].astype(np.float32) - full[name]).max()
        print(f"minilm float16 vs float32 max |{name} diff| {diff:.3g}")
        # float16 keeps 11 significant bits: relative error at most 2**-11 after rounding.
        np.testing.assert_allclose(
            half[name].astype(np.float32), full[name], rtol=1e-3, atol=1e-4, err_msg=name
        )
    assert not np.array_equal(half.last_hidden_state.astype(np.float32), full.last_hidden_state)
