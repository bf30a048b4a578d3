"""The batch picker: token budget, size limit, length grouping, and no starvation."""

from pipeserve.server.queue import pick_batch


def test_oldest_entry_always_goes():
    lengths = [300, 10, 11, 12, 13]
    assert 0 in pick_batch(lengths, max_tokens=400, max_size=8)


def test_padded_cost_stays_within_token_budget():
    lengths = [20, 40, 25, 60, 22, 21, 80, 23]
    chosen = pick_batch(lengths, max_tokens=100, max_size=32)
    assert max(lengths[i] for i in chosen) * len(chosen) <= 100
    assert len(chosen) == 4  # 4 x 25 fits; a fifth would cost 5 x 25 = 125


def test_size_limit():
    assert len(pick_batch([10] * 100, max_tokens=10_000, max_size=32)) == 32


def test_similar_lengths_batch_together():
    lengths = [50, 5, 48, 6, 52, 7, 49, 4]
    chosen = sorted(pick_batch(lengths, max_tokens=10_000, max_size=4))
    assert chosen == [0, 2, 4, 6]


def test_a_sequence_over_the_budget_still_goes_alone():
    assert pick_batch([600, 600], max_tokens=512, max_size=32) == [0]


def test_empty_queue():
    assert pick_batch([], max_tokens=512, max_size=32) == []
