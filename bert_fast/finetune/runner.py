"""The fine-tuning run: read the splits, train with the paper's recipe, evaluate each epoch, keep the best.

Defaults (Devlin et al., 2019, appendix A.3): AdamW with weight decay 0.01 and eps 1e-6, learning rate 3e-5
(the paper searches 5e-5, 3e-5, 2e-5), batch 32, 3 epochs, linear warmup over the first 10% of the steps then
linear decay, gradient clipping at 1.0, dropout 0.1 (the checkpoint's), bf16 autocast on a GPU.

Output folder: best/ (the best epoch's model and tokenizer, a Hugging Face folder), predictions_<split>.* of the
best model, metrics.jsonl (one line per epoch, written as it goes) and metrics.json (the whole run).
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
    batch_size: int = 32
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
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
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
def predict(model, task: Task, split: Split, batch_size: int, precision: Precision) -> list:
    """Every feature's result, in order. Batches are formed by length so padding stays small on any path."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(split.features)), key=lambda i: sequence_length(split.features[i]))
    results = [None] * len(order)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        features = [split.features[i] for i in chosen]
        batch = _to(task.collate(features, training=False), device)
        with precision.autocast():
            output = model(**batch)
        for i, result in zip(chosen, task.outputs(output, batch, features)):
            results[i] = result
    return results


def evaluate(model, task: Task, split: Split, cfg: FinetuneConfig, precision: Precision):
    results = predict(model, task, split, cfg.eval_batch_size, precision)
    return task.score(split, results)


def train_epoch(model, task: Task, features: list[dict], optimizer, schedule, precision: Precision,
                cfg: FinetuneConfig, generator: torch.Generator, max_steps: int | None) -> dict:
    """One pass over the shuffled training features (or max_steps of it). Returns loss, steps, tokens."""
    from tqdm.auto import tqdm

    model.train()
    device = next(model.parameters()).device
    order = torch.randperm(len(features), generator=generator).tolist()
    starts = range(0, len(order), cfg.batch_size)
    if max_steps is not None:
        starts = starts[:max_steps]
    losses, tokens = [], 0
    for start in tqdm(starts, desc="train", leave=False, disable=None):
        chunk = [features[i] for i in order[start:start + cfg.batch_size]]
        batch = task.collate(chunk, training=True)
        tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync per step
        batch = _to(batch, device)
        with precision.autocast():
            loss = model(**batch).loss
        precision.backward(loss)
        _, stepped = precision.step(optimizer, model.parameters(), cfg.max_grad_norm)
        optimizer.zero_grad(set_to_none=True)
        if stepped:
            schedule.step()
        losses.append(loss.detach())
    mean_loss = float(torch.stack(losses).float().mean()) if losses else float("nan")
    return {"train_loss": mean_loss, "steps": len(losses), "train_tokens": tokens}


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


def finetune(cfg: FinetuneConfig) -> dict:
    """Run one fine-tuning job; returns what metrics.json holds."""
    generator = set_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = Precision(cfg.precision, device) if cfg.precision else Precision.default(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    issues = Issues()

    tokenizer = BertTokenizer.from_pretrained(cfg.model)
    task = TASKS[cfg.task](cfg, tokenizer, issues, model_config=read_config(cfg.model))
    train = task.load(cfg.train, "train")
    dev = task.load(cfg.dev, "dev")
    test = task.load(cfg.test, "test") if cfg.test else None
    for split in (s for s in (train, dev, test) if s is not None):
        split.features = task.encode(split, training=split is train)
    issues.log()

    model = task.model_class.from_pretrained(cfg.model, impl=cfg.impl, **task.model_overrides()).to(device)
    steps_per_epoch = math.ceil(len(train.features) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = build_optimizer(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = linear_schedule(optimizer, int(cfg.warmup * total_steps), total_steps)

    history, best, steps_done = [], None, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        stats = train_epoch(model, task, train.features, optimizer, schedule, precision, cfg, generator,
                            max_steps=total_steps - steps_done)
        _sync(device)
        t1 = time.perf_counter()
        dev_metrics, _ = evaluate(model, task, dev, cfg, precision)
        _sync(device)
        t2 = time.perf_counter()
        steps_done += stats["steps"]
        record = {"epoch": epoch, **stats, "train_seconds": t1 - t0, "eval_seconds": t2 - t1, "dev": dev_metrics}
        history.append(record)
        log_epoch(out, record)
        if best is None or _score(dev_metrics, task.primary_metric) > _score(best["dev"], task.primary_metric):
            best = record
            model.save_pretrained(out / "best")
            tokenizer.save_pretrained(out / "best")
        if steps_done >= total_steps:
            break

    # The best epoch's checkpoint, read back: its dev metrics must be the ones recorded (and SQuAD v2 tunes its
    # threshold on them for the test set).
    model = task.model_class.from_pretrained(out / "best", impl=cfg.impl).to(device)
    summary = {"task": cfg.task, "config": _json_ready(asdict(cfg)), "device": str(device),
               "precision": precision.mode, "impl": resolve(cfg.impl, device).name,
               "primary_metric": task.primary_metric, "epochs": history, "best_epoch": best["epoch"]}
    summary["dev"], dev_predictions = evaluate(model, task, dev, cfg, precision)
    task.write_predictions(dev, dev_predictions, out)
    if test is not None:
        t0 = time.perf_counter()
        summary["test"], test_predictions = evaluate(model, task, test, cfg, precision)
        summary["test_seconds"] = time.perf_counter() - t0
        task.write_predictions(test, test_predictions, out)
    summary["train_seconds"] = sum(r["train_seconds"] for r in history)
    summary["warnings"] = issues.summary()
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
