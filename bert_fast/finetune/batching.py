"""Fine-tuning steps drawn by length (`--batch-tokens`): each step a token-budget batch (data/samplers.py).

A step's batch is cut into the run's micro-batches (ranks x accumulation) as a batch of batch_size examples is; a
batch with fewer examples than micro-batches (the last, short one of a width) is left out, as the epoch's short
last batch is without a token budget.
"""

from __future__ import annotations

from ..data.samplers import token_budget_batches
from .tasks import sequence_length


def rows_of(feature: dict) -> int:
    ids = feature["input_ids"]
    return len(ids) if ids and isinstance(ids[0], list) else 1  # multiple choice: one row per choice


def token_steps(features: list[dict], order, batch_tokens: int, pieces: int) -> list[list[int]]:
    """Each step's feature indices for an epoch whose shuffle is `order`. Their number does not depend on it."""
    lengths = [sequence_length(f) for f in features]
    batches = token_budget_batches(lengths, batch_tokens, order, rows=[rows_of(f) for f in features])
    return [batch for batch in batches if len(batch) >= pieces]
