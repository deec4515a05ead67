"""BERT pretraining (masked LM + next sentence prediction): `pretrain` builds a `Pretrainer` and calls `train`.

One process or many under torchrun (DDP, or FSDP as an option). Mixed precision through `Precision`: bf16
autocast with fp32 master weights by default on CUDA, fp16 with a GradScaler, or fp32. AdamW (fused on CUDA)
or LAMB; weight decay except biases and LayerNorm; linear warmup then linear decay over all steps of both
phases; gradient clipping; gradient accumulation. An optional second phase continues at a longer sequence
length (the paper's 128 then 512).

Exact resume: a checkpoint holds the model (a Hugging Face folder that transformers' BertForPreTraining loads,
with the tokenizer), the optimizer, scheduler and scaler states, every rank's RNG states and the step; batches
are a function of the step (see data/loader.py), so a resumed run continues with the losses the uninterrupted
run would have had (bitwise on the CPU in fp32).

Run folder: config.toml (resolved), tokenizer/, metrics.jsonl, checkpoints/step-N/, model/ (final, HF format),
summary.json.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import load_state_into, read_state_dict
from ..config import BertConfig
from ..data.loader import PretrainingBatches, make_loader, micro_batch_indices
from ..data.masking import MaskingSettings
from ..data.prepare import cached_store, cached_tokenizer
from ..data.store import ExampleSettings
from ..devices import resolve_device
from ..errors import DataError, ResumeError, RunInterrupted, SettingError
from ..modeling import BertForMaskedLM, BertForPreTraining
from ..tokenizer import BertTokenizer
from . import distributed as D
from .capture import CapturedStep
from .checkpointing import CheckpointManager
from .config import PretrainConfig
from .flops import peak_flops, train_flops_per_token
from .metrics import MetricsLogger, Progress
from .objective import OBJECTIVES, PretrainingObjective
from .optim import build_optimizer, linear_schedule
from .packing import check_packing, training_batches
from .precision import Precision
from .profiling import StepProfiler
from .rng import rng_state, seed_everything
from .runs import STATE_FILE, accumulation_steps, restore_rng, run_folder, state_file

logger = logging.getLogger("bert_fast")

# What a run leaves in its folder that another run must not silently write over.
RUN_OUTPUTS = ("metrics.jsonl", "checkpoints", "model", "summary.json", "tensorboard", "profile")


@dataclass
class Phase:
    index: int
    seq_len: int
    start: int  # first global step
    steps: int
    batch_size: int  # examples per optimizer step, all ranks
    micro_batch_size: int  # per rank per forward
    accumulation: int
    store: Path | None = None

    @property
    def end(self) -> int:
        return self.start + self.steps


def plan_phases(config: PretrainConfig, world_size: int) -> list[Phase]:
    t, p2 = config.train, config.phase2
    specs = [(config.data.seq_len, t.steps, t.batch_size, t.micro_batch_size)]
    if p2.steps > 0:
        specs.append((p2.seq_len, p2.steps, p2.batch_size or t.batch_size, p2.micro_batch_size or t.micro_batch_size))
    phases, start = [], 0
    for i, (seq_len, steps, batch, micro) in enumerate(specs):
        if steps < 1:
            raise SettingError(f"phase {i + 1} needs at least one step, got {steps}")
        accumulation = accumulation_steps(batch, micro, world_size)
        phases.append(Phase(i, seq_len, start, steps, batch, batch // (accumulation * world_size), accumulation))
        start += steps
    return phases


def _config_diff(old: dict, new: dict, keys) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


@dataclass
class Interval:
    """The steps since the last log line: loss sums on the device (read only when logging), time, skips."""

    sums: torch.Tensor  # (4,) float64: loss, mlm loss, nsp loss, real tokens
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    skipped: int = 0

    @classmethod
    def on(cls, device: torch.device) -> Interval:
        return cls(torch.zeros(4, dtype=torch.float64, device=device))


class Pretrainer:
    """One pretraining run, complete when built: its data, model, optimizer and schedule, at the step it
    starts from (0, or the newest checkpoint's when resuming)."""

    # Settings a resumed run must share with its checkpoint: they fix what each step's batch holds.
    _DATA_KEYS = ("corpus", "tokenizer", "vocab_size", "lowercase", "split_sentences", "seq_len", "short_seq_prob",
                  "dupe_factor", "eval_fraction", "shard_examples", "mlm_probability", "whole_word_masking",
                  "packing", "max_examples_per_row")

    def __init__(self, config: PretrainConfig, env: D.DistEnv, run_dir: Path, resume: bool = False):
        t = config.train
        self.config, self.env, self.run_dir, self.resume = config, env, run_dir, resume
        self.device = resolve_device(t.device, env.local_rank)
        self.phases = plan_phases(config, env.world_size)
        self.total_steps = self.phases[-1].end
        self.stop = min(t.stop_at, self.total_steps) if t.stop_at else self.total_steps

        # Data: tokenizer, example stores (built once per node and cached), masking.
        self.tokenizer = self._load_tokenizer()
        self._build_stores()
        self.masking = MaskingSettings(config.data.mlm_probability, whole_word=config.data.whole_word_masking)
        tok = self.tokenizer
        self.special_ids = {"pad": tok.pad_token_id, "unk": tok.unk_token_id, "cls": tok.cls_token_id,
                            "sep": tok.sep_token_id, "mask": tok.mask_token_id}

        # Model, optimizer, schedule, precision: the same initial weights on every rank.
        seed_everything(t.seed)
        self.model = self._build_model()
        torch.manual_seed(t.seed + 1000 * env.rank)  # each rank its own dropout masks
        self.objective = PretrainingObjective(self.model, t.objective)
        self.wrapped = D.wrap_model(self.objective, env, t.distributed, self.device,
                                    units=list(self.model.base_model.encoder.layer))
        self.sharded = D.is_sharded(self.wrapped)
        self.optimizer = build_optimizer(self.model, t.optimizer, t.lr, t.weight_decay, tuple(t.betas), t.eps,
                                         capturable=t.capture)
        warmup = t.warmup_steps if t.warmup_steps >= 0 else round(t.warmup_ratio * self.total_steps)
        self.scheduler = linear_schedule(self.optimizer, warmup, self.total_steps)
        self.precision = (Precision.default(self.device) if t.precision == "auto"
                          else Precision(t.precision, self.device))
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", t.keep_checkpoints)
        self.captured = self._captured_step() if t.capture else None

        self.step = self._restore_newest_checkpoint() if resume else 0
        self.start_step = self.step
        self.progress = Progress(self.stop, self.step, enabled=t.progress and env.is_main)
        self.profiler = StepProfiler(t.profile_steps, run_dir / "profile", self.device, enabled=env.is_main)
        # last: TensorBoard's writer creates its event file at once, and a run that fails before this writes none
        self.metrics = MetricsLogger(run_dir / "metrics.jsonl", run_dir / "tensorboard" if t.tensorboard else None,
                                     enabled=env.is_main)
        self.first_record: dict | None = None  # the first and last training log records of this invocation
        self.last_record: dict | None = None
        self.last_eval: dict = {}
        self.tokens_seen = 0

    # --- the run ---------------------------------------------------------------------------------------

    def train(self) -> dict:
        """Train from `self.step` to the end (or train.stop_at); returns the run's summary."""
        self._write_run_files()
        self.profiler.start()
        started = time.perf_counter()
        try:
            for phase in self.phases:
                if self.step < min(phase.end, self.stop):
                    self._train_phase(phase)
        except KeyboardInterrupt:
            raise RunInterrupted(self._interrupted()) from None
        finally:
            self.profiler.close()
            self.progress.close()
        seconds = time.perf_counter() - started
        if self.finished and self.env.is_main:
            self._save_final_model()
        D.barrier(self.env)
        self.metrics.close()
        return self._summary(seconds)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def _train_phase(self, phase: Phase) -> None:
        t = self.config.train
        batches = self._batches(phase)
        flops_per_token = train_flops_per_token(self.model, self.model.config.num_hidden_layers,
                                                self.model.config.hidden_size, phase.seq_len)
        peak = peak_flops(self.device, self.precision.mode, t.peak_tflops)
        mfu_of_tokens_per_s = flops_per_token / (peak * self.env.world_size) if peak else None
        interval = Interval.on(self.device)
        while self.step < min(phase.end, self.stop):
            grad_norm = self._train_step(phase, batches, interval)
            self.step += 1
            self.profiler.step()
            end_of_phase = self.step in (self.stop, phase.end)  # of the run, or of a phase
            if self.step % t.log_every == 0 or end_of_phase:
                self._log_interval(phase, interval, grad_norm, mfu_of_tokens_per_s)
                interval = Interval.on(self.device)
            if (t.eval_every and self.step % t.eval_every == 0) or end_of_phase:
                self._evaluate_and_log(phase)
            if (t.checkpoint_every and self.step % t.checkpoint_every == 0) or end_of_phase:
                self._save_checkpoint()

    def _train_step(self, phase: Phase, batches, interval: Interval) -> torch.Tensor:
        """One optimizer step over `phase.accumulation` micro-batches; returns the gradient norm (on the device).
        With train.capture, a micro-batch that has a bucket runs as its bucket's captured step (the last one of a
        step with the optimizer step inside); one without runs eagerly, into the same persistent gradients."""
        grad_norm = None
        for a in range(phase.accumulation):
            last = a == phase.accumulation - 1
            with self.profiler.range("data"):
                batch = next(batches)
                static = self._static_batch(batch, phase) if self.captured is not None else None
                if static is None:
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            if static is not None:
                out, grad_norm = self.captured(static, step_optimizer=last, loss_scale=1 / phase.accumulation)
                real_tokens = batch["attention_mask"].sum()
            else:
                with D.no_sync(self.wrapped, skip=not last):
                    with self.precision.autocast(), self.profiler.range("forward"):
                        out = self.wrapped(**batch)
                    with self.profiler.range("backward"):
                        self.precision.backward(out["loss"] / phase.accumulation)
                real_tokens = batch["attention_mask"].sum()
                grad_norm = None
            nsp_loss = out.get("nsp_loss")
            nsp_loss = nsp_loss if nsp_loss is not None else torch.zeros((), device=self.device)
            interval.sums += torch.stack([out["loss"].detach().double(), out["mlm_loss"].detach().double(),
                                          nsp_loss.detach().double(), real_tokens.to(self.device).double()])
        if grad_norm is not None:  # the last micro-batch's graph stepped the optimizer
            self.scheduler.step()
            interval.steps += 1
            return grad_norm
        with self.profiler.range("optimizer"):
            clip = (lambda m: D.clip_grad_norm(self.model.parameters(), m)) if self.sharded else None
            grad_norm, stepped = self.precision.step(self.optimizer, self.model.parameters(),
                                                     self.config.train.max_grad_norm, clip)
            if stepped:
                self.scheduler.step()
            else:
                interval.skipped += 1
            # captured graphs add into the gradients they were captured with: zero them in place
            self.optimizer.zero_grad(set_to_none=self.captured is None)
        interval.steps += 1
        return grad_norm

    # --- captured steps (train.capture) ----------------------------------------------------------------

    def _captured_step(self) -> CapturedStep:
        t = self.config.train
        if self.env.enabled:
            raise SettingError("train.capture runs one process: DDP's gradient hooks cannot run inside a CUDA graph")
        if self.precision.mode == "fp16":
            raise SettingError("train.capture takes bf16 or fp32: fp16's loss scaler reads its overflow flag on the "
                               "host")
        if self.config.data.packing != "none":
            raise SettingError("train.capture buckets unpacked batches: set data.packing = \"none\"")
        if not t.max_grad_norm:
            raise SettingError("train.capture clips inside the graph: set train.max_grad_norm > 0")
        autocast = torch.bfloat16 if self.precision.mode == "bf16" else None
        return CapturedStep(self.model, self.optimizer, loss_of=_pretraining_losses, max_grad_norm=t.max_grad_norm,
                            autocast_dtype=autocast)

    def _static_batch(self, batch: dict, phase: Phase):
        """A loader's micro-batch packed on the host into its bucket (None: it has none, run it eagerly), with the
        inputs the model takes: no NSP labels for the MLM objective, segment A only for one-segment families."""
        batch = dict(batch)
        if not self.objective.has_nsp:
            batch.pop("next_sentence_label")
        if not self.objective.segments:
            batch["token_type_ids"] = torch.zeros_like(batch["token_type_ids"])
        return self.captured.static_batch(batch, self.tokenizer.pad_token_id, mlm=True, max_width=phase.seq_len)

    def _batches(self, phase: Phase):
        """This rank's micro-batches from `self.step` to the end of the phase (or the stop)."""
        # unpacked or packed micro-batches (training/packing.py)
        dataset = training_batches(self.config, phase, self.masking, self.special_ids, self.tokenizer.vocab_size,
                                   self.env.world_size, log=self.env.is_main)
        indices = micro_batch_indices(self.step - phase.start, min(phase.end, self.stop) - phase.start,
                                      phase.accumulation, self.env.world_size, self.env.rank)
        workers = self.config.data.num_workers
        if workers < 0:
            workers = 2 if self.device.type == "cuda" else 1
        return iter(make_loader(dataset, indices, workers, pin_memory=self.device.type == "cuda"))

    # --- logging and evaluation ------------------------------------------------------------------------

    def _log_interval(self, phase: Phase, interval: Interval, grad_norm: torch.Tensor,
                      mfu_of_tokens_per_s: float | None) -> None:
        loss, mlm, nsp, tokens = D.all_reduce_sum(interval.sums.clone(), self.env).tolist()
        micro = interval.steps * phase.accumulation * self.env.world_size
        tokens_per_s = tokens / (time.perf_counter() - interval.started)
        record = {"loss": loss / micro, "mlm_loss": mlm / micro, "nsp_loss": nsp / micro,
                  "lr": float(self.optimizer.param_groups[0]["lr"]), "grad_norm": float(grad_norm),
                  "tokens_per_s": tokens_per_s, "seq_len": phase.seq_len,
                  "mfu": tokens_per_s * mfu_of_tokens_per_s if mfu_of_tokens_per_s else None,
                  "skipped_steps": interval.skipped}
        if not self.objective.has_nsp:
            del record["nsp_loss"]
        if self.precision.scaler is not None:
            record["loss_scale"] = self.precision.scaler.get_scale()
        self.metrics.log(self.step, "train", record)
        self.first_record = self.first_record or record
        self.last_record = record
        self.tokens_seen += int(tokens)
        # loss= is the MLM + NSP sum, as in the paper's objective; metrics.jsonl has each part.
        self.progress.update(self.step, loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                             tok_s=f"{tokens_per_s:,.0f}",
                             mfu=f"{record['mfu']:.1%}" if record["mfu"] is not None else None)

    def _evaluate_and_log(self, phase: Phase) -> None:
        self.last_eval = self.evaluate(phase)
        if self.last_eval:
            self.metrics.log(self.step, "eval", self.last_eval)
            ev = self.last_eval
            nsp = f" nsp_acc {ev['nsp_accuracy']:.3f}" if "nsp_accuracy" in ev else ""
            self.progress.write(f"step {self.step}: eval mlm_acc {ev['mlm_accuracy']:.3f} ppl "
                                f"{ev['perplexity']:.1f}{nsp}")

    @torch.no_grad()
    def evaluate(self, phase: Phase) -> dict:
        """MLM accuracy / loss / perplexity and NSP accuracy / loss on the held-out split (fixed masks)."""
        dataset = PretrainingBatches(phase.store, "eval", phase.micro_batch_size, self.config.train.seed,
                                     self.masking, self.special_ids, self.tokenizer.vocab_size, shuffle=False)
        n = min(len(dataset), self.config.train.eval_batches)
        if n == 0:
            return {}
        W, r = self.env.world_size, self.env.rank
        # Every rank runs the same number of forwards (FSDP needs it); padding batches get weight 0.
        indices = [i * W + r for i in range(math.ceil(n / W))]
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        runner = self.wrapped if self.sharded else self.objective  # sharded weights are gathered by the wrapper
        devices = [self.device] if self.device.type == "cuda" else []
        self.objective.eval()
        with torch.random.fork_rng(devices=devices):  # evaluation must not move the training RNG
            for j in indices:
                batch = {k: v.to(self.device) for k, v in dataset[min(j, n - 1)].items()}
                weight = 1.0 if j < n else 0.0
                with self.precision.autocast():
                    out = runner(**batch, return_logits=True)
                n_masked = out["mlm_labels"].numel()
                n_seq = batch["next_sentence_label"].numel()
                nsp = torch.zeros(2, dtype=torch.float64, device=self.device)
                if out["nsp_loss"] is not None:
                    nsp = torch.stack([out["nsp_loss"].double() * n_seq,
                                       (out["nsp_logits"].argmax(-1) == batch["next_sentence_label"]).sum().double()])
                sums += weight * torch.stack([
                    out["mlm_loss"].double() * n_masked,
                    (out["mlm_logits"].argmax(-1) == out["mlm_labels"]).sum().double(),
                    torch.tensor(n_masked, dtype=torch.float64, device=self.device),
                    nsp[0], nsp[1],
                    torch.tensor(n_seq, dtype=torch.float64, device=self.device),
                ])
        self.objective.train()
        if self.sharded:  # FSDP keeps the root's weights gathered after a forward without backward
            self.wrapped.reshard()
        mlm_loss, mlm_ok, masked, nsp_loss, nsp_ok, seqs = D.all_reduce_sum(sums, self.env).tolist()
        mlm_loss /= masked
        result = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_ok / masked, "perplexity": math.exp(min(mlm_loss, 50.0)),
                  "nsp_loss": nsp_loss / seqs, "nsp_accuracy": nsp_ok / seqs, "examples": int(seqs)}
        if not self.objective.has_nsp:
            del result["nsp_loss"], result["nsp_accuracy"]
        return result

    # --- set-up ----------------------------------------------------------------------------------------

    def _load_tokenizer(self) -> BertTokenizer:
        data = self.config.data
        saved = self.run_dir / "tokenizer"
        if self.resume and (saved / "tokenizer.json").is_file():
            return BertTokenizer.from_pretrained(saved)
        if data.tokenizer:
            return BertTokenizer.from_pretrained(data.tokenizer)
        tokenizer, _ = self._node_first(lambda: cached_tokenizer(
            data.corpus or None, data.vocab_size, data.lowercase, data.cache_dir or None, data.split_sentences))
        return tokenizer

    def _node_first(self, build):
        """Run a cached build on each node's first process, then on the others (which find it in the cache).
        Nodes need not share a file system; where they do, concurrent builds write identical files atomically."""
        result = build() if self.env.local_rank == 0 else None
        D.barrier(self.env)
        return result if self.env.local_rank == 0 else build()

    def _build_stores(self) -> None:
        """The example store of each phase's sequence length (phase.store)."""
        data = self.config.data
        for seq_len in sorted({p.seq_len for p in self.phases}):
            settings = ExampleSettings(seq_len, data.short_seq_prob, data.dupe_factor, data.eval_fraction,
                                       data.shard_examples, self.config.train.seed,
                                       random_next=self.config.train.objective == "mlm_nsp")
            folder = self._node_first(lambda s=settings: cached_store(
                data.corpus or None, self.tokenizer, s, data.cache_dir or None, data.split_sentences))
            for p in self.phases:
                if p.seq_len == seq_len:
                    p.store = folder

    def _build_model(self) -> BertForPreTraining | BertForMaskedLM:
        m, objective = self.config.model, self.config.train.objective
        if objective not in OBJECTIVES:
            raise SettingError(f"train.objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
        if objective == "mlm_nsp" and m.model_type != "bert":
            raise SettingError(f"next sentence prediction is BERT's objective; model_type={m.model_type!r} "
                               "pretrains with --objective mlm")
        # the preset, with any field the [model] section changes
        bert_config = m.bert_config(self.tokenizer.vocab_size, self.tokenizer.pad_token_id)
        longest = max(p.seq_len for p in self.phases)
        positions = bert_config.family.max_sequence_length(bert_config)
        if longest > positions:
            raise SettingError(f"seq_len {longest} exceeds the {positions} positions of max_position_embeddings="
                               f"{bert_config.max_position_embeddings}")
        model_class = BertForPreTraining if objective == "mlm_nsp" else BertForMaskedLM
        model = model_class(bert_config, impl=m.impl, fused_mlm_loss=self.config.train.fused_mlm_loss)
        return model.to(self.device)

    def _write_run_files(self) -> None:
        """The resolved config and the tokenizer; the log cut back to the step the run continues from."""
        if self.env.is_main:
            self.metrics.truncate_after(self.step)
            (self.run_dir / "config.toml").write_text(self.config.to_toml())
            self.tokenizer.save_pretrained(self.run_dir / "tokenizer")

    # --- checkpoints -----------------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        step = self.step
        rng = D.gather_objects(rng_state(), self.env)
        model_state = D.full_parameters(self.model) if self.sharded else None
        optim_state = self._optimizer_state()
        if not self.env.is_main:
            D.barrier(self.env)
            return

        def write(folder: Path) -> None:
            self._save_model(folder / "model", model_state)
            torch.save({
                "format": 1, "step": step, "optimizer": optim_state, "scheduler": self.scheduler.state_dict(),
                "precision": self.precision.state_dict(), "rng": rng, "world_size": self.env.world_size,
                "data_position": {"step": step, "phase": self._phase_of(step),
                                  "micro_batch_sizes": [p.micro_batch_size for p in self.phases]},
                "optimizer_keys": "names" if self.sharded else "indices",
                "config": self.config.to_dict(),
            }, folder / STATE_FILE)

        try:
            path = self.checkpoints.save(step, write)
        finally:
            D.barrier(self.env)
        logger.info("bert_fast: checkpoint %s", path)

    def _optimizer_state(self) -> dict:
        if self.sharded:  # whole tensors, keyed by parameter name (collective)
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _save_model(self, folder: Path, full_parameters: dict | None) -> None:
        model = self.model
        if full_parameters is not None:  # sharded: an unsharded copy on the CPU
            model = type(self.model)(self.model.config, impl="reference")
            D.load_full_parameters(model, full_parameters)
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def _phase_of(self, step: int) -> int:
        return next((p.index for p in self.phases if step < p.end), self.phases[-1].index)

    def _restore_newest_checkpoint(self) -> int:
        """Load the newest checkpoint into the run's objects; returns its step (0 when there is none)."""
        latest = self.checkpoints.latest()
        if latest is None:
            logger.warning("bert_fast: --resume: no checkpoint in %s, starting at step 0", self.checkpoints.folder)
            return 0
        step = self._restore(latest[1])
        logger.warning("bert_fast: resumed from %s at step %d", latest[1], step)
        return step

    def _check_resumable(self, path: Path, state: dict) -> None:
        saved_model = BertConfig.from_json_file(path / "model" / "config.json").to_dict()
        current = self.model.config.to_dict()
        keys = sorted(set(saved_model) | set(current))
        changed = _config_diff(saved_model, current, [k for k in keys if k not in ("architectures", "dtype")])
        if changed:
            raise ResumeError(f"cannot resume from {path}: the model config changed ({'; '.join(changed)}); use the "
                              "original settings, or start a new run with another --out")
        # settings newer than the checkpoint take their defaults
        old, new = PretrainConfig.from_dict(state["config"]).to_dict(), self.config.to_dict()
        changed = _config_diff(old["data"], new["data"], self._DATA_KEYS)
        changed += [f"train.{c}" for c in _config_diff(old["train"], new["train"],
                                                       ("batch_size", "micro_batch_size", "batch_tokens", "seed",
                                                        "objective"))]
        if changed:
            raise ResumeError(f"cannot resume from {path}: settings that decide each step's data changed "
                              f"({'; '.join(changed)})")
        micro = [p.micro_batch_size for p in self.phases]
        if state["data_position"]["micro_batch_sizes"] != micro:
            raise ResumeError(
                f"cannot resume from {path}: its micro-batches held {state['data_position']['micro_batch_sizes']} "
                f"examples, this run's hold {micro} (another number of ranks); set train.micro_batch_size to the "
                "checkpoint's value to continue on this number of ranks")
        if (state["optimizer_keys"] == "names") != self.sharded:
            raise ResumeError(f"cannot resume from {path}: it was written {'with' if not self.sharded else 'without'} "
                              "FSDP sharding; resume with the same train.distributed setting")

    def _restore(self, path: Path) -> int:
        state = torch.load(state_file(path), map_location="cpu", weights_only=False)
        self._check_resumable(path, state)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            whole = type(self.model)(self.model.config, impl="reference")
            load_state_into(whole, read_state_dict(path / "model"))
            D.load_full_parameters(self.model, D.full_parameters(whole))
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            load_state_into(self.model, read_state_dict(path / "model"))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["precision"])
        restore_rng(state["rng"], self.env)
        return int(state["step"])

    def _save_final_model(self) -> None:
        """The final model as a Hugging Face folder: a copy of the last checkpoint's model (written atomically)."""
        latest = self.checkpoints.latest()
        final = self.run_dir / "model"
        tmp = self.run_dir / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(latest[1] / "model", tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)

    # --- what the run reports --------------------------------------------------------------------------

    def _interrupted(self) -> str:
        """Ctrl-C: where the run stands and how to continue it."""
        latest = self.checkpoints.latest()
        if latest is None:
            return (f"interrupted at step {self.step}, before the first checkpoint (train.checkpoint_every="
                    f"{self.config.train.checkpoint_every}): there is nothing to resume in {self.run_dir}")
        return (f"interrupted at step {self.step}; the last checkpoint is {latest[1]} (step {latest[0]}). "
                f"Continue with: bert-fast pretrain --out {self.run_dir} --resume")

    def _summary(self, seconds: float) -> dict:
        losses = {f"{which}_{key}": (rec or {}).get(key)
                  for which, rec in (("first", self.first_record), ("last", self.last_record))
                  for key in ("loss", "mlm_loss", "nsp_loss")}
        summary = {
            "run_dir": str(self.run_dir), "start_step": self.start_step, "device": str(self.device),
            "precision": self.precision.mode, "impl": self.model.impl, "world_size": self.env.world_size,
            "model_size": self.config.model.size, "parameters": sum(p.numel() for p in self.model.parameters()),
            "stores": {str(p.seq_len): str(p.store) for p in self.phases},
            "end_step": self.step, "finished": self.finished, **losses, "seconds": seconds,
            "tokens_per_s": self.tokens_seen / seconds if seconds > 0 else None, "eval": self.last_eval,
            "model_dir": str(self.run_dir / "model") if self.finished else None,
            "checkpoint": str(self.checkpoints.path(self.step)),
        }
        if self.env.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _pretraining_losses(model, inputs: dict) -> dict:
    """The losses a captured pretraining step returns: the total it backpropagates and the parts the log shows."""
    out = model(**inputs)
    return {"loss": out.loss, "mlm_loss": getattr(out, "mlm_loss", out.loss), "nsp_loss": getattr(out, "nsp_loss", None)}


def default_run_dir(config: PretrainConfig) -> Path:
    if config.out:
        return Path(config.out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"pretrain-{config.model.size}-{stamp}"


def pretrain(config: PretrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Run (or, with resume, continue) a pretraining run; returns its summary.

    A run folder holding another run is refused unless `resume` continues it or `overwrite` replaces it.
    """
    if config.data.seq_len < 8:
        raise DataError(f"seq_len must be at least 8, got {config.data.seq_len}")
    check_packing(config)
    env = D.init_distributed(resolve_device(config.train.device).type)
    try:
        run_dir = Path(D.broadcast_object(str(default_run_dir(config)), env))
        with run_folder(run_dir, RUN_OUTPUTS, resume, overwrite, is_main=env.is_main):
            D.barrier(env)
            return Pretrainer(config, env, run_dir, resume).train()
    finally:
        D.shutdown(env)
