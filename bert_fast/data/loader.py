"""Batches for pretraining: micro-batches read from the memory-mapped store, masked at batch time.

The run's data is one endless stream of micro-batches: micro-batch j takes rows [k*m, (k+1)*m) of epoch e's
permutation (e = j // per_epoch, k = j % per_epoch, m = micro-batch size; a seeded permutation per epoch, the
remainder of an epoch dropped), and its masks are drawn from a generator seeded with (seed, j). A batch is
therefore a function of its index alone, the same with any number of workers, and resuming at an optimizer step
only needs the step number. Optimizer step s consumes micro-batches s*W*A ... (s+1)*W*A - 1 (W ranks, A
accumulation steps): rank r takes a*W + r for a = 0..A-1, so each rank reads its own part of the data, and one
process with W*A accumulation steps sees exactly the batches of W processes with A.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .masking import MaskingSettings, mask_tokens
from .store import ExampleStore

_EVAL_STREAM = 1  # masks of the held-out split come from their own seed stream, the same at every evaluation


class PretrainingBatches(Dataset):
    """dataset[j] is micro-batch j: a dict of (batch, seq) tensors ready for BertForPreTraining."""

    def __init__(self, store_folder, split: str, micro_batch_size: int, seed: int, masking: MaskingSettings,
                 special_ids: dict[str, int], vocab_size: int, shuffle: bool = True, pad_to_multiple_of: int = 8):
        masking.validate()
        self.store_folder = store_folder
        self.split = split
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.masking = masking
        self.shuffle = shuffle
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_id = special_ids["mask"]
        self.pad_id = special_ids["pad"]
        specials = set(special_ids.values())
        self.replacement_ids = torch.tensor([i for i in range(vocab_size) if i not in specials], dtype=torch.long)
        self._store: ExampleStore | None = None
        self._perm: tuple[int, np.ndarray] | None = None
        n = len(self.store)
        if micro_batch_size < 1:
            raise DataError(f"micro_batch_size must be positive, got {micro_batch_size}")
        if shuffle and n < micro_batch_size:
            raise DataError(
                f"the {split} split holds {n} examples, fewer than one micro-batch of {micro_batch_size}: give more "
                "text, or lower the batch size"
            )
        self.per_epoch = n // micro_batch_size if shuffle else -(-n // micro_batch_size)

    @property
    def store(self) -> ExampleStore:
        if self._store is None:  # opened lazily: each DataLoader worker maps the files itself
            self._store = ExampleStore(self.store_folder, self.split)
        return self._store

    def __getstate__(self):
        return {**self.__dict__, "_store": None, "_perm": None}

    def __len__(self) -> int:
        return self.per_epoch  # one epoch; any index >= 0 is valid when shuffling (later epochs)

    def rows_of(self, j: int) -> np.ndarray:
        m = self.micro_batch_size
        if not self.shuffle:
            return np.arange(j * m, min((j + 1) * m, len(self.store)))
        epoch, k = divmod(j, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.store)))
        return self._perm[1][k * m:(k + 1) * m]

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        if j < 0 or (not self.shuffle and j >= self.per_epoch):
            raise IndexError(j)
        ids, meta, words = self.store.rows(self.rows_of(j))
        return collate(ids, meta, words, self, self.generator_of(j))

    def generator_of(self, j: int) -> torch.Generator:
        """The generator micro-batch j draws its masks from: seeded by (seed, split's stream, j) alone."""
        stream = _EVAL_STREAM if not self.shuffle else 0
        seed = int(np.random.SeedSequence([self.seed, stream, j]).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)


def collate(ids: np.ndarray, meta: np.ndarray, words: np.ndarray, ds: PretrainingBatches,
            generator: torch.Generator) -> dict[str, torch.Tensor]:
    lengths, len_a, is_random = meta[:, 0], meta[:, 1], meta[:, 2]
    width = int(lengths.max())
    width = min(ids.shape[1], -(-width // ds.pad_to_multiple_of) * ds.pad_to_multiple_of)
    input_ids = torch.from_numpy(ids[:, :width])
    positions = torch.arange(width)
    lengths_t, len_a_t = torch.from_numpy(lengths), torch.from_numpy(len_a)
    real = positions[None, :] < lengths_t[:, None]
    sep_a = len_a_t + 1
    special = (~real) | (positions[None, :] == 0) | (positions[None, :] == sep_a[:, None]) | \
        (positions[None, :] == (lengths_t - 1)[:, None])
    token_type_ids = ((positions[None, :] > sep_a[:, None]) & real).long()
    word_start = torch.from_numpy(words[:, :width])
    masked, labels = mask_tokens(input_ids, special, word_start, ds.replacement_ids, ds.mask_id, ds.masking,
                                 generator)
    return {
        "input_ids": masked,
        "attention_mask": real.long(),
        "token_type_ids": token_type_ids,
        "labels": labels,
        "next_sentence_label": torch.from_numpy(is_random).long(),
    }


def micro_batch_indices(start_step: int, end_step: int, accumulation: int, world_size: int, rank: int) -> list[int]:
    """The micro-batches rank `rank` consumes for optimizer steps [start_step, end_step), in order."""
    per_step = accumulation * world_size
    return [s * per_step + a * world_size + rank for s in range(start_step, end_step) for a in range(accumulation)]


def make_loader(dataset: PretrainingBatches, indices: Sequence[int], num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Batches `dataset[j]` for j in indices, prepared by `num_workers` worker processes."""
    return DataLoader(
        dataset, batch_size=None, sampler=list(indices), num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None, persistent_workers=False,
        # Its own generator: a loader must not draw from the global RNG, which exact resume restores.
        generator=torch.Generator(),
    )
