"""Packed pretraining batches: several whole examples in each row, so a step's token budget holds real tokens.

A packed micro-batch has `rows` rows of `row_len` tokens (row_len: the store's sequence length). Each row holds
whole examples back to back, at most `max_per_row` of them, then padding. Each example keeps what it had alone:
positions from 0, its token types, its NSP label at its own [CLS], and its masks, drawn per example exactly as
for an unpacked batch of the same examples (`loader.collate`). Attention stays within each example: the batch's
cu_seqlens mark every example, and every row's padding tail, as a sequence of its own.

Two packers:
- online (`pack_online`): the epoch's shuffled examples, in order, go best-fit into the rows of the current
  micro-batch (the row with the least room that still fits). An example that fits nowhere waits for the next
  micro-batch, which takes the waiting ones first; a micro-batch closes when no row has room left or when
  `lookahead` examples did not fit. ModernBERT packs online in this manner.
- offline (`pack_histogram`): once per store, from the histogram of example lengths: longest first, each length
  into the open row with the least room that fits it (best-fit decreasing over counts, Krell et al. 2021's
  shortest-pack-first histogram packing; MLPerf's BERT packs offline with at most 3 examples per row). The rows
  are fixed (`ensure_packs` keeps them in the store folder); each epoch shuffles the rows.

Batches are a function of their index, as unpacked ones are (loader.py), so exact resume needs only the step.
Online packing makes the number of micro-batches of an epoch depend on its shuffle: finding micro-batch j packs
the epochs before it once (a pass over the example lengths each, kept as counts). An epoch's last online
micro-batch, which holds whatever is left, is dropped, as an unpacked epoch drops its remainder; offline, the rows
beyond a whole number of micro-batches are.

Static shapes, the same for every micro-batch of a phase (`PackedBudgets`), so a step can be captured once:
  input_ids, attention_mask, token_type_ids, position_ids   (rows, row_len)
  cu_seqlens            (rows * (max_per_row + 1) + 1,) int32 over the flattened rows; entries past the last
                        sequence repeat the end (empty sequences)
  cls_positions         (rows * max_per_row,) flat index of each example's [CLS]; 0 where there is no example
  next_sentence_label   (rows * max_per_row,) -100 where there is no example
  mlm_positions         (masked budget,) flat index of each masked token, in order; 0 past the last
  mlm_labels            (masked budget,) the original ids; -100 past the last
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write, atomic_write_text
from .loader import PretrainingBatches, collate
from .masking import MaskingSettings
from .store import ExampleStore

PACKING_MODES = ("none", "online", "offline")
MAX_PER_ROW = 3  # MLPerf's choice: more examples per row gain little once rows are nearly full
# Whole-word masking may take one word longer than an example's 15% (masking.py): room for that, per example.
WHOLE_WORD_SLACK = 8


@dataclass(frozen=True)
class PackedBudgets:
    """The fixed sizes of a packed micro-batch."""

    rows: int
    row_len: int
    max_per_row: int
    masked: int  # masked positions

    @property
    def tokens(self) -> int:
        return self.rows * self.row_len

    @property
    def examples(self) -> int:
        return self.rows * self.max_per_row

    @property
    def sequences(self) -> int:  # examples and one padding tail per row
        return self.rows * (self.max_per_row + 1)


def masked_budget(rows: int, row_len: int, max_per_row: int, masking: MaskingSettings) -> int:
    """An upper bound of the masked positions of `rows` packed rows. An example of n maskable tokens has
    max(1, round(p n)) masked ones, at most p n + 1; whole-word masking may exceed that by a word (its slack)."""
    per_example = 1 + (WHOLE_WORD_SLACK if masking.whole_word else 0)
    return rows * (math.ceil(masking.mlm_probability * row_len) + max_per_row * per_example)


def check_fits(lengths: np.ndarray, row_len: int) -> None:
    if len(lengths) and int(lengths.max()) > row_len:
        i = int(np.argmax(lengths))
        raise DataError(f"example {i} has {int(lengths[i])} tokens, more than a row of {row_len}: packing keeps "
                        "examples whole and never truncates them")
    if len(lengths) and int(lengths.min()) < 1:
        raise DataError(f"example {int(np.argmin(lengths))} has no tokens")


# --- the packers -----------------------------------------------------------------------------------------


class _MicroBatch:
    """The rows of one micro-batch while it fills: their slots, and the rows that take more by room left."""

    def __init__(self, rows: int, row_len: int, max_per_row: int, shortest: int):
        self.slots = np.full((rows, max_per_row), -1, dtype=np.int64)
        self.counts = [0] * rows
        self.room = [(row_len, r) for r in range(rows)]  # sorted
        self.max_per_row, self.shortest = max_per_row, shortest

    def place(self, example: int, length: int) -> bool:
        """Put the example into the row with the least room that still fits it; False when none does."""
        at = bisect.bisect_left(self.room, (length, -1))
        if at == len(self.room):
            return False
        free, r = self.room.pop(at)
        self.slots[r, self.counts[r]] = example
        self.counts[r] += 1
        if self.counts[r] < self.max_per_row and free - length >= self.shortest:
            bisect.insort(self.room, (free - length, r))
        return True


def pack_online(lengths, row_len: int, rows: int, max_per_row: int = MAX_PER_ROW,
                lookahead: int | None = None) -> np.ndarray:
    """Micro-batches of `rows` rows from a stream of examples, best fit: (batches, rows, max_per_row) int64
    positions into `lengths` (the stream, in order), -1 for an empty slot. Every example appears exactly once;
    no row holds more than row_len tokens. lookahead: misses before a micro-batch closes (default 2 * rows)."""
    lens = np.asarray(lengths, dtype=np.int64)
    check_fits(lens, row_len)
    if rows < 1 or max_per_row < 1:
        raise DataError(f"packing needs at least one row and one example per row, got {rows} and {max_per_row}")
    lookahead = lookahead or 2 * rows
    shortest = int(lens.min()) if len(lens) else 1
    stream = lens.tolist()
    batches, pending, following = [], [], 0
    while pending or following < len(stream):
        batch = _MicroBatch(rows, row_len, max_per_row, shortest)
        waiting = []
        for i in pending:  # the waiting examples go first: none waits longer than it must
            if not batch.place(i, stream[i]):
                waiting.append(i)
        misses = len(waiting)
        while following < len(stream) and batch.room and misses < lookahead:
            if not batch.place(following, stream[following]):
                waiting.append(following)
                misses += 1
            following += 1
        pending = waiting
        batches.append(batch.slots)
    return np.stack(batches) if batches else np.zeros((0, rows, max_per_row), dtype=np.int64)


def pack_histogram(lengths, row_len: int, max_per_row: int = MAX_PER_ROW, seed: int = 0) -> np.ndarray:
    """Rows of whole examples, (rows, max_per_row) int64 indices into `lengths`, -1 for an empty slot; every
    example exactly once. Best-fit decreasing over the length histogram: packs are handled as counts of
    identical length tuples, so the cost grows with row_len and the distinct packs, not the examples."""
    lens = np.asarray(lengths, dtype=np.int64)
    check_fits(lens, row_len)
    if not len(lens):
        return np.zeros((0, max_per_row), dtype=np.int64)
    shortest = int(lens.min())
    histogram = np.bincount(lens, minlength=row_len + 1)
    open_packs: dict[int, list[list]] = defaultdict(list)  # room left -> [count, lengths] of packs open for more
    rooms: list[int] = []  # the keys of open_packs, sorted
    done: list[tuple[int, tuple[int, ...]]] = []

    def add(count: int, pack: tuple[int, ...]) -> None:
        room = row_len - sum(pack)
        if len(pack) == max_per_row or room < shortest:
            done.append((count, pack))
            return
        if room not in open_packs:
            bisect.insort(rooms, room)
        open_packs[room].append([count, pack])

    for length in range(row_len, 0, -1):
        n = int(histogram[length])
        while n:
            at = bisect.bisect_left(rooms, length)
            if at == len(rooms):
                add(n, (length,))
                break
            room = rooms[at]
            entry = open_packs[room][-1]
            taken = min(entry[0], n)
            entry[0] -= taken
            n -= taken
            if entry[0] == 0:
                open_packs[room].pop()
                if not open_packs[room]:
                    del open_packs[room]
                    rooms.pop(at)
            add(taken, entry[1] + (length,))
    done += [(count, pack) for entries in open_packs.values() for count, pack in entries]

    # Give each pack actual examples: of each length, in a seeded random order, so rows mix documents.
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lens))
    pools = {int(k): list(v) for k, v in _group_by_length(lens[order], order).items()}
    packs = np.full((sum(c for c, _ in done), max_per_row), -1, dtype=np.int64)
    r = 0
    for count, pack in sorted(done, key=lambda e: e[1]):  # a fixed order, whatever the dict held
        for j, length in enumerate(pack):
            pool = pools[length]
            packs[r:r + count, j] = pool[-count:]
            del pool[-count:]
        r += count
    return packs[rng.permutation(len(packs))]


def _group_by_length(lengths: np.ndarray, indices: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    keys, starts = np.unique(lengths[order], return_index=True)
    return dict(zip(keys.tolist(), np.split(indices[order], starts[1:])))


# --- the packed batch ------------------------------------------------------------------------------------


def pack_examples(batch: dict[str, torch.Tensor], row_of: np.ndarray, budgets: PackedBudgets,
                  pad_id: int) -> dict[str, torch.Tensor]:
    """An unpacked, masked batch (examples, width) laid into packed rows: example i goes to row row_of[i], after
    the examples before it in that row (row_of must not decrease). Exactly these examples and these masks."""
    real = batch["attention_mask"].bool()  # (n, width)
    lengths = real.sum(dim=1)
    row_of = torch.as_tensor(np.asarray(row_of), dtype=torch.long)
    n, rows, row_len = len(lengths), budgets.rows, budgets.row_len
    misplaced = n and ((row_of.diff() < 0).any() or int(row_of.min()) < 0 or int(row_of.max()) >= rows)
    if len(row_of) != n or misplaced:
        raise DataError(f"packing: {n} examples need one row each in [0, {rows}), in non-decreasing order")
    per_row = torch.bincount(row_of, minlength=rows)
    if int(per_row.max()) > budgets.max_per_row:
        raise DataError(f"packing: a row holds {int(per_row.max())} examples, more than {budgets.max_per_row}")
    used = torch.zeros(rows, dtype=torch.long).index_add_(0, row_of, lengths)
    if int(used.max()) > row_len:
        raise DataError(f"packing: a row holds {int(used.max())} tokens, more than its {row_len}")
    before = lengths.cumsum(0) - lengths  # tokens of the examples before each one, over all rows
    row_start = used.cumsum(0) - used
    start = row_of * row_len + before - row_start[row_of]  # flat position of each example's first token

    example, position = real.nonzero(as_tuple=True)
    at = start[example] + position
    total = budgets.tokens

    def scatter(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((total,), fill, dtype=torch.long)
        out[at] = values.long()
        return out.view(rows, row_len)

    labels = scatter(batch["labels"][example, position], -100).flatten()
    masked = (labels != -100).nonzero().flatten()
    if len(masked) > budgets.masked:
        raise DataError(f"packing: {len(masked)} masked positions, more than the budget of {budgets.masked} (whole "
                        "words of more pieces than packing.WHOLE_WORD_SLACK in short examples)")
    mlm_positions = torch.zeros(budgets.masked, dtype=torch.long)
    mlm_labels = torch.full((budgets.masked,), -100, dtype=torch.long)
    mlm_positions[:len(masked)] = masked
    mlm_labels[:len(masked)] = labels[masked]

    cls_positions = torch.zeros(budgets.examples, dtype=torch.long)
    cls_positions[:n] = start
    nsp = torch.full((budgets.examples,), -100, dtype=torch.long)
    nsp[:n] = batch["next_sentence_label"]

    # Sequences in flat order: each row's examples, then its padding tail (if any) as a sequence of its own.
    starts = torch.cat([start, torch.arange(rows) * row_len + used])
    ends = torch.cat([start + lengths, torch.arange(1, rows + 1) * row_len])
    keep = ends > starts  # a full row has no tail
    lengths_in_order = (ends - starts)[keep][torch.argsort(starts[keep], stable=True)]
    cu_seqlens = torch.full((budgets.sequences + 1,), total, dtype=torch.int32)
    cu_seqlens[0] = 0
    cu_seqlens[1:len(lengths_in_order) + 1] = lengths_in_order.cumsum(0).to(torch.int32)
    return {
        "input_ids": scatter(batch["input_ids"][example, position], pad_id),
        "attention_mask": scatter(torch.ones_like(position), 0),
        "token_type_ids": scatter(batch["token_type_ids"][example, position], 0),
        "position_ids": scatter(position, 0),
        "cu_seqlens": cu_seqlens,
        "cls_positions": cls_positions,
        "next_sentence_label": nsp,
        "mlm_positions": mlm_positions,
        "mlm_labels": mlm_labels,
    }


# --- the datasets ----------------------------------------------------------------------------------------


def _packs_name(split: str, max_per_row: int) -> str:
    return f"{split}-packs-k{max_per_row}"


def ensure_packs(store: ExampleStore, max_per_row: int = MAX_PER_ROW) -> np.ndarray:
    """The store's offline packing into rows of its sequence length (store indices, -1 for empty slots): read
    from the store folder, or computed once and written there (atomically; concurrent writers write the same)."""
    name = _packs_name(store.split, max_per_row)
    path, marker = store.folder / f"{name}.npy", store.folder / f"{name}.json"
    if marker.is_file():
        try:
            packs = np.load(path, mmap_mode="r")
            if json.loads(marker.read_text()).get("rows") == len(packs):
                return packs
        except (OSError, ValueError):
            pass  # damaged: computed again below
    packs = pack_histogram(store.lengths(), store.max_seq_len, max_per_row, seed=store.settings.seed)
    atomic_write(path, lambda f: np.save(f, packs, allow_pickle=False))
    atomic_write_text(marker, json.dumps({"rows": len(packs), "max_per_row": max_per_row,
                                         "examples": int((packs >= 0).sum())}))
    return packs


class PackedPretrainingBatches(PretrainingBatches):
    """dataset[j] is packed micro-batch j of the training split: `rows` rows of the store's sequence length."""

    def __init__(self, store_folder, rows: int, seed: int, masking: MaskingSettings, special_ids: dict[str, int],
                 vocab_size: int, packing: str = "online", max_per_row: int = MAX_PER_ROW,
                 lookahead: int | None = None):
        if packing not in ("online", "offline"):
            raise DataError(f"packing must be 'online' or 'offline' for packed batches, got {packing!r}")
        if max_per_row < 1:
            raise DataError(f"max_examples_per_row must be positive, got {max_per_row}")
        super().__init__(store_folder, "train", rows, seed, masking, special_ids, vocab_size, shuffle=True)
        self.packing = packing
        self.max_per_row = max_per_row
        self.lookahead = lookahead
        self.budgets = PackedBudgets(rows, self.store.max_seq_len, max_per_row,
                                     masked_budget(rows, self.store.max_seq_len, max_per_row, masking))
        self._lengths: np.ndarray | None = None
        self._epoch_starts = [0]  # online: the first micro-batch of each epoch packed so far
        self._plan: tuple[int, np.ndarray] | None = None
        if packing == "offline":
            packs = ensure_packs(self.store, max_per_row)
            if len(packs) < rows:
                raise DataError(f"the training split packs into {len(packs)} rows, fewer than one micro-batch of "
                                f"{rows}: give more text, or lower the token budget")
            self.per_epoch = len(packs) // rows
        else:
            self.per_epoch = len(self.epoch_plan(0))

    def __getstate__(self):
        return {**super().__getstate__(), "_plan": None, "_lengths": None}

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = self.store.lengths()
        return self._lengths

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """(micro-batches, rows, max_per_row) store indices of the epoch's micro-batches; -1 for empty slots."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        if self.packing == "offline":
            packs = np.asarray(ensure_packs(self.store, self.max_per_row))
            order = np.random.default_rng([self.seed, epoch]).permutation(len(packs))
            plan = packs[order[:self.per_epoch * self.budgets.rows]].reshape(self.per_epoch, self.budgets.rows, -1)
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.store))
            slots = pack_online(self.lengths[order], self.budgets.row_len, self.budgets.rows, self.max_per_row,
                                self.lookahead)
            if len(slots) > 1:  # the last takes what is left, often little: dropped, as an unpacked epoch's rest is
                slots = slots[:-1]
            plan = np.where(slots >= 0, order[np.maximum(slots, 0)], -1)
        self._plan = (epoch, plan)
        return plan

    def slots_of(self, j: int) -> np.ndarray:
        """(rows, max_per_row) store indices of micro-batch j, -1 for empty slots."""
        if self.packing == "offline":
            epoch, k = divmod(j, self.per_epoch)
            return self.epoch_plan(epoch)[k]
        while self._epoch_starts[-1] <= j:  # pack the epochs up to j's, keeping only their sizes
            epoch = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + len(self.epoch_plan(epoch)))
        epoch = bisect.bisect_right(self._epoch_starts, j) - 1
        return self.epoch_plan(epoch)[j - self._epoch_starts[epoch]]

    def rows_of(self, j: int) -> np.ndarray:
        slots = self.slots_of(j)
        return slots[slots >= 0]

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        if j < 0:
            raise IndexError(j)
        slots = self.slots_of(j)
        filled = slots >= 0
        ids, meta, words = self.store.rows(slots[filled])
        unpacked = collate(ids, meta, words, self, self.generator_of(j))
        return pack_examples(unpacked, np.nonzero(filled)[0], self.budgets, self.pad_id)


# --- reports ---------------------------------------------------------------------------------------------


@dataclass
class PackingReport:
    row_len: int
    unpacked_padding: float  # of rows of row_len holding one example each
    packed_padding: float  # of the token budget of an epoch's packed micro-batches
    examples_per_row: float
    real_share: np.ndarray  # each micro-batch's real tokens over its budget

    def line(self, packing: str) -> str:
        share = self.real_share
        return (f"padding {self.unpacked_padding:.1%} of rows of {self.row_len} unpacked -> "
                f"{self.packed_padding:.1%} packed ({packing}, {self.examples_per_row:.2f} examples per row; real "
                f"tokens per step {share.min():.1%} min, {np.median(share):.1%} median)")


def packing_report(dataset: PackedPretrainingBatches, epoch: int = 0) -> PackingReport:
    """Padding before and after packing, over the split and over one epoch's micro-batches."""
    lengths, row_len = dataset.lengths, dataset.budgets.row_len
    plan = dataset.epoch_plan(epoch)
    tokens = np.where(plan >= 0, lengths[np.maximum(plan, 0)], 0).sum(axis=(1, 2))
    examples = int((plan >= 0).sum())
    return PackingReport(
        row_len=row_len,
        unpacked_padding=1.0 - float(lengths.sum()) / (len(lengths) * row_len),
        packed_padding=1.0 - float(tokens.sum()) / (len(plan) * dataset.budgets.tokens),
        examples_per_row=examples / (len(plan) * dataset.budgets.rows),
        real_share=tokens / dataset.budgets.tokens,
    )

