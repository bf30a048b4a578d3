"""The batch picker (token budget, size limit, length grouping, no starvation) and the cost
model that tells it when splitting by length beats padding."""

import pytest

from pipeserve.server.engine.cost import BatchCost
from pipeserve.server.engine.queue import pick_batch

CPU_LIKE = 64.0  # fixed cost of a batch, in padded tokens


def test_oldest_entry_always_goes():
    lengths = [300, 10, 11, 12, 13]
    assert 0 in pick_batch(lengths, max_tokens=400, max_size=8, overhead_tokens=CPU_LIKE)


def test_padded_cost_stays_within_token_budget():
    lengths = [20, 40, 25, 60, 22, 21, 80, 23]
    chosen = pick_batch(lengths, max_tokens=100, max_size=32, overhead_tokens=CPU_LIKE)
    assert max(lengths[i] for i in chosen) * len(chosen) <= 100
    # 20, 21, 22, 23 cost 4 x 23 = 92; adding 25 would cost 5 x 25 = 125.
    assert sorted(chosen) == [0, 4, 5, 7]


def test_size_limit():
    assert len(pick_batch([10] * 100, max_tokens=10_000, max_size=32)) == 32


def test_similar_lengths_batch_together():
    lengths = [50, 5, 48, 6, 52, 7, 49, 4]
    chosen = sorted(pick_batch(lengths, max_tokens=10_000, max_size=4, overhead_tokens=CPU_LIKE))
    assert chosen == [0, 2, 4, 6]


@pytest.mark.parametrize(("overhead", "expected"), [(16.0, 16), (4096.0, 32)])
def test_split_by_length_only_when_padding_costs_more_than_a_batch(overhead, expected):
    lengths = [10] * 16 + [100] * 16
    chosen = pick_batch(lengths, max_tokens=10_000, max_size=32, overhead_tokens=overhead)
    assert len(chosen) == expected


def test_a_sequence_over_the_budget_still_goes_alone():
    assert pick_batch([600, 600], max_tokens=512, max_size=32) == [0]


def test_empty_queue():
    assert pick_batch([], max_tokens=512, max_size=32) == []


def test_cost_model_learns_the_fixed_cost_of_a_batch():
    cost = BatchCost()
    assert cost.overhead_tokens == CPU_LIKE  # the prior, before any batch
    for tokens in (100, 200, 400, 800, 1600) * 4:
        cost.observe(tokens, forward_ms=20 + 0.25 * tokens)
    assert cost.overhead_tokens == pytest.approx(80, rel=1e-6)


def test_cost_model_keeps_its_prior_until_batch_sizes_vary():
    cost = BatchCost()
    for _ in range(20):
        cost.observe(256, forward_ms=30)
    assert cost.overhead_tokens == CPU_LIKE
