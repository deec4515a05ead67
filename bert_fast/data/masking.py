"""Masked-LM targets drawn at batch time (dynamic masking: every epoch sees fresh masks).

Of the real tokens of each sequence ([CLS], [SEP] and padding are never chosen), round(15%) are chosen
(at least one). Each chosen token becomes [MASK] with probability 0.8, a random token with 0.1 (uniform over
the vocabulary without special tokens), and stays itself with 0.1. Labels hold the original id at chosen
positions and -100 elsewhere.

Whole-word masking chooses words instead of pieces: words are taken in random order while the count of their
pieces stays within the budget (the first word is always taken), so all pieces of a word are masked together
and the count is at most the budget, except when a single word is longer than it.

Everything is drawn from the generator passed in, so a batch's masks depend only on its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskingSettings:
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8  # of chosen tokens: replaced by [MASK]
    random_fraction: float = 0.1  # of chosen tokens: replaced by a random token (the rest stay)
    whole_word: bool = False

    def validate(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_fraction < 0 or self.random_fraction < 0 or self.mask_fraction + self.random_fraction > 1:
            raise ValueError("mask_fraction and random_fraction must be non-negative and sum to at most 1")


def _rank_within_rows(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank): order sorts each row ascending; rank[i, j] is the position of j in that order."""
    order = scores.argsort(dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return order, rank


def choose_positions(special: torch.Tensor, word_start: torch.Tensor | None, settings: MaskingSettings,
                     generator: torch.Generator) -> torch.Tensor:
    """(batch, seq) bool: the positions to predict. `special` marks [CLS]/[SEP]/[PAD]."""
    real = ~special
    n_real = real.sum(dim=1)
    budget = torch.where(n_real > 0, (n_real.double() * settings.mlm_probability).round().long().clamp(min=1), 0)
    batch, seq = special.shape
    if not settings.whole_word or word_start is None:
        scores = torch.rand(batch, seq, generator=generator, dtype=torch.float64)
        scores[special] = float("inf")
        _, rank = _rank_within_rows(scores)
        return (rank < budget[:, None]) & real
    # Whole words: group g of a row is the g-th run starting at a word start (specials are groups of their own).
    group = (word_start | special).long().cumsum(dim=1) - 1  # (batch, seq) group index per token
    sizes = torch.zeros(batch, seq, dtype=torch.long).scatter_add_(1, group, real.long())  # real tokens per group
    scores = torch.rand(batch, seq, generator=generator, dtype=torch.float64)
    scores[sizes == 0] = float("inf")
    order, _ = _rank_within_rows(scores)
    sorted_sizes = sizes.gather(1, order)
    taken_sorted = (sorted_sizes.cumsum(dim=1) <= budget[:, None]) & (sorted_sizes > 0)
    taken_sorted[:, 0] |= sorted_sizes[:, 0] > 0  # always at least one word
    taken = torch.zeros_like(taken_sorted).scatter_(1, order, taken_sorted)
    return taken.gather(1, group) & real


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, word_start: torch.Tensor | None,
                replacement_ids: torch.Tensor, mask_id: int, settings: MaskingSettings,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input_ids, labels). replacement_ids: the ids a random replacement is drawn from."""
    chosen = choose_positions(special, word_start, settings, generator)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    u = torch.rand(input_ids.shape, generator=generator, dtype=torch.float64)
    to_mask = chosen & (u < settings.mask_fraction)
    to_random = chosen & (u >= settings.mask_fraction) & (u < settings.mask_fraction + settings.random_fraction)
    random_ids = replacement_ids[torch.randint(len(replacement_ids), input_ids.shape, generator=generator)]
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids, out)
    return out, labels
