"""Token-budget batches for fine-tuning: examples grouped by length, so each batch's padded tokens fit a budget.

Each example is rounded up to a width bucket (a multiple of `bucket` tokens; an example of several rows, a
multiple-choice question, counts its rows). A batch holds examples of one width only, as many as the budget
allows: floor(batch_tokens / (width x rows)). So every batch of a width has one shape (at most that many
examples, padded to at most that width), and a step of each shape can be captured once.

The epoch's shuffle (`order`) decides which examples share a batch and the order of the batches (by their first
example in it), never how many batches there are: that depends on the count of each width alone, so the steps of
a run are known before it starts, and a resumed epoch that draws the same order gets the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def bucket_widths(lengths, bucket: int = 8) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    return -(-lengths // bucket) * bucket


def token_budget_batches(lengths: Sequence[int], batch_tokens: int, order: Sequence[int] | None = None,
                         rows: Sequence[int] | None = None, bucket: int = 8) -> list[list[int]]:
    """Batches of example indices whose padded tokens (count x width x rows) stay within batch_tokens."""
    widths = bucket_widths(lengths, bucket)
    n = len(widths)
    rows = np.ones(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(n)):
        raise DataError(f"order must hold each of the {n} examples once")
    cost = widths * rows
    if n and int(cost.max()) > batch_tokens:
        i = int(np.argmax(cost))
        raise DataError(f"batch_tokens={batch_tokens} is smaller than one example: example {i} takes "
                        f"{int(cost[i])} tokens ({int(rows[i])} row(s) of {int(widths[i])})")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    batches = []
    for key in np.unique(cost):  # examples of one width (and row count) together, in the epoch's order
        members = order[cost[order] == key]
        size = batch_tokens // int(key)
        batches += [members[k:k + size].tolist() for k in range(0, len(members), size)]
    batches.sort(key=lambda b: rank[b[0]])
    return batches

