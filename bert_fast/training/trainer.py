"""BERT pretraining (masked LM + next sentence prediction), read top to bottom in `Pretrainer.run`.

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
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_state_into, read_state_dict
from ..config import BertConfig
from ..data.loader import PretrainingBatches, make_loader, micro_batch_indices
from ..data.masking import MaskingSettings
from ..data.prepare import cached_store, cached_tokenizer
from ..data.store import DataError, ExampleSettings
from ..modeling import BertForPreTraining
from ..tokenizer import BertTokenizer
from . import distributed as D
from .checkpointing import CheckpointManager
from .config import PretrainConfig
from .flops import peak_flops, train_flops_per_token
from .metrics import MetricsLogger, Progress
from .objective import PretrainingObjective
from .optim import build_optimizer, linear_schedule
from .packing import check_packing, training_batches
from .precision import Precision
from .profiling import StepProfiler
from .rng import rng_state, seed_everything, set_rng_state

logger = logging.getLogger("bert_fast")

STATE_FILE = "trainer_state.pt"


class ResumeError(RuntimeError):
    """A checkpoint that this run cannot continue from (a changed model or data setting)."""


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
            raise ValueError(f"phase {i + 1} needs at least one step, got {steps}")
        micro = micro or batch // world_size
        if micro < 1 or batch % (micro * world_size):
            raise ValueError(f"batch_size={batch} is not a multiple of micro_batch_size={micro} x {world_size} "
                             "ranks")
        phases.append(Phase(i, seq_len, start, steps, batch, micro, batch // (micro * world_size)))
        start += steps
    return phases


def _device(config: PretrainConfig, env: D.DistEnv) -> torch.device:
    name = config.train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank)
    return device


def _config_diff(old: dict, new: dict, keys) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class Pretrainer:
    def __init__(self, config: PretrainConfig, resume: bool = False):
        self.config = config
        self.resume = resume

    # --- set-up ----------------------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self.config.out:
            return Path(self.config.out)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"pretrain-{self.config.model.size}-{stamp}"

    def _check_run_dir(self, run_dir: Path) -> None:
        used = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
        if used and not self.resume:
            raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
                                  "--out (nothing was overwritten)")

    def _tokenizer(self, run_dir: Path) -> BertTokenizer:
        data = self.config.data
        saved = run_dir / "tokenizer"
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

    def _stores(self, phases: list[Phase], tokenizer: BertTokenizer) -> None:
        data = self.config.data
        for seq_len in sorted({p.seq_len for p in phases}):
            settings = ExampleSettings(seq_len, data.short_seq_prob, data.dupe_factor, data.eval_fraction,
                                       data.shard_examples, self.config.train.seed)
            folder = self._node_first(lambda s=settings: cached_store(
                data.corpus or None, tokenizer, s, data.cache_dir or None, data.split_sentences))
            for p in phases:
                if p.seq_len == seq_len:
                    p.store = folder

    def _build_model(self, tokenizer: BertTokenizer) -> BertForPreTraining:
        m = self.config.model
        bert_config = m.bert_config(tokenizer.vocab_size, tokenizer.pad_token_id)  # the preset, any field changed
        longest = max(p.seq_len for p in self.phases)
        if longest > bert_config.max_position_embeddings:
            raise ValueError(f"seq_len {longest} exceeds the model's max_position_embeddings="
                             f"{bert_config.max_position_embeddings}")
        fused_loss = self.config.train.fused_mlm_loss
        return BertForPreTraining(bert_config, impl=m.impl, fused_mlm_loss=fused_loss).to(self.device)

    # --- checkpoints -----------------------------------------------------------------------------------

    # Settings a resumed run must share with its checkpoint: they fix what each step's batch holds.
    _DATA_KEYS = ("corpus", "tokenizer", "vocab_size", "lowercase", "split_sentences", "seq_len", "short_seq_prob",
                  "dupe_factor", "eval_fraction", "shard_examples", "mlm_probability", "whole_word_masking",
                  "packing", "max_examples_per_row")

    def _save_checkpoint(self, step: int) -> None:
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
            model = BertForPreTraining(self.model.config, impl="reference")
            D.load_full_parameters(model, full_parameters)
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def _phase_of(self, step: int) -> int:
        return next((p.index for p in self.phases if step < p.end), self.phases[-1].index)

    def _restore(self, path: Path) -> int:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        saved_model = BertConfig.from_json_file(path / "model" / "config.json").to_dict()
        current = self.model.config.to_dict()
        keys = sorted(set(saved_model) | set(current))
        changed = _config_diff(saved_model, current, [k for k in keys if k not in ("architectures", "dtype")])
        if changed:
            raise ResumeError(f"cannot resume from {path}: the model config changed ({'; '.join(changed)}); use the "
                              "original settings, or start a new run with another --out")
        old = PretrainConfig.from_dict(state["config"]).to_dict()  # settings newer than the checkpoint: defaults
        changed = _config_diff(old["data"], self.config.to_dict()["data"], self._DATA_KEYS)
        changed += [f"train.{c}" for c in _config_diff(old["train"], self.config.to_dict()["train"],
                                                       ("batch_size", "micro_batch_size", "batch_tokens", "seed"))]
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
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            whole = BertForPreTraining(self.model.config, impl="reference")
            load_state_into(whole, read_state_dict(path / "model"))
            D.load_full_parameters(self.model, D.full_parameters(whole))
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            load_state_into(self.model, read_state_dict(path / "model"))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["precision"])
        rng = state["rng"]
        if len(rng) == self.env.world_size:
            set_rng_state(rng[self.env.rank])
        else:
            logger.warning("bert_fast: the checkpoint was written by %d ranks, this run has %d: RNG states (dropout) "
                           "are not restored, so losses will differ slightly from an uninterrupted run", len(rng),
                           self.env.world_size)
        return int(state["step"])

    # --- evaluation ------------------------------------------------------------------------------------

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
                sums += weight * torch.stack([
                    out["mlm_loss"].double() * n_masked,
                    (out["mlm_logits"].argmax(-1) == out["mlm_labels"]).sum().double(),
                    torch.tensor(n_masked, dtype=torch.float64, device=self.device),
                    out["nsp_loss"].double() * n_seq,
                    (out["nsp_logits"].argmax(-1) == batch["next_sentence_label"]).sum().double(),
                    torch.tensor(n_seq, dtype=torch.float64, device=self.device),
                ])
        self.objective.train()
        if self.sharded:  # FSDP keeps the root's weights gathered after a forward without backward
            self.wrapped.reshard()
        mlm_loss, mlm_ok, masked, nsp_loss, nsp_ok, seqs = D.all_reduce_sum(sums, self.env).tolist()
        mlm_loss /= masked
        return {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_ok / masked, "perplexity": math.exp(min(mlm_loss, 50.0)),
                "nsp_loss": nsp_loss / seqs, "nsp_accuracy": nsp_ok / seqs, "examples": int(seqs)}

    # --- the run ---------------------------------------------------------------------------------------

    def run(self) -> dict:
        config, t = self.config, self.config.train
        probe = _device(config, D.DistEnv())
        self.env = env = D.init_distributed(probe.type)
        try:
            return self._run(config, t, env)
        finally:
            D.shutdown(env)

    def _run(self, config: PretrainConfig, t, env: D.DistEnv) -> dict:
        self.device = device = _device(config, env)
        run_dir = Path(D.broadcast_object(str(self._run_dir()), env))
        self.run_dir = run_dir
        if env.is_main:
            self._check_run_dir(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(env)

        # Data: tokenizer, example stores (built once, by rank 0, cached), masking.
        self.phases = phases = plan_phases(config, env.world_size)
        self.tokenizer = tokenizer = self._tokenizer(run_dir)
        self._stores(phases, tokenizer)
        self.masking = MaskingSettings(config.data.mlm_probability, whole_word=config.data.whole_word_masking)
        self.special_ids = {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id,
                            "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
                            "mask": tokenizer.mask_token_id}

        # Model, optimizer, schedule, precision: the same initial weights on every rank.
        seed_everything(t.seed)
        self.model = model = self._build_model(tokenizer)
        torch.manual_seed(t.seed + 1000 * env.rank)  # each rank its own dropout masks
        self.objective = PretrainingObjective(model)
        self.wrapped = D.wrap_model(self.objective, env, t.distributed, device, units=list(model.bert.encoder.layer))
        self.sharded = D.is_sharded(self.wrapped)
        self.optimizer = build_optimizer(model, t.optimizer, t.lr, t.weight_decay, tuple(t.betas), t.eps)
        total_steps = phases[-1].end
        warmup = t.warmup_steps if t.warmup_steps >= 0 else round(t.warmup_ratio * total_steps)
        self.scheduler = linear_schedule(self.optimizer, warmup, total_steps)
        precision = "bf16" if t.precision == "auto" and device.type == "cuda" else t.precision
        self.precision = Precision("fp32" if precision == "auto" else precision, device)
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", t.keep_checkpoints)

        step = 0
        latest = self.checkpoints.latest() if self.resume else None
        if latest is not None:
            step = self._restore(latest[1])
            logger.warning("bert_fast: resumed from %s at step %d", latest[1], step)
        elif self.resume:
            logger.warning("bert_fast: --resume: no checkpoint in %s, starting at step 0", run_dir / "checkpoints")

        metrics = MetricsLogger(run_dir / "metrics.jsonl", run_dir / "tensorboard" if t.tensorboard else None,
                                enabled=env.is_main)
        if env.is_main:
            metrics.truncate_after(step)
            (run_dir / "config.toml").write_text(config.to_toml())
            tokenizer.save_pretrained(run_dir / "tokenizer")

        stop = min(t.stop_at, total_steps) if t.stop_at else total_steps
        progress = Progress(stop, step, enabled=t.progress and env.is_main)
        summary = {"run_dir": str(run_dir), "start_step": step, "device": str(device),
                   "precision": self.precision.mode, "impl": model.impl, "world_size": env.world_size,
                   "model_size": config.model.size, "parameters": sum(p.numel() for p in model.parameters()),
                   "stores": {str(p.seq_len): str(p.store) for p in phases}}
        first = last = None  # the first and last training records
        started, tokens_seen = time.perf_counter(), 0
        last_eval = {}
        workers = config.data.num_workers if config.data.num_workers >= 0 else (2 if device.type == "cuda" else 1)
        profiler = StepProfiler(t.profile_steps, run_dir / "profile", device, enabled=env.is_main)

        for phase in phases:
            if step >= phase.end or step >= stop:
                continue
            # Unpacked or packed micro-batches (training/packing.py).
            dataset = training_batches(config, phase, self.masking, self.special_ids, tokenizer.vocab_size,
                                       env.world_size, log=env.is_main)
            indices = micro_batch_indices(step - phase.start, min(phase.end, stop) - phase.start, phase.accumulation,
                                          env.world_size, env.rank)
            batches = iter(make_loader(dataset, indices, workers, pin_memory=device.type == "cuda"))
            flops_per_token = train_flops_per_token(model, model.config.num_hidden_layers, model.config.hidden_size,
                                                    phase.seq_len)
            peak = peak_flops(device, self.precision.mode, t.peak_tflops)
            sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, mlm, nsp, real tokens
            interval_start, interval_steps, skipped = time.perf_counter(), 0, 0

            while step < min(phase.end, stop):
                for a in range(phase.accumulation):
                    with profiler.range("data"):
                        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                    with D.no_sync(self.wrapped, skip=a < phase.accumulation - 1):
                        with self.precision.autocast(), profiler.range("forward"):
                            out = self.wrapped(**batch)
                        with profiler.range("backward"):
                            self.precision.backward(out["loss"] / phase.accumulation)
                    sums += torch.stack([out["loss"].detach().double(), out["mlm_loss"].detach().double(),
                                         out["nsp_loss"].detach().double(),
                                         batch["attention_mask"].sum().double()])
                with profiler.range("optimizer"):
                    clip = (lambda m: D.clip_grad_norm(model.parameters(), m)) if self.sharded else None
                    grad_norm, stepped = self.precision.step(self.optimizer, model.parameters(), t.max_grad_norm,
                                                             clip)
                    if stepped:
                        self.scheduler.step()
                    else:
                        skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                step += 1
                interval_steps += 1
                profiler.step()

                if step % t.log_every == 0 or step == stop or step == phase.end:
                    totals = D.all_reduce_sum(sums.clone(), env).tolist()
                    micro = interval_steps * phase.accumulation * env.world_size
                    elapsed = time.perf_counter() - interval_start
                    tokens_per_s = totals[3] / elapsed
                    record = {"loss": totals[0] / micro, "mlm_loss": totals[1] / micro, "nsp_loss": totals[2] / micro,
                              "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                              "tokens_per_s": tokens_per_s, "seq_len": phase.seq_len,
                              "mfu": tokens_per_s * flops_per_token / (peak * env.world_size) if peak else None,
                              "skipped_steps": skipped}
                    if self.precision.scaler is not None:
                        record["loss_scale"] = self.precision.scaler.get_scale()
                    metrics.log(step, "train", record)
                    first = first or record
                    last = record
                    tokens_seen += int(totals[3])
                    progress.update(step, loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                    tok_s=f"{tokens_per_s:,.0f}",
                                    mfu=f"{record['mfu']:.1%}" if record["mfu"] is not None else None)
                    sums.zero_()
                    interval_start, interval_steps, skipped = time.perf_counter(), 0, 0

                final = step == stop or step == phase.end  # end of the run, or of a phase
                if (t.eval_every and step % t.eval_every == 0) or final:
                    last_eval = self.evaluate(phase)
                    if last_eval:
                        metrics.log(step, "eval", last_eval)
                        progress.write(f"step {step}: eval mlm_acc {last_eval['mlm_accuracy']:.3f} ppl "
                                       f"{last_eval['perplexity']:.1f} nsp_acc {last_eval['nsp_accuracy']:.3f}")
                if (t.checkpoint_every and step % t.checkpoint_every == 0) or final:
                    self._save_checkpoint(step)

        profiler.close()
        progress.close()
        elapsed = time.perf_counter() - started
        finished = step >= total_steps
        if finished and env.is_main:
            self._save_final(run_dir)
        D.barrier(env)
        metrics.close()
        losses = {f"{which}_{key}": (rec or {}).get(key) for which, rec in (("first", first), ("last", last))
                  for key in ("loss", "mlm_loss", "nsp_loss")}
        summary.update({"end_step": step, "finished": finished, **losses,
                        "seconds": elapsed, "tokens_per_s": tokens_seen / elapsed if elapsed > 0 else None,
                        "eval": last_eval, "model_dir": str(run_dir / "model") if finished else None,
                        "checkpoint": str(self.checkpoints.path(step))})
        if env.is_main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _save_final(self, run_dir: Path) -> None:
        """The final model as a Hugging Face folder: a copy of the last checkpoint's model (written atomically)."""
        latest = self.checkpoints.latest()
        final = run_dir / "model"
        tmp = run_dir / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(latest[1] / "model", tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)


def pretrain(config: PretrainConfig, resume: bool = False) -> dict:
    """Run (or continue) a pretraining run; returns its summary."""
    if config.data.seq_len < 8:
        raise DataError(f"seq_len must be at least 8, got {config.data.seq_len}")
    check_packing(config)
    return Pretrainer(config, resume).run()
