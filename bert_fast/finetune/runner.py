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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_config
from ..ops import resolve
from ..tokenizer import BertTokenizer
from ..training import Precision, build_optimizer, linear_schedule
from ..training import distributed as D
from ..training.checkpointing import CheckpointManager
from . import resume
from .batching import token_steps
from .issues import DataError, Issues
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
            raise ValueError(f"task {self.task!r} is not one of {sorted(TASKS)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "micro_batch_size", "batch_tokens"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")


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


def train_epoch(model, task: Task, features: list[dict], optimizer, schedule, precision: Precision,
                cfg: FinetuneConfig, order: list[int], accumulation: int = 1, env: D.DistEnv = SINGLE_PROCESS,
                skip: int = 0, max_steps: int | None = None, after_step=None) -> dict:
    """Steps over the training features in `order` (the epoch's shuffle, the same on every rank), `model` possibly
    DDP-wrapped: the epoch's steps after the first `skip` (done before a resume), at most max_steps of them.
    `after_step(steps_in_epoch, loss_sum, tokens)` runs after each (this rank's sums so far) and returns True to
    stop. Returns this rank's sums: the step losses, the real tokens, and the steps taken."""
    from tqdm.auto import tqdm

    model.train()
    device = next(model.parameters()).device
    pieces = accumulation * env.world_size
    batches = epoch_batches(features, order, cfg, pieces)
    batches = batches[skip:] if max_steps is None else batches[skip:skip + max_steps]
    loss_sum, tokens, steps = torch.zeros((), dtype=torch.float64, device=device), 0, 0
    for chosen in tqdm(batches, desc="train", leave=False, disable=None if env.is_main else True):
        chunk = micro_batches([features[i] for i in chosen], pieces)
        for a in range(accumulation):
            batch = task.collate(chunk[a * env.world_size + env.rank], training=True)
            tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync per step
            batch = _to(batch, device)
            with D.no_sync(model, skip=a < accumulation - 1):
                with precision.autocast():
                    loss = model(**batch).loss
                precision.backward(loss / accumulation)
            loss_sum += loss.detach().double() / accumulation
        _, stepped = precision.step(optimizer, model.parameters(), cfg.max_grad_norm)
        optimizer.zero_grad(set_to_none=True)
        if stepped:
            schedule.step()
        steps += 1
        if after_step is not None and after_step(skip + steps, loss_sum, tokens):
            break
    return {"loss_sum": loss_sum, "tokens": tokens, "steps": steps}


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


def _device(cfg: FinetuneConfig, env: D.DistEnv) -> torch.device:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None and env.enabled:
        device = torch.device("cuda", env.local_rank)  # one GPU per process under torchrun
    return device


def _accumulation(cfg: FinetuneConfig, env: D.DistEnv) -> int:
    micro = cfg.micro_batch_size or cfg.batch_size // env.world_size
    if micro < 1 or cfg.batch_size % (micro * env.world_size):
        raise ValueError(f"batch_size={cfg.batch_size} is not a multiple of micro_batch_size={micro} x "
                         f"{env.world_size} rank(s)")
    return cfg.batch_size // (micro * env.world_size)


def finetune(cfg: FinetuneConfig) -> dict:
    """Run one fine-tuning job (one process, or each rank of a torchrun job); returns what metrics.json holds."""
    env = D.init_distributed(_device(cfg, SINGLE_PROCESS).type)
    try:
        return _finetune(cfg, env)
    finally:
        D.shutdown(env)


def _finetune(cfg: FinetuneConfig, env: D.DistEnv) -> dict:
    generator = set_seed(cfg.seed)
    device = _device(cfg, env)
    precision = Precision(cfg.precision, device) if cfg.precision else Precision.default(device)
    accumulation = _accumulation(cfg, env)
    out = Path(cfg.out)
    checkpoints = CheckpointManager(out / "checkpoints", cfg.keep_checkpoints)
    latest = checkpoints.latest()
    if latest and not cfg.resume:
        raise FileExistsError(f"{out} holds checkpoints of an earlier run: pass --resume to continue it, or choose "
                              "another --out")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if env.is_main and (env.enabled or accumulation > 1):
        logger.warning("fine-tuning on %d process(es): %d micro-batch(es) of %d examples per rank and step",
                       env.world_size, accumulation, cfg.batch_size // (accumulation * env.world_size))
    issues = Issues()

    tokenizer = BertTokenizer.from_pretrained(cfg.model)
    task = TASKS[cfg.task](cfg, tokenizer, issues, model_config=read_config(cfg.model))
    train = task.load(cfg.train, "train")
    dev = task.load(cfg.dev, "dev")
    test = task.load(cfg.test, "test") if cfg.test else None
    for split in (s for s in (train, dev, test) if s is not None):
        split.features = task.encode(split, training=split is train)
    if env.is_main:
        issues.log()

    model = task.model_class.from_pretrained(cfg.model, impl=cfg.impl, **task.model_overrides()).to(device)
    wrapped = D.wrap_model(model, env, "ddp", device)  # DDP starts every rank from rank 0's weights
    total_steps = len(epoch_batches(train.features, list(range(len(train.features))), cfg,
                                    accumulation * env.world_size)) * cfg.epochs
    if total_steps == 0:
        raise ValueError(f"{len(train.features)} training example(s) cannot fill the {accumulation * env.world_size} "
                         "micro-batches of one step")
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = build_optimizer(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = linear_schedule(optimizer, int(cfg.warmup * total_steps), total_steps)

    run_config = {**_json_ready(asdict(cfg)), "world_size": env.world_size,
                  "micro_batch": cfg.batch_size // (accumulation * env.world_size)}
    position = resume.Position()
    if latest:
        position = resume.restore(latest[1], model, optimizer, schedule, precision, run_config, env)
        if env.is_main:
            logger.warning("bert_fast: resumed from %s: epoch %d, step %d of the run", latest[1], position.epoch,
                           position.steps_done)
            for record in position.history:  # the log as the checkpoint knew it: nothing logged twice
                log_epoch(out, record, quiet=True)
    elif cfg.resume and env.is_main:
        logger.warning("bert_fast: --resume: no checkpoint in %s, starting afresh", checkpoints.folder)

    def after_step(steps_in_epoch: int, loss_sum: torch.Tensor, tokens: int) -> bool:
        """Checkpoint when due; True to stop. `position` still stands where this epoch's train_epoch began."""
        done = position.steps_done + steps_in_epoch - position.step_in_epoch
        stop = cfg.stop_at is not None and done >= cfg.stop_at
        if stop or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total_steps):
            new_loss, new_tokens = reduce_sums(loss_sum, tokens, env)
            at = dataclasses.replace(position, step_in_epoch=steps_in_epoch, steps_done=done,
                                     loss_sum=position.loss_sum + new_loss, tokens=position.tokens + new_tokens)
            resume.save(checkpoints, at, model, tokenizer, optimizer, schedule, precision, run_config, env)
        return stop

    for epoch in range(position.epoch, cfg.epochs + 1):
        if position.steps_done >= total_steps and position.step_in_epoch == 0:  # no epoch left to evaluate
            break
        if position.epoch_shuffle_state is not None:  # resuming inside this epoch: draw its order again
            generator.set_state(position.epoch_shuffle_state)
        position.epoch, position.epoch_shuffle_state = epoch, generator.get_state()
        order = torch.randperm(len(train.features), generator=generator).tolist()
        t0 = time.perf_counter()
        stats = train_epoch(wrapped, task, train.features, optimizer, schedule, precision, cfg, order,
                            accumulation=accumulation, env=env, skip=position.step_in_epoch,
                            max_steps=total_steps - position.steps_done, after_step=after_step)
        _sync(device)
        position.steps_done += stats["steps"]
        position.step_in_epoch += stats["steps"]
        if cfg.stop_at is not None and position.steps_done >= cfg.stop_at and position.steps_done < total_steps:
            if env.is_main:
                logger.warning("bert_fast: stopped after step %d of %d; --resume continues from %s",
                               position.steps_done, total_steps, checkpoints.path(position.steps_done))
            return {"task": cfg.task, "stopped_at": position.steps_done, "total_steps": total_steps,
                    "checkpoint": str(checkpoints.path(position.steps_done))}
        t1 = time.perf_counter()
        dev_metrics, _ = evaluate(model, task, dev, cfg, precision, env)
        _sync(device)
        t2 = time.perf_counter()
        loss_sum, tokens = reduce_sums(stats["loss_sum"], stats["tokens"], env)
        loss_sum, tokens = loss_sum + position.loss_sum, tokens + position.tokens
        record = {"epoch": epoch, "train_loss": loss_sum / (position.step_in_epoch * env.world_size),
                  "steps": position.step_in_epoch, "train_tokens": tokens, "train_seconds": t1 - t0,
                  "eval_seconds": t2 - t1, "dev": dev_metrics}
        position.history.append(record)
        if env.is_main:
            log_epoch(out, record)
        # every rank scores the same gathered results, so every rank takes the same decision
        best = position.best
        if best is None or _score(dev_metrics, task.primary_metric) > _score(best["dev"], task.primary_metric):
            position.best = record
            model.config.extra.update(task.checkpoint_settings())  # what predicting with it needs (a tuned value)
            if env.is_main:
                model.save_pretrained(out / "best")
                tokenizer.save_pretrained(out / "best")
        position.step_in_epoch, position.epoch_shuffle_state, position.loss_sum, position.tokens = 0, None, 0.0, 0
    D.barrier(env)  # the best checkpoint is on disk before any rank reads it
    history, best = position.history, position.best

    # The best epoch's checkpoint, read back: its dev metrics must be the ones recorded (and SQuAD v2 tunes its
    # threshold on them for the test set).
    model = task.model_class.from_pretrained(out / "best", impl=cfg.impl).to(device)
    summary = {"task": cfg.task, "config": _json_ready(asdict(cfg)), "device": str(device),
               "precision": precision.mode, "impl": resolve(cfg.impl, device).name, "world_size": env.world_size,
               "primary_metric": task.primary_metric, "epochs": history, "best_epoch": best["epoch"]}
    summary["dev"], dev_predictions = evaluate(model, task, dev, cfg, precision, env)
    if env.is_main:
        task.write_predictions(dev, dev_predictions, out)
    if test is not None:
        t0 = time.perf_counter()
        summary["test"], test_predictions = evaluate(model, task, test, cfg, precision, env)
        summary["test_seconds"] = time.perf_counter() - t0
        if env.is_main:
            task.write_predictions(test, test_predictions, out)
    summary["train_seconds"] = sum(r["train_seconds"] for r in history)
    summary["warnings"] = issues.summary()
    if env.is_main:
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def predict_file(cfg: FinetuneConfig, path: Path) -> dict:
    """A fine-tuned checkpoint (cfg.model) applied to one file of cfg.task's format, read with cfg's settings
    (cfg.train and cfg.dev are not read). Writes predictions_<file stem>.* to cfg.out, and metrics_<file stem>.json
    when the file is labelled; returns the metrics (None when unlabelled) and the files written."""
    device = _device(cfg, SINGLE_PROCESS)
    precision = Precision(cfg.precision, device) if cfg.precision else Precision.default(device)
    model_config = read_config(cfg.model)
    if cfg.task == "classify":
        cfg = dataclasses.replace(cfg, regression=model_config.problem_type == "regression")
    issues = Issues()
    tokenizer = BertTokenizer.from_pretrained(cfg.model)
    task = TASKS[cfg.task](cfg, tokenizer, issues, model_config=model_config)
    task.use_checkpoint_labels()
    split = dataclasses.replace(task.load(path, "test"), name=Path(path).stem)  # labels optional, as for a test file
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
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = task.write_predictions(split, predictions, out)
    summary = {"task": cfg.task, "model": str(cfg.model), "input": str(path), "examples": len(split.examples),
               "impl": resolve(cfg.impl, device).name, "device": str(device), "seconds": seconds,
               "metrics": metrics, "files": [str(f) for f in files], "warnings": issues.summary()}
    if metrics is not None:
        (out / f"metrics_{split.name}.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
