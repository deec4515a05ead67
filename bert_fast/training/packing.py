"""What a pretraining phase trains on: unpacked micro-batches of examples, or packed rows (data/packing.py).

With `data.packing` = "online" or "offline", a step is a token budget, not a count of examples: batch_tokens
token slots (train.batch_tokens, phase2.batch_tokens; 0: batch_size x seq_len), rows of seq_len tokens filled
with whole examples, so the real tokens per step are nearly fixed and the number of examples varies. The step's
micro-batches are still batch_size / micro_batch_size per step (and ranks), each taking an equal share of the
rows; held-out evaluation stays unpacked, with micro_batch_size examples per batch, so packed and unpacked runs
are evaluated on the same batches with the same masks.
"""

from __future__ import annotations

import logging

from ..data.loader import PretrainingBatches
from ..data.masking import MaskingSettings
from ..data.packing import PackedPretrainingBatches, packing_report
from ..errors import ConfigFileError
from .config import PretrainConfig

logger = logging.getLogger("bert_fast")


def check_packing(config: PretrainConfig) -> None:
    """The packing settings alone, before anything is built (the world size is checked per phase)."""
    data, t, p2 = config.data, config.train, config.phase2
    if data.packing != "none" and t.objective != "mlm_nsp":
        raise ConfigFileError(f"data.packing={data.packing!r} packs BERT's MLM + NSP examples; "
                              f"train.objective={t.objective!r} runs unpacked (data.packing = \"none\")")
    if data.max_examples_per_row < 1:
        raise ConfigFileError(f"data.max_examples_per_row must be positive, got {data.max_examples_per_row}")
    budgets = (("train.batch_tokens", t.batch_tokens, data.seq_len), ("phase2.batch_tokens", p2.batch_tokens,
                                                                       p2.seq_len))
    for name, tokens, seq_len in budgets:
        if tokens < 0:
            raise ConfigFileError(f"{name} must be positive (or 0), got {tokens}")
        if tokens and data.packing == "none":
            raise ConfigFileError(f"{name} sets a token budget, which packed rows fill: set data.packing to "
                                  "'online' or 'offline'")
        if tokens % seq_len:
            raise ConfigFileError(f"{name}={tokens} is not a whole number of rows of seq_len {seq_len}")


def phase_batch_tokens(config: PretrainConfig, phase) -> int:
    tokens = config.train.batch_tokens if phase.index == 0 else config.phase2.batch_tokens
    return tokens or phase.batch_size * phase.seq_len


def rows_per_micro_batch(batch_tokens: int, seq_len: int, accumulation: int, world_size: int) -> int:
    rows, rest = divmod(batch_tokens, seq_len * accumulation * world_size)
    if rest or rows < 1:
        raise ConfigFileError(
            f"batch_tokens={batch_tokens} does not split into whole rows of {seq_len} over {accumulation} "
            f"micro-batch(es) x {world_size} rank(s): make it a multiple of {seq_len * accumulation * world_size}")
    return rows


def training_batches(config: PretrainConfig, phase, masking: MaskingSettings, special_ids: dict[str, int],
                     vocab_size: int, world_size: int, log: bool = False):
    """The dataset of a phase's training micro-batches (dataset[j] is micro-batch j, as the loader expects)."""
    data, seed = config.data, config.train.seed
    if data.packing == "none":
        return PretrainingBatches(phase.store, "train", phase.micro_batch_size, seed, masking, special_ids,
                                  vocab_size)
    rows = rows_per_micro_batch(phase_batch_tokens(config, phase), phase.seq_len, phase.accumulation, world_size)
    dataset = PackedPretrainingBatches(phase.store, rows, seed, masking, special_ids, vocab_size,
                                       packing=data.packing, max_per_row=data.max_examples_per_row)
    if log:
        report = packing_report(dataset)
        logger.info("bert_fast: phase %d (seq len %d), %d rows per micro-batch: %s", phase.index + 1, phase.seq_len,
                    rows, report.line(data.packing))
    return dataset
