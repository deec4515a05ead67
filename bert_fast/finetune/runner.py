"""The fine-tuning run: read the splits, train with the paper's recipe, evaluate each epoch, keep the best.

Defaults (Devlin et al., 2019, appendix A.3): AdamW with weight decay 0.01 and eps 1e-6, learning rate 3e-5
(the paper searches 5e-5, 3e-5, 2e-5), batch 32, 3 epochs, linear warmup over the first 10% of the steps then
linear decay, gradient clipping at 1.0, dropout 0.1 (the checkpoint's), bf16 autocast on a GPU.

Output folder: best/ (the best epoch's model and tokenizer, a Hugging Face folder), predictions_<split>.* of the
best model, metrics.jsonl (one line per epoch, written as it goes) and metrics.json (the whole run).

Several processes: the same command under `torchrun --nproc_per_node N` trains with DDP. batch_size stays the
examples per optimizer step over all ranks; each step's batch is cut into micro-batches of micro_batch_size (by
default batch_size / ranks), rank r taking micro-batches r, r + N, ... and accumulating its gradients over them,
so N ranks compute the same steps as one process with N times the accumulation. A step's loss is the mean of its
micro-batches' losses. Evaluation splits the batches over the ranks and gathers the results; rank 0 writes
the files.

Checkpoints (checkpoint_every steps, and at stop_at): checkpoints/step-N/, written atomically, the newest
keep_checkpoints kept. A run started again with resume=True (--resume) continues from the newest one to the
numbers the uninterrupted run would have given (resume.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_config
from ..devices import resolve_device
from ..errors import DataError, ResumeError, RunInterrupted, SettingError
from ..files import read_json
from ..ops import resolve
from ..tokenizer import Tokenizer
from ..training import Precision, build_optimizer, linear_schedule
from ..training import distributed as D
from ..training.capture import CapturedStep
from ..training.checkpointing import CheckpointManager
from ..training.runs import accumulation_steps, run_folder, settings_for_resume
from . import resume
from .batching import token_steps
from .issues import Issues
from .tasks import TASKS, Split, Task, sequence_length

logger = logging.getLogger("bert_fast")

SINGLE_PROCESS = D.DistEnv()  # no process group: the plain `python` run


@dataclass
class FinetuneConfig:
    task: str
    model: Path
    train: Path
    dev: Path
    test: Path | None = None
    out: Path = Path("runs/finetune")
    # the recipe
    epochs: int = 3
    lr: float = 3e-5
    batch_size: int = 32  # examples per optimizer step, over all ranks and accumulation steps
    micro_batch_size: int | None = None  # examples per rank per forward; None: batch_size / ranks
    batch_tokens: int | None = None  # padded tokens per step, batches drawn by length (batching.py); None: batch_size
    eval_batch_size: int = 128
    warmup: float = 0.1  # fraction of the steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int | None = None  # tokens per input; None: 384 for qa, 128 otherwise
    max_steps: int | None = None  # stop early (smoke runs)
    seed: int = 42
    # the machine
    impl: str = "auto"
    device: str | None = None  # None: cuda if available
    precision: str | None = None  # bf16 / fp16 / fp32; None: bf16 on CUDA, fp32 on the CPU
    # classify
    text_columns: list[str] | None = None
    label_column: str | None = None
    no_header: bool = False
    labels: list[str] | None = None
    regression: bool = False
    metric: str | None = None  # the dev metric that picks the best epoch; None: the task's
    # checkpoints (exact resume)
    checkpoint_every: int = 0  # steps; 0: none (the best epoch's model is kept in best/ regardless)
    keep_checkpoints: int = 1
    stop_at: int | None = None  # stop after this many steps, writing a checkpoint (a time-limited job)
    # each step's forward, backward and optimizer step as one CUDA graph per batch shape (training/capture.py);
    # bf16 or fp32, one process. Off by default: it has not run on a GPU yet.
    capture: bool = False
    resume: bool = False  # continue from the newest checkpoint in out/checkpoints
    # qa
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_threshold: float | None = None  # v2: None tunes it on the dev set
    squad_version: int | None = None  # None: from the file

    def __post_init__(self):
        if self.task not in TASKS:
            raise SettingError(f"task {self.task!r} is not one of {sorted(TASKS)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "micro_batch_size", "batch_tokens"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise SettingError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise SettingError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")


def set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def predict(model, task: Task, split: Split, batch_size: int, precision: Precision,
            env: D.DistEnv = SINGLE_PROCESS) -> list:
    """Every feature's result, in order, on every rank. Batches are formed by length so padding stays small on any
    path; with several ranks each runs every N-th batch and the results are gathered."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(split.features)), key=lambda i: sequence_length(split.features[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    mine = {}
    for chosen in batches[env.rank::env.world_size]:
        features = [split.features[i] for i in chosen]
        batch = _to(task.collate(features, training=False), device)
        with precision.autocast():
            output = model(**batch)
        mine.update(zip(chosen, task.outputs(output, batch, features)))
    results = [None] * len(order)
    for part in D.gather_objects(mine, env):
        for i, result in part.items():
            results[i] = result
    return results


def evaluate(model, task: Task, split: Split, cfg: FinetuneConfig, precision: Precision,
             env: D.DistEnv = SINGLE_PROCESS):
    results = predict(model, task, split, cfg.eval_batch_size, precision, env)
    return task.score(split, results)


def micro_batches(chunk: list, pieces: int) -> list[list]:
    """A step's examples cut into `pieces` contiguous micro-batches: micro_batch_size each for a full batch, sizes
    within one of each other for the epoch's last, shorter one."""
    return [chunk[j * len(chunk) // pieces:(j + 1) * len(chunk) // pieces] for j in range(pieces)]


def steps_per_epoch(examples: int, batch_size: int, pieces: int) -> int:
    """Optimizer steps in an epoch. A last batch too small to give every micro-batch an example is left out."""
    full, rest = divmod(examples, batch_size)
    return full + (rest >= pieces)


def train_steps(model, task: Task, features: list[dict], optimizer, schedule, precision: Precision,
                cfg: FinetuneConfig, order: list[int], accumulation: int = 1, env: D.DistEnv = SINGLE_PROCESS,
                skip: int = 0, max_steps: int | None = None,
                captured: CapturedStep | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """Optimizer steps over the training features in `order` (the epoch's shuffle, the same on every rank),
    `model` possibly DDP-wrapped: the epoch's steps after the first `skip` (done before a resume), at most
    max_steps of them. Yields after each step its loss (the mean of its micro-batches' losses, a device tensor)
    and this rank's real tokens in it.

    With `captured` (cfg.capture), a micro-batch that has a bucket runs as its bucket's CUDA graph (the last one of
    a step with the optimizer step inside); one without runs eagerly, into the same persistent gradients."""
    from tqdm.auto import tqdm

    model.train()
    device = next(model.parameters()).device
    pieces = accumulation * env.world_size
    batches = epoch_batches(features, order, cfg, pieces)
    batches = batches[skip:] if max_steps is None else batches[skip:skip + max_steps]
    for chosen in tqdm(batches, desc="train", leave=False, disable=None if env.is_main else True):
        chunk = micro_batches([features[i] for i in chosen], pieces)
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        tokens, stepped_in_graph = 0, False
        for a in range(accumulation):
            batch = task.collate(chunk[a * env.world_size + env.rank], training=True)
            tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync per step
            last = a == accumulation - 1
            static = captured.static_batch(batch, task.tokenizer.pad_token_id, max_width=task.max_length) \
                if captured is not None else None
            if static is not None:
                loss, _ = captured(static, step_optimizer=last, loss_scale=1 / accumulation)
                step_loss += loss.double() / accumulation
                stepped_in_graph = last
                continue
            batch = _to(batch, device)
            with D.no_sync(model, skip=not last):
                with precision.autocast():
                    loss = model(**batch).loss
                precision.backward(loss / accumulation)
            step_loss += loss.detach().double() / accumulation
        stepped = True
        if not stepped_in_graph:
            _, stepped = precision.step(optimizer, model.parameters(), cfg.max_grad_norm)
            # captured graphs add into the gradients they were captured with: zero them in place
            optimizer.zero_grad(set_to_none=captured is None)
        if stepped:
            schedule.step()
        yield step_loss, tokens


def epoch_batches(features: list[dict], order: list[int], cfg: FinetuneConfig, pieces: int) -> list[list[int]]:
    """Each step's feature indices for an epoch in `order`: batch_size at a time, or drawn by length within
    batch_tokens (batching.py). How many steps an epoch has does not depend on the order."""
    if cfg.batch_tokens:
        return token_steps(features, order, cfg.batch_tokens, pieces)
    starts = range(0, steps_per_epoch(len(features), cfg.batch_size, pieces) * cfg.batch_size, cfg.batch_size)
    return [order[start:start + cfg.batch_size] for start in starts]


def reduce_sums(loss_sum: torch.Tensor, tokens: int, env: D.DistEnv) -> tuple[float, int]:
    """All ranks' step-loss and token sums (collective)."""
    totals = torch.stack([loss_sum.double(), torch.tensor(float(tokens), dtype=torch.float64,
                                                          device=loss_sum.device)])
    total_loss, total_tokens = D.all_reduce_sum(totals, env).tolist()
    return total_loss, int(total_tokens)


def _score(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(f"metric {name!r} is not one of {sorted(metrics)}")
    value = metrics[name]
    return -math.inf if value is None or math.isnan(value) else value


def log_epoch(out: Path, record: dict, quiet: bool = False) -> None:
    """One line per epoch in metrics.jsonl and (unless quiet) the log."""
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    if quiet:
        return
    dev = record.get("dev") or {}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in dev.items() if isinstance(v, float))
    logger.warning("epoch %d: train loss %.4f, dev %s (%.1fs train, %.1fs eval)", record["epoch"],
                   record["train_loss"], shown, record["train_seconds"], record["eval_seconds"])


def _json_ready(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


@dataclass
class EpochSums:
    """This rank's step-loss and token sums in the epoch since the run (re)started; `carried` holds what all
    ranks had summed before a resume (the checkpoint's)."""

    loss: torch.Tensor
    tokens: int = 0
    carried_loss: float = 0.0
    carried_tokens: int = 0

    def all_ranks(self, env: D.DistEnv) -> tuple[float, int]:
        """The epoch's sums over every rank so far (collective)."""
        loss, tokens = reduce_sums(self.loss, self.tokens, env)
        return loss + self.carried_loss, tokens + self.carried_tokens


class FinetuneRun:
    """One fine-tuning job (one process, or one rank of a torchrun job), complete when built: its splits,
    model, optimizer and schedule, at the position it starts from (the newest checkpoint's when resuming)."""

    def __init__(self, cfg: FinetuneConfig, env: D.DistEnv):
        self.cfg, self.env = cfg, env
        self.generator = set_seed(cfg.seed)
        self.device = resolve_device(cfg.device, env.local_rank)
        self.precision = Precision(cfg.precision, self.device) if cfg.precision else Precision.default(self.device)
        self.accumulation = accumulation_steps(cfg.batch_size, cfg.micro_batch_size, env.world_size)
        self.micro_batch_size = cfg.batch_size // (self.accumulation * env.world_size)
        self.out = Path(cfg.out)
        self.checkpoints = CheckpointManager(self.out / "checkpoints", cfg.keep_checkpoints)
        if env.is_main and (env.enabled or self.accumulation > 1):
            logger.warning("fine-tuning on %d process(es): %d micro-batch(es) of %d examples per rank and step",
                           env.world_size, self.accumulation, self.micro_batch_size)

        # Data: every split read and encoded once.
        self.issues = Issues()
        self.tokenizer = Tokenizer.from_pretrained(cfg.model)
        self.task = TASKS[cfg.task](cfg, self.tokenizer, self.issues, model_config=read_config(cfg.model))
        self.train_split = self._split(cfg.train, "train")
        self.dev_split = self._split(cfg.dev, "dev")
        self.test_split = self._split(cfg.test, "test") if cfg.test else None
        if env.is_main:
            self.issues.log()

        # Model, optimizer, schedule.
        self.model = self.task.model_class.from_pretrained(cfg.model, impl=cfg.impl,
                                                           **self.task.model_overrides()).to(self.device)
        self.wrapped = D.wrap_model(self.model, env, "ddp", self.device)  # every rank starts from rank 0's weights
        self.total_steps = self._total_steps()
        self.optimizer = build_optimizer(self.model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         capturable=cfg.capture)
        self.schedule = linear_schedule(self.optimizer, int(cfg.warmup * self.total_steps), self.total_steps)
        self.captured = self._captured_step() if cfg.capture else None

        self.run_config = {**_json_ready(asdict(cfg)), "world_size": env.world_size,
                           "micro_batch": self.micro_batch_size}
        self.position = self._restore_newest_checkpoint() if cfg.resume else resume.Position()

    def _captured_step(self) -> CapturedStep:
        """The captured step (cfg.capture): one process, bf16 or fp32."""
        if self.env.enabled:
            raise SettingError("--capture runs one process: DDP's gradient hooks cannot run inside a CUDA graph")
        if self.precision.mode == "fp16":
            raise SettingError("--capture takes bf16 or fp32: fp16's loss scaler reads its overflow flag on the host")
        autocast = torch.bfloat16 if self.precision.mode == "bf16" else None
        return CapturedStep(self.model, self.optimizer, max_grad_norm=self.cfg.max_grad_norm, autocast_dtype=autocast)

    def _split(self, path: Path, name: str) -> Split:
        split = self.task.load(path, name)
        split.features = self.task.encode(split, training=name == "train")
        return split

    def _total_steps(self) -> int:
        pieces = self.accumulation * self.env.world_size
        features = self.train_split.features
        total = len(epoch_batches(features, list(range(len(features))), self.cfg, pieces)) * self.cfg.epochs
        if total == 0:
            raise DataError(f"{len(self.train_split.features)} training example(s) cannot fill the {pieces} "
                            "micro-batches of one step")
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    def _restore_newest_checkpoint(self) -> resume.Position:
        latest = self.checkpoints.latest()
        if latest is None:
            if self.env.is_main:
                logger.warning("bert_fast: --resume: no checkpoint in %s, starting afresh", self.checkpoints.folder)
            return resume.Position()
        position = resume.restore(latest[1], self.model, self.optimizer, self.schedule, self.precision,
                                  self.run_config, self.env)
        if self.env.is_main:
            logger.warning("bert_fast: resumed from %s: epoch %d, step %d of the run", latest[1], position.epoch,
                           position.steps_done)
        return position

    # --- the run ---------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train the epochs left, evaluating each and keeping the best; then evaluate the best checkpoint."""
        if self.env.is_main:
            (self.out / "config.json").write_text(json.dumps(self.run_config, indent=2) + "\n")
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            for record in self.position.history:  # the log as the checkpoint knew it: nothing logged twice
                log_epoch(self.out, record, quiet=True)
        try:
            for epoch in range(self.position.epoch, self.cfg.epochs + 1):
                if self.position.steps_done >= self.total_steps and self.position.step_in_epoch == 0:
                    break  # no epoch left to evaluate
                self._train_epoch(epoch)
                if self._stopped_early():
                    return self._stopped_summary()
        except KeyboardInterrupt:
            raise RunInterrupted(self._interrupted()) from None
        D.barrier(self.env)  # the best checkpoint is on disk before any rank reads it
        return self._final_evaluation()

    def _train_epoch(self, epoch: int) -> None:
        position = self.position
        if position.epoch_shuffle_state is not None:  # resuming inside this epoch: draw its order again
            self.generator.set_state(position.epoch_shuffle_state)
        position.epoch, position.epoch_shuffle_state = epoch, self.generator.get_state()
        order = torch.randperm(len(self.train_split.features), generator=self.generator).tolist()
        sums = EpochSums(torch.zeros((), dtype=torch.float64, device=self.device),
                         carried_loss=position.loss_sum, carried_tokens=position.tokens)
        started = time.perf_counter()
        for step_loss, tokens in train_steps(self.wrapped, self.task, self.train_split.features, self.optimizer,
                                             self.schedule, self.precision, self.cfg, order, self.accumulation,
                                             self.env, skip=position.step_in_epoch,
                                             max_steps=self.total_steps - position.steps_done,
                                             captured=self.captured):
            sums.loss += step_loss
            sums.tokens += tokens
            position.step_in_epoch += 1
            position.steps_done += 1
            if self._stop_reached() or self._checkpoint_due():
                position.loss_sum, position.tokens = sums.all_ranks(self.env)
                resume.save(self.checkpoints, position, self.model, self.tokenizer, self.optimizer, self.schedule,
                            self.precision, self.run_config, self.env)
            if self._stopped_early():
                return
        _sync(self.device)
        train_seconds = time.perf_counter() - started
        self._end_epoch(sums, train_seconds)

    def _checkpoint_due(self) -> bool:
        done = self.position.steps_done
        return bool(self.cfg.checkpoint_every) and done % self.cfg.checkpoint_every == 0 and done < self.total_steps

    def _stop_reached(self) -> bool:
        """stop_at reached: a time-limited job ends here with a checkpoint."""
        return self.cfg.stop_at is not None and self.position.steps_done >= self.cfg.stop_at

    def _stopped_early(self) -> bool:
        """stop_at reached before the run's last step (at the last step the run just ends as usual)."""
        return self._stop_reached() and self.position.steps_done < self.total_steps

    def _end_epoch(self, sums: EpochSums, train_seconds: float) -> None:
        """Evaluate on dev, log the epoch, keep the model if it is the best so far."""
        started = time.perf_counter()
        dev_metrics, _ = evaluate(self.model, self.task, self.dev_split, self.cfg, self.precision, self.env)
        _sync(self.device)
        loss_sum, tokens = sums.all_ranks(self.env)
        position = self.position
        record = {"epoch": position.epoch, "train_loss": loss_sum / (position.step_in_epoch * self.env.world_size),
                  "steps": position.step_in_epoch, "train_tokens": tokens, "train_seconds": train_seconds,
                  "eval_seconds": time.perf_counter() - started, "dev": dev_metrics}
        position.history.append(record)
        if self.env.is_main:
            log_epoch(self.out, record)
        # every rank scores the same gathered results, so every rank takes the same decision
        metric = self.task.primary_metric
        if position.best is None or _score(dev_metrics, metric) > _score(position.best["dev"], metric):
            position.best = record
            self.model.config.extra.update(self.task.checkpoint_settings())  # what predicting needs (a tuned value)
            if self.env.is_main:
                self.model.save_pretrained(self.out / "best")
                self.tokenizer.save_pretrained(self.out / "best")
        position.next_epoch()

    def _final_evaluation(self) -> dict:
        """The best epoch's checkpoint, read back: its dev metrics must be the ones recorded (and SQuAD v2 tunes
        its threshold on them for the test set); test predictions when there is a test split."""
        cfg, env, task = self.cfg, self.env, self.task
        model = task.model_class.from_pretrained(self.out / "best", impl=cfg.impl).to(self.device)
        history = self.position.history
        summary = {"task": cfg.task, "config": _json_ready(asdict(cfg)), "device": str(self.device),
                   "precision": self.precision.mode, "impl": resolve(cfg.impl, self.device).name,
                   "world_size": env.world_size, "primary_metric": task.primary_metric, "epochs": history,
                   "best_epoch": self.position.best["epoch"]}
        summary["dev"], dev_predictions = evaluate(model, task, self.dev_split, cfg, self.precision, env)
        if env.is_main:
            task.write_predictions(self.dev_split, dev_predictions, self.out)
        if self.test_split is not None:
            started = time.perf_counter()
            summary["test"], test_predictions = evaluate(model, task, self.test_split, cfg, self.precision, env)
            summary["test_seconds"] = time.perf_counter() - started
            if env.is_main:
                task.write_predictions(self.test_split, test_predictions, self.out)
        summary["train_seconds"] = sum(r["train_seconds"] for r in history)
        summary["warnings"] = self.issues.summary()
        if env.is_main:
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        return summary

    def _stopped_summary(self) -> dict:
        done = self.position.steps_done
        if self.env.is_main:
            logger.warning("bert_fast: stopped after step %d of %d; --resume continues from %s", done,
                           self.total_steps, self.checkpoints.path(done))
        return {"task": self.cfg.task, "stopped_at": done, "total_steps": self.total_steps,
                "checkpoint": str(self.checkpoints.path(done))}

    def _interrupted(self) -> str:
        """Ctrl-C: where the run stands and how to continue it."""
        latest = self.checkpoints.latest()
        if latest is None:
            return (f"interrupted at step {self.position.steps_done} of {self.total_steps} with no checkpoint to "
                    f"resume from (pass --checkpoint-every N to write some); {self.out} holds the finished epochs' "
                    "results")
        return (f"interrupted at step {self.position.steps_done} of {self.total_steps}; the last checkpoint is "
                f"{latest[1]} (step {latest[0]}). Continue with the same command and --resume")


# Resuming: settings the command may give anew without changing what any step computes (quiet), settings that may
# change with a warning (loud: the total steps), and settings of one command that a resumed run does not inherit.
RESUME_QUIET = ("stop_at", "checkpoint_every", "keep_checkpoints", "eval_batch_size", "test")
RESUME_LOUD = {
    "epochs": "the total steps: the learning rate now decays to zero over the new total, from the checkpoint on",
    "max_steps": "the total steps: the learning rate now decays to zero over the new total, from the checkpoint on",
}
PER_INVOCATION = ("stop_at",)
_PATHS = ("model", "train", "dev", "test", "out")


def resumed_config(out: str | Path, given: dict) -> tuple[FinetuneConfig, list[str]]:
    """The config a resumed run continues with: the run's own OUT/config.json, with `given` (the settings the
    command gave again) checked against it. Returns it and a note per changed total-steps setting; any other
    changed setting that decides what a step computes is a ResumeError naming it."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ResumeError(f"{out} holds no config.json: there is no fine-tuning run to resume there (start one "
                          "without --resume)")
    names = {f.name for f in dataclasses.fields(FinetuneConfig)} - {"out", "resume"}
    saved = {k: v for k, v in read_json(path, ResumeError).items() if k in names}
    saved.update({name: None for name in PER_INVOCATION})
    given = {k: v for k, v in given.items() if k in names}
    notes = settings_for_resume(saved, _json_ready(given), RESUME_QUIET, RESUME_LOUD)
    merged = {**saved, **given, "out": Path(out), "resume": True}
    merged.update({k: Path(merged[k]) for k in _PATHS if merged.get(k) is not None})
    return FinetuneConfig(**merged), notes


# What a fine-tuning run leaves in its folder that another run must not silently write over.
RUN_OUTPUTS = ("best", "checkpoints", "config.json", "metrics.json", "metrics.jsonl", "predictions_*")


def finetune(cfg: FinetuneConfig, overwrite: bool = False) -> dict:
    """Run one fine-tuning job (one process, or each rank of a torchrun job); returns what metrics.json holds.

    An output folder holding another run is refused unless cfg.resume continues it or `overwrite` replaces it.
    """
    env = D.init_distributed(resolve_device(cfg.device).type)
    try:
        with run_folder(Path(cfg.out), RUN_OUTPUTS, cfg.resume, overwrite, is_main=env.is_main):
            D.barrier(env)
            return FinetuneRun(cfg, env).run()
    finally:
        D.shutdown(env)


def predict_file(cfg: FinetuneConfig, path: Path, overwrite: bool = False) -> dict:
    """A fine-tuned checkpoint (cfg.model) applied to one file of cfg.task's format, read with cfg's settings
    (cfg.train and cfg.dev are not read). Writes predictions_<file stem>.* to cfg.out, and metrics_<file stem>.json
    when the file is labelled; returns the metrics (None when unlabelled) and the files written. Earlier
    predictions of a file of that name in cfg.out are refused unless `overwrite`."""
    stem = Path(path).stem
    with run_folder(Path(cfg.out), (f"predictions_{stem}.*", f"metrics_{stem}.json"), resume=False,
                    overwrite=overwrite) as out:
        return _predict_file(cfg, Path(path), out)


def _predict_file(cfg: FinetuneConfig, path: Path, out: Path) -> dict:
    device = resolve_device(cfg.device)
    precision = Precision(cfg.precision, device) if cfg.precision else Precision.default(device)
    model_config = read_config(cfg.model)
    if cfg.task == "classify":
        cfg = dataclasses.replace(cfg, regression=model_config.problem_type == "regression")
    issues = Issues()
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    task = TASKS[cfg.task](cfg, tokenizer, issues, model_config=model_config)
    task.use_checkpoint_labels()
    split = dataclasses.replace(task.load(path, "test"), name=path.stem)  # labels optional, as for a test file
    split.features = task.encode(split, training=False)
    issues.log()
    model = task.model_class.from_pretrained(cfg.model, impl=cfg.impl).to(device)
    if model.fresh_keys:
        raise DataError(f"{cfg.model} has no trained {cfg.task} head ({', '.join(model.fresh_keys)} would start "
                        "random): fine-tune it first (bert-fast finetune)")
    t0 = time.perf_counter()
    metrics, predictions = evaluate(model, task, split, cfg, precision)
    _sync(device)
    seconds = time.perf_counter() - t0
    files = task.write_predictions(split, predictions, out)
    summary = {"task": cfg.task, "model": str(cfg.model), "input": str(path), "examples": len(split.examples),
               "impl": resolve(cfg.impl, device).name, "device": str(device), "seconds": seconds,
               "metrics": metrics, "files": [str(f) for f in files], "warnings": issues.summary()}
    if metrics is not None:
        (out / f"metrics_{split.name}.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
