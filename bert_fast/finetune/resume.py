"""Fine-tuning checkpoints: a run stopped anywhere (killed, preempted) continues with --resume to the numbers the
uninterrupted run gives.

A checkpoint is a folder checkpoints/step-N/ written atomically by the pretraining trainer's CheckpointManager (the
last few kept): model/ (a Hugging Face folder, loadable on its own) and state.pt with the optimizer, learning-rate
schedule, loss scaler, every rank's random generators (dropout), and the position in the data. The data position
is the epoch, the steps of it already taken, and the shuffling generator as it stood when that epoch drew its
order, so the resumed epoch draws the same order and skips what was done.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..checkpoint import load_state_into, read_state_dict
from ..errors import ResumeError
from ..training import distributed as D
from ..training.checkpointing import CheckpointManager
from ..training.rng import rng_state
from ..training.runs import STATE_FILE, restore_rng, state_file

logger = logging.getLogger("bert_fast")

# Settings that decide what each step computes: a checkpoint continues only a run that shares them.
# The total steps (epochs, max_steps) may change: the schedule then decays over the new total from the checkpoint on.
RUN_KEYS = ("task", "train", "lr", "batch_size", "batch_tokens", "warmup", "weight_decay", "max_grad_norm",
            "max_length", "seed", "doc_stride", "max_query_length", "text_columns", "label_column", "labels",
            "regression")


@dataclass
class Position:
    """Where a run stands between two steps, beyond the weights and the optimizer."""

    epoch: int = 1  # the epoch in progress (1-based)
    step_in_epoch: int = 0  # its steps already taken
    steps_done: int = 0  # over the whole run
    epoch_shuffle_state: torch.Tensor | None = None  # the shuffling generator before this epoch drew its order
    loss_sum: float = 0.0  # this epoch's step losses so far, all ranks
    tokens: int = 0  # this epoch's real training tokens so far, all ranks
    history: list[dict] = field(default_factory=list)  # the finished epochs' records
    best: dict | None = None  # the best finished epoch's record

    def next_epoch(self) -> None:
        """An epoch ended: the next one starts with no steps, sums or drawn order of its own."""
        self.epoch_shuffle_state, self.step_in_epoch, self.loss_sum, self.tokens = None, 0, 0.0, 0


def save(manager: CheckpointManager, position: Position, model, tokenizer, optimizer, schedule, precision,
         config: dict, env: D.DistEnv) -> None:
    """Write checkpoint step-<steps_done> (collective: every rank calls it; rank 0 writes)."""
    rngs = D.gather_objects(rng_state(), env)
    if env.is_main:

        def write(folder: Path) -> None:
            model.save_pretrained(folder / "model")
            tokenizer.save_pretrained(folder / "model")
            torch.save({"format": 1, "position": asdict(position), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "precision": precision.state_dict(), "rng": rngs,
                        "config": config}, folder / STATE_FILE)

        path = manager.save(position.steps_done, write)
        logger.info("bert_fast: checkpoint %s", path)
    D.barrier(env)


def restore(path: Path, model, optimizer, schedule, precision, config: dict, env: D.DistEnv) -> Position:
    """Load checkpoint `path` into the run's objects; returns where the run stood."""
    state = torch.load(state_file(path), map_location="cpu", weights_only=False)
    changed = [f"{k}: {state['config'].get(k)!r} -> {config.get(k)!r}" for k in RUN_KEYS
               if state["config"].get(k) != config.get(k)]
    if changed:
        raise ResumeError(f"cannot resume from {path}: settings that decide each step changed ({'; '.join(changed)})"
                          "; use the original settings, or start a new run with another --out")
    saved_micro, micro = state["config"]["micro_batch"], config["micro_batch"]
    if saved_micro != micro:  # the steps' micro-batches would hold other examples (another number of processes)
        raise ResumeError(f"cannot resume from {path}: its micro-batches held {saved_micro} examples, this run's "
                          f"hold {micro}; pass --micro-batch-size {saved_micro} to continue on this number of "
                          "processes")
    load_state_into(model, read_state_dict(path / "model"))
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    precision.load_state_dict(state["precision"])
    restore_rng(state["rng"], env)
    return Position(**state["position"])  # its partial sums are all ranks' together
