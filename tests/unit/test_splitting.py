"""Calls larger than the server's limits, the splitting itself on made-up limits: a request is
cut by items and by tokens in input order, truncation and windows bound an item's tokens, and
the parts' answers join into what one request would return (tokenize and forward padded to the
longest item, one ranking from rerank's parts). Against servers: tests/e2e/test_splitting.py."""

import numpy as np

from pipeserve.client import Encoding
from pipeserve.client.results import ForwardOutput, ModelInfo
from pipeserve.client.split import (
    Split,
    concatenated,
    forward_outputs,
    plan,
    token_bound,
    tokenize_split,
)
from pipeserve.client.tasks.rerank import RankedDocument, best_of_parts
from pipeserve.v1 import pipeserve_pb2 as pb


def limits(max_items: int, max_tokens: int = 0, max_length: int = 512) -> ModelInfo:
    return ModelInfo(
        model="m", task="text-classification", architecture="", labels=[], max_length=max_length,
        hidden_size=0, vocab_size=0, outputs=[], dtype="float32", workers=[],
        max_items_per_request=max_items, max_tokens_per_request=max_tokens,
    )  # fmt: skip


def test_a_request_is_cut_by_items_and_by_tokens_in_input_order():
    texts = [f"text {i} " + "word " * (i % 5) for i in range(50)]
    request = pb.ClassifyRequest(inputs=[pb.ModelInput(text=t) for t in texts])
    split = Split("inputs", concatenated, token_bound(request))

    by_items = plan(request, split, limits(max_items=8))
    assert [start for start, _ in by_items] == list(range(0, 50, 8))
    assert [t.text for _, part in by_items for t in part.inputs] == texts

    bound = token_bound(request)
    by_tokens = plan(request, split, limits(max_items=100, max_tokens=60))
    assert len(by_tokens) > 1
    for _, part in by_tokens:
        assert sum(bound(item, limits(100)) for item in part.inputs) <= 60
    assert [t.text for _, part in by_tokens for t in part.inputs] == texts
    # A request within the limits goes as it is.
    assert plan(request, split, limits(max_items=50)) == [(0, request)]


def test_truncation_and_windows_bound_an_items_tokens():
    long = "word " * 1000
    cut = pb.TokenizeOptions(truncation=True)
    truncated = pb.ClassifyRequest(inputs=[pb.ModelInput(text=long)], options=cut)
    assert token_bound(truncated)(truncated.inputs[0], limits(8, max_length=128)) == 128
    whole = pb.ClassifyRequest(inputs=[pb.ModelInput(text=long)], options=cut, stride=32)
    # 5004 bytes at most, by windows of 128 advancing by 128 - 32 - 4 = 92 tokens: 54 windows.
    assert token_bound(whole)(whole.inputs[0], limits(8, max_length=128)) == 54 * 128


def test_tokenize_parts_padded_alike_are_cut_back_to_the_longest():
    request = pb.TokenizeRequest(
        inputs=[pb.TextInput(text=t) for t in "abc"],
        padding=pb.PADDING_LONGEST,
        return_attention_mask=False,
    )
    split = tokenize_split(request)
    (_, part), *_ = plan(request, split, limits(max_items=2, max_length=6))
    assert (part.padding, part.options.max_length, part.return_attention_mask) == (
        pb.PADDING_MAX_LENGTH, 6, True,
    )  # fmt: skip
    left = [
        Encoding([0, 0, 0, 101, 7, 102], [0, 0, 0, 1, 1, 1]),
        Encoding([0, 101, 7, 8, 9, 102], [0, 1, 1, 1, 1, 1]),
        Encoding([0, 0, 101, 7, 8, 102], [0, 0, 1, 1, 1, 1]),
    ]
    joined = split.join([(0, left[:2]), (2, left[2:])])
    assert [e.input_ids for e in joined] == [
        [0, 0, 101, 7, 102],
        [101, 7, 8, 9, 102],
        [0, 101, 7, 8, 102],
    ]
    assert [e.attention_mask for e in joined] == [[], [], []]  # not asked for


def test_forward_parts_pad_per_token_outputs_to_the_longest_item():
    def output(lengths: list[int]) -> ForwardOutput:
        width = max(lengths)
        hidden = np.ones((len(lengths), width, 3), np.float32)
        return ForwardOutput(
            [("last_hidden_state", hidden), ("logits", np.ones((len(lengths), width), np.float32))],
            np.array(lengths),
        )

    split = Split("inputs", forward_outputs)
    joined = split.join([(0, output([2, 4])), (2, output([3]))])
    assert joined.last_hidden_state.shape == (3, 4, 3)
    assert joined.last_hidden_state[2, 3].tolist() == [0, 0, 0]  # padded with zeros
    assert joined.logits.shape == (3, 4)  # 2-D, yet per token: its widths differed
    assert joined.sequence_lengths.tolist() == [2, 4, 3]


def test_rerank_parts_make_one_ranking():
    parts = [
        (0, [RankedDocument(1, 0.9), RankedDocument(0, 0.2)]),
        (2, [RankedDocument(0, 0.9), RankedDocument(1, 0.5)]),
    ]
    assert [(d.index, d.score) for d in best_of_parts(parts, top_n=3)] == [
        (1, 0.9), (2, 0.9), (3, 0.5),
    ]  # fmt: skip
