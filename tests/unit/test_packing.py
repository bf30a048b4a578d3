"""Batches run as length buckets or packed: the cut is the cheapest one the cost model allows,
the cost model learns a call's fixed cost apart from its tokens, the engine sends a batch
sorted by length with its cuts and maps the rows back to their callers (where the workers pack:
in arrival order, as one call, costed at its real tokens), and a bucketed or packed batch's
outputs equal transformers' on each sentence alone (float32, 1e-5) for every output kind: a
head's logits, token-level states, pooled embeddings, mask rows, on torch and OpenVINO, and
with packing for positions numbered past padding_idx (RoBERTa) and sentence pairs."""

import asyncio
import itertools
import random

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from pipeserve.server.backends.runner import load_runner
from pipeserve.server.backends.select import converted_model
from pipeserve.server.engine.cost import BatchCost, bucket_tokens, plan_buckets
from pipeserve.server.engine.dispatch import Ran
from pipeserve.server.engine.queue import pick_batch
from pipeserve.server.schema import BatchDone, MaskRows, Pooled
from pipeserve.server.settings import Backend, DType, Quantize, Settings, Task
from pipeserve.server.terms import FLAG_TERMS
from pipeserve.server.workers.buckets import forward_buckets
from tests.helpers import in_process
from tests.unit.engine_standins import _BIG, _run, _submit

TOLERANCE = 1e-5
# Mixed lengths, several per length, so that buckets hold one or more rows.
TEXTS = [
    "Fine.",
    "A long, winding and ultimately rewarding film about three brothers and their father.",
    "I hate this so much!",
    "Good.",
    "I've been waiting for a HuggingFace course my whole life.",
    "The plot is thin, the acting wooden, and the music far too loud for its own good.",
    "Not bad at all.",
    "Bad.",
    "It was fine, I suppose, if you like that kind of thing.",
]


def _cheapest(lengths: list[int], overhead: float) -> float:
    """Every way to cut the sorted lengths into calls, tried."""
    n = len(lengths)
    return min(
        bucket_tokens(lengths, cuts) + overhead * (len(cuts) + 1)
        for k in range(n)
        for cuts in itertools.combinations(range(1, n), k)
    )


@pytest.mark.parametrize("overhead", [0.0, 3.0, 20.0, 1000.0])
def test_the_plan_is_the_cheapest_cut(overhead):
    rng = random.Random(int(overhead))
    for _ in range(30):
        lengths = sorted(rng.randint(2, 60) for _ in range(rng.randint(1, 9)))
        cuts = plan_buckets(lengths, overhead)
        assert list(cuts) == sorted(set(cuts)) and all(0 < c < len(lengths) for c in cuts)
        cost = bucket_tokens(lengths, cuts) + overhead * (len(cuts) + 1)
        assert cost == pytest.approx(_cheapest(lengths, overhead))


def test_no_overhead_cuts_at_every_length_and_an_infinite_one_never():
    lengths = [3, 3, 5, 9, 9, 9]
    assert plan_buckets(lengths, 0.0) == (2, 3)
    assert plan_buckets(lengths, float("inf")) == ()
    assert bucket_tokens(lengths, (2, 3)) == sum(lengths)
    assert bucket_tokens(lengths, ()) == 9 * len(lengths)


def test_the_cost_model_tells_a_calls_fixed_cost_from_its_tokens():
    cost = BatchCost()
    rng = random.Random(0)
    for _ in range(40):
        tokens, calls = rng.randint(50, 2000), rng.randint(1, 4)
        cost.observe(tokens, forward_ms=6.0 * calls + 0.02 * tokens, calls=calls)
    assert cost.overhead_tokens == pytest.approx(300.0)
    assert cost.predict_ms(1000, calls=3) == pytest.approx(38.0)


def test_the_engine_sends_a_batch_sorted_with_its_cuts_and_rows_go_back_to_their_callers():
    async def scenario(engine, workers) -> None:
        (worker,) = workers
        requests = [_submit(engine, n) for n in (7, 3, 7, 12, 3)]
        # All five in one batch (the queue's cut at a large overhead), cut at no overhead.
        entries = engine.queue.take(_BIG, _BIG, 1e9, asyncio.get_running_loop().time())
        engine.dispatcher.dispatch(worker.handle, entries, overhead_tokens=0.0)
        batch = worker.received()
        assert batch.lengths == (3, 3, 7, 7, 12)
        assert batch.cuts == (2, 4)
        reports = []
        engine.dispatcher._report = reports.append  # what the engine would learn
        # Each row answers with its own length, so a row given to the wrong caller shows.
        logits = np.repeat(np.asarray(batch.lengths, np.float32)[:, None], 2, axis=1)
        engine.dispatcher.on_batch(worker.handle, BatchDone(batch.batch_id, {"logits": logits}, 5))
        for request, n in zip(requests, (7, 3, 7, 12, 3), strict=True):
            assert (await request.future).arrays["logits"][0, 0] == n
        assert Ran(5, 3 * 2 + 7 * 2 + 12, 5, calls=3) in reports

    _run(scenario)


def _bucketed(
    runner, path, texts: list[str], outputs, packed: bool = False
) -> tuple[list[int], dict, list[int]]:
    """The texts as the engine sends them (sorted by length), run cut at every length, or, if
    `packed`, as one padded call the runner packs."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    lengths = [len(encoded["input_ids"][i]) for i in order]
    ids = np.zeros((len(texts), max(lengths)), np.int64)
    for row, i in enumerate(order):
        ids[row, : lengths[row]] = encoded["input_ids"][i]
    # One segment, as a single text's are; None where the model takes no token types.
    types = np.zeros_like(ids) if "token_type_ids" in encoded else None
    cuts = () if packed else plan_buckets(lengths, 0.0)
    assert runner.packs if packed else len(cuts) >= 3  # several calls, some of several rows
    return order, forward_buckets(runner, ids, types, lengths, cuts, outputs), lengths


def _torch(path, task):
    return load_runner(
        Backend.TORCH, model=str(path), revision=None, task=task, dtype=DType.FLOAT32,
        quantize=Quantize.NONE, device="cpu", threads=1,
    )  # fmt: skip


def _assert_rows(got: np.ndarray, order, lengths, want: list[np.ndarray], token_level: bool):
    worst = 0.0
    for row, i in enumerate(order):
        mine = got[row, : lengths[row]] if token_level else got[row]
        assert mine.shape == want[i].shape
        worst = max(worst, float(np.abs(mine - want[i]).max()))
    assert worst <= TOLERANCE, worst


PACKED = pytest.mark.parametrize("packed", [False, True], ids=["buckets", "packed"])


@PACKED
def test_a_heads_logits_equal_transformers(tiny_distilbert, packed):
    runner = _torch(tiny_distilbert, Task.TEXT_CLASSIFICATION)
    order, got, lengths = _bucketed(runner, tiny_distilbert, TEXTS, ("logits",), packed)
    (want,) = in_process(tiny_distilbert, AutoModelForSequenceClassification, TEXTS, "logits")
    _assert_rows(got["logits"], order, lengths, want, token_level=False)


@PACKED
def test_token_level_outputs_and_the_pooler_equal_transformers(tiny_bert, tiny_bert_ner, packed):
    runner = _torch(tiny_bert, Task.FEATURE_EXTRACTION)
    order, got, lengths = _bucketed(
        runner, tiny_bert, TEXTS, ("last_hidden_state", "pooler_output"), packed
    )
    for output, token_level in (("last_hidden_state", True), ("pooler_output", False)):
        (want,) = in_process(tiny_bert, AutoModel, TEXTS, output)
        _assert_rows(got[output], order, lengths, want, token_level)
    runner = _torch(tiny_bert_ner, Task.TOKEN_CLASSIFICATION)
    order, got, lengths = _bucketed(runner, tiny_bert_ner, TEXTS, ("logits",), packed)
    (want,) = in_process(tiny_bert_ner, AutoModelForTokenClassification, TEXTS, "logits")
    _assert_rows(got["logits"], order, lengths, want, token_level=True)


@PACKED
def test_pooled_embeddings_equal_mean_pooled_transformers(minilm_path, packed):
    runner = _torch(minilm_path, Task.FEATURE_EXTRACTION)
    order, got, lengths = _bucketed(runner, minilm_path, TEXTS, (Pooled("mean"),), packed)
    (states,) = in_process(minilm_path, AutoModel, TEXTS, "last_hidden_state")
    _assert_rows(got[Pooled("mean")], order, lengths, [s.mean(0) for s in states], False)


@PACKED
def test_mask_rows_equal_transformers_whatever_each_calls_mask_count(tiny_bert_mlm, packed):
    texts = ["[MASK] " + t.replace("the", "[MASK]") for t in TEXTS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_mlm)
    rows = MaskRows(tokenizer.mask_token_id)
    runner = _torch(tiny_bert_mlm, Task.FILL_MASK)
    order, got, _ = _bucketed(runner, tiny_bert_mlm, texts, (rows,), packed)
    (logits,) = in_process(tiny_bert_mlm, AutoModelForMaskedLM, texts, "logits")
    masks = [np.asarray(tokenizer(t)["input_ids"]) == tokenizer.mask_token_id for t in texts]
    assert len({int(m.sum()) for m in masks}) > 1  # calls of different mask counts
    for row, i in enumerate(order):
        count = int(masks[i].sum())
        assert np.abs(got[rows][row, :count] - logits[i][masks[i]]).max() <= TOLERANCE
        assert not got[rows][row, count:].any()  # zero rows after an item's own masks


def test_packed_positions_start_where_the_model_numbers_them(tiny_roberta):
    """RoBERTa numbers a row's tokens from padding_idx + 1: so must each packed row."""
    runner = _torch(tiny_roberta, Task.TEXT_CLASSIFICATION)
    order, got, lengths = _bucketed(runner, tiny_roberta, TEXTS, ("logits",), packed=True)
    (want,) = in_process(tiny_roberta, AutoModelForSequenceClassification, TEXTS, "logits")
    _assert_rows(got["logits"], order, lengths, want, token_level=False)


def test_packed_sentence_pairs_keep_their_segments(task_models):
    """A cross-encoder's pairs: each packed row keeps its token types."""
    path = task_models["ce"]
    pairs = list(zip(TEXTS, reversed(TEXTS), strict=True))
    tokenizer = AutoTokenizer.from_pretrained(path)
    padded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True)
    ids, types, mask = (
        np.asarray(padded[k]) for k in ("input_ids", "token_type_ids", "attention_mask")
    )
    runner = _torch(path, Task.TEXT_CLASSIFICATION)
    assert runner.packs and not mask.all()
    got = runner.forward(ids, mask, types, ("logits",))["logits"]
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    for row, (a, b) in enumerate(pairs):
        with torch.inference_mode():
            want = model(**tokenizer(a, b, return_tensors="pt")).logits[0].numpy()
        assert np.abs(got[row] - want).max() <= TOLERANCE


def test_where_workers_pack_the_oldest_go_first_within_the_slot():
    lengths = [30, 4, 31, 5, 29, 6]
    assert pick_batch(lengths, 1000, 4, 64.0, in_order=True) == [0, 1, 2, 3]
    # Longest x count within the token budget: 31 x 3 fits 100, 31 x 4 does not.
    assert pick_batch(lengths, 100, 10, 64.0, in_order=True) == [0, 1, 2]
    assert pick_batch([500, 3], 100, 10, 64.0, in_order=True) == [0]  # over it, alone
    assert pick_batch(lengths, 1000, 4, 64.0) != [0, 1, 2, 3]  # by length otherwise


def test_where_workers_pack_a_batch_goes_as_one_call_costed_at_its_real_tokens():
    async def scenario(engine, workers) -> None:
        (worker,) = workers
        assert engine.dispatcher.packs
        requests = [_submit(engine, n) for n in (7, 3, 12, 3)]
        loop = asyncio.get_running_loop()
        entries = engine.queue.take(_BIG, _BIG, 0.0, loop.time(), in_order=True)
        engine.dispatcher.dispatch(worker.handle, entries, overhead_tokens=0.0)
        batch = worker.received()
        assert batch.lengths == (3, 3, 7, 12) and batch.cuts == ()
        reports = []
        engine.dispatcher._report = reports.append
        logits = np.repeat(np.asarray(batch.lengths, np.float32)[:, None], 2, axis=1)
        engine.dispatcher.on_batch(worker.handle, BatchDone(batch.batch_id, {"logits": logits}, 5))
        for request, n in zip(requests, (7, 3, 12, 3), strict=True):
            assert (await request.future).arrays["logits"][0, 0] == n
        assert Ran(4, 3 + 3 + 7 + 12, 5, calls=1) in reports

    _run(scenario, packs=True)


@pytest.mark.slow
def test_openvino_buckets_equal_transformers(tiny_bert_ner, openvino_cache):
    settings = Settings(
        model=str(tiny_bert_ner), backend=Backend.OPENVINO, cache_dir=openvino_cache
    )
    runner = load_runner(
        Backend.OPENVINO, model=str(tiny_bert_ner), revision=None, task=Task.TOKEN_CLASSIFICATION,
        dtype=DType.FLOAT32, quantize=Quantize.NONE, device="cpu", threads=1,
        converted=converted_model(settings, Task.TOKEN_CLASSIFICATION, FLAG_TERMS),
    )  # fmt: skip
    order, got, lengths = _bucketed(runner, tiny_bert_ner, TEXTS, ("logits",))
    (want,) = in_process(tiny_bert_ner, AutoModelForTokenClassification, TEXTS, "logits")
    _assert_rows(got["logits"], order, lengths, want, token_level=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # inductor compiles for minutes on two busy cores
def test_the_compiled_model_equals_transformers_in_buckets(tiny_distilbert, monkeypatch, caplog):
    from pipeserve.server.backends import torch_runner

    monkeypatch.setattr(torch_runner, "_MIN_GAIN", float("-inf"))  # kept however it measures
    runner = _torch(tiny_distilbert, Task.TEXT_CLASSIFICATION)
    with caplog.at_level("INFO", logger="pipeserve.forward"):
        runner.compile()
    assert "running compiled" in caplog.text
    assert runner._run is not runner._named
    assert not runner.packs  # compiled graphs run padded batches
    order, got, lengths = _bucketed(runner, tiny_distilbert, TEXTS, ("logits",))
    (want,) = in_process(tiny_distilbert, AutoModelForSequenceClassification, TEXTS, "logits")
    _assert_rows(got["logits"], order, lengths, want, token_level=False)
