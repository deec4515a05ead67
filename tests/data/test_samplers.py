import numpy as np
import pytest

from bert_fast.data.samplers import bucket_widths, token_budget_batches
from bert_fast.data.store import DataError


def _check(batches, lengths, budget, rows=None, order=None):
    n = len(lengths)
    rows = np.ones(n, dtype=int) if rows is None else np.asarray(rows)
    widths = bucket_widths(lengths)
    assert sorted(i for b in batches for i in b) == list(range(n))  # every example once
    for b in batches:
        assert len({(widths[i], rows[i]) for i in b}) == 1  # one shape per batch
        assert len(b) * widths[b[0]] * rows[b[0]] <= budget  # within the token budget
    if order is not None:
        rank = {int(e): k for k, e in enumerate(order)}
        firsts = [rank[b[0]] for b in batches]
        assert firsts == sorted(firsts) and all([rank[i] for i in b] == sorted(rank[i] for i in b) for b in batches)


def test_batches_stay_within_the_budget_and_their_number_does_not_depend_on_the_order():
    rng = np.random.default_rng()
    lengths = rng.integers(3, 130, size=int(rng.integers(50, 300)))
    counts = set()
    for _ in range(3):
        order = rng.permutation(len(lengths))
        batches = token_budget_batches(lengths, 512, order)
        _check(batches, lengths, 512, order=order)
        counts.add(len(batches))
        full = [b for b in batches if len(b) == 512 // bucket_widths(lengths)[b[0]]]
        assert len(batches) - len(full) <= len(set(bucket_widths(lengths).tolist()))  # one short batch per width
    assert len(counts) == 1


def test_examples_of_several_rows_count_each_row():
    lengths, rows = [10, 12, 30, 7], [4, 4, 4, 1]
    batches = token_budget_batches(lengths, 128, rows=rows)
    _check(batches, lengths, 128, rows=rows)
    assert batches == [[0, 1], [2], [3]]  # 2 x 16 x 4 = 128 tokens; 32 x 4 alone; one row of 8


def test_an_example_over_the_budget_is_an_error():
    with pytest.raises(DataError, match="batch_tokens=64 is smaller than one example: example 1 takes 72 tokens"):
        token_budget_batches([10, 70, 5], 64)
