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
"""

from __future__ import annotations

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
from .issues import Issues
from .tasks import TASKS, Split, Task, sequence_length

logger = logging.getLogger("bert_fast")


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
        for name in ("epochs", "batch_size", "eval_batch_size", "micro_batch_size"):
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
            env: D.DistEnv = D.DistEnv()) -> list:
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
             env: D.DistEnv = D.DistEnv()):
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
                cfg: FinetuneConfig, generator: torch.Generator, max_steps: int | None,
                accumulation: int = 1, env: D.DistEnv = D.DistEnv()) -> dict:
    """One pass over the shuffled training features (or max_steps of it), `model` possibly DDP-wrapped. Returns
    the mean loss over all ranks, the steps, and the real tokens of all ranks."""
    from tqdm.auto import tqdm

    model.train()
    device = next(model.parameters()).device
    pieces = accumulation * env.world_size
    order = torch.randperm(len(features), generator=generator).tolist()  # the same on every rank: same seed
    starts = range(0, steps_per_epoch(len(features), cfg.batch_size, pieces) * cfg.batch_size, cfg.batch_size)
    if max_steps is not None:
        starts = starts[:max_steps]
    losses, tokens = [], 0
    for start in tqdm(starts, desc="train", leave=False, disable=None if env.is_main else True):
        chunk = micro_batches([features[i] for i in order[start:start + cfg.batch_size]], pieces)
        step_loss = 0.0
        for a in range(accumulation):
            batch = task.collate(chunk[a * env.world_size + env.rank], training=True)
            tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync per step
            batch = _to(batch, device)
            with D.no_sync(model, skip=a < accumulation - 1):
                with precision.autocast():
                    loss = model(**batch).loss
                precision.backward(loss / accumulation)
            step_loss = step_loss + loss.detach() / accumulation
        _, stepped = precision.step(optimizer, model.parameters(), cfg.max_grad_norm)
        optimizer.zero_grad(set_to_none=True)
        if stepped:
            schedule.step()
        losses.append(step_loss)
    totals = torch.stack([torch.stack(losses).double().sum() if losses else torch.zeros((), dtype=torch.float64),
                          torch.tensor(float(tokens), dtype=torch.float64)]).to(device)
    loss_sum, tokens = D.all_reduce_sum(totals, env).tolist()
    mean_loss = loss_sum / (len(losses) * env.world_size) if losses else float("nan")
    return {"train_loss": mean_loss, "steps": len(losses), "train_tokens": int(tokens)}


def _score(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(f"metric {name!r} is not one of {sorted(metrics)}")
    value = metrics[name]
    return -math.inf if value is None or math.isnan(value) else value


def log_epoch(out: Path, record: dict) -> None:
    """One line per epoch in metrics.jsonl and the log: the piece a shared trainer would replace."""
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
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
    env = D.init_distributed(_device(cfg, D.DistEnv()).type)
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
    total_steps = steps_per_epoch(len(train.features), cfg.batch_size, accumulation * env.world_size) * cfg.epochs
    if total_steps == 0:
        raise ValueError(f"{len(train.features)} training example(s) cannot fill the {accumulation * env.world_size} "
                         "micro-batches of one step")
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = build_optimizer(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = linear_schedule(optimizer, int(cfg.warmup * total_steps), total_steps)

    history, best, steps_done = [], None, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        stats = train_epoch(wrapped, task, train.features, optimizer, schedule, precision, cfg, generator,
                            max_steps=total_steps - steps_done, accumulation=accumulation, env=env)
        _sync(device)
        t1 = time.perf_counter()
        dev_metrics, _ = evaluate(model, task, dev, cfg, precision, env)
        _sync(device)
        t2 = time.perf_counter()
        steps_done += stats["steps"]
        record = {"epoch": epoch, **stats, "train_seconds": t1 - t0, "eval_seconds": t2 - t1, "dev": dev_metrics}
        history.append(record)
        if env.is_main:
            log_epoch(out, record)
        # every rank scores the same gathered results, so every rank takes the same decision
        if best is None or _score(dev_metrics, task.primary_metric) > _score(best["dev"], task.primary_metric):
            best = record
            if env.is_main:
                model.save_pretrained(out / "best")
                tokenizer.save_pretrained(out / "best")
        if steps_done >= total_steps:
            break
    D.barrier(env)  # the best checkpoint is on disk before any rank reads it

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
