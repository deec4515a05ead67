"""A training step captured as CUDA graphs: forward, backward and optimizer step replayed per bucket.

Small models and small batches are bound by the host: every kernel launch and autograd node costs more CPU time
than the GPU spends on it. A step captured once per bucket (bert_fast.buckets) and replayed costs the host one
copy of the batch and one graph launch.

    optimizer = build_optimizer(model, lr=1e-4, capturable=True)   # tensor learning rate, device step counters
    step = CapturedStep(model, optimizer, max_grad_norm=1.0, autocast_dtype=torch.bfloat16)
    static = pack_batch(cpu_batch, bucket_of(cpu_batch, mlm=True), pad_token_id, mlm=True)   # on the host
    loss, grad_norm = step(static)    # device tensors the graph writes: read them when logging
    scheduler.step()                  # fills the learning-rate tensor in place, outside the graph

One graph per (bucket, whether it steps the optimizer):
- forward on the bucket under autocast, the loss scaled by `loss_scale` (1 / accumulation), backward into
  persistent gradients (allocated once, before any capture, so every graph adds into the same tensors);
- with step_optimizer=True also gradient clipping, the optimizer step and zeroing the gradients, so a micro-step
  graph (step_optimizer=False) accumulates and the last one of a step applies.

Before a bucket's first capture its body runs `warmup` times eagerly on a side stream: Triton compiles and
autotunes, cuBLAS picks its kernels, the optimizer creates its state. The parameters, the optimizer's state and the
gradients are saved before and restored after (state created by the warm-up is zeroed, its initial value for
AdamW and LAMB), so warming up changes no number of the run; it does draw from the random generators.

graphs=False runs the same sequence of work eagerly (CPU, tests, a batch with no bucket). Not supported: fp16 with
a GradScaler (its step reads the overflow flag on the host) and DistributedDataParallel (its gradient hooks run
outside the graph); such runs stay eager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..buckets import Bucket, StaticBatch, bucket_of, pack_batch
from ..errors import SettingError


class CaptureError(SettingError):
    """A model or optimizer set up in a way a captured step cannot serve."""


def model_loss(model: nn.Module, inputs: dict) -> torch.Tensor:
    """The default loss of a step: the model's own (every head model returns one when given labels)."""
    return model(**inputs).loss


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph | None
    static: StaticBatch  # the graph's inputs: each call copies its batch here
    loss: torch.Tensor | dict[str, torch.Tensor]
    grad_norm: torch.Tensor | None


class CapturedStep:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_of: Callable[[nn.Module, dict], torch.Tensor] = model_loss, max_grad_norm: float | None = None,
                 autocast_dtype: torch.dtype | None = None, warmup: int = 2, max_graphs: int = 16,
                 graphs: bool | None = None):  # fmt: skip
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise CaptureError("CapturedStep: DistributedDataParallel's gradient hooks cannot run inside a CUDA graph; "
                             "run DDP steps eagerly")
        self.model, self.optimizer, self.loss_of = model, optimizer, loss_of
        self.max_grad_norm, self.autocast_dtype = max_grad_norm, autocast_dtype
        self.warmup, self.max_graphs = warmup, max_graphs
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self.device = self.params[0].device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs:
            _check_capturable(optimizer)
            # A seed drawn on the host would be baked into the graph: every replay would draw the same dropout
            # masks. Seeds drawn on the device advance with each replay.
            from bert_fast_kernels._common import set_device_seeds

            set_device_seeds(True)
            if any(getattr(m, "impl", None) == "reference" for m in model.modules()):
                raise CaptureError("CapturedStep: the reference path reads sequence lengths on the host, which a "
                                   "graph cannot hold; capture the fused path (impl='auto' or 'triton')")
        self.captured: dict[tuple[Bucket, bool, float], _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.graphs else None

    # --- the step's work, the same captured or eager ---

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # autocast's cast cache would keep casts made during capture alive between graphs
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)

    def _body(self, inputs: dict, step_optimizer: bool, loss_scale: float):
        with self._autocast():
            out = self.loss_of(self.model, inputs)
        # loss_of returns the loss, or a dict of scalars with the loss under "loss" (the parts a run logs)
        loss = out["loss"] if isinstance(out, dict) else out
        (loss * loss_scale if loss_scale != 1.0 else loss).backward()
        grad_norm = None
        if step_optimizer:
            if self.max_grad_norm:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
            self.optimizer.step()
            torch._foreach_zero_([p.grad for p in self.params])
        if isinstance(out, dict):
            return {k: v.detach() for k, v in out.items() if v is not None}, grad_norm
        return loss.detach(), grad_norm

    def _persistent_grads(self) -> None:
        """Every gradient allocated once, zeroed: the graphs add into these tensors and the optimizer graph zeroes
        them in place (zero_grad(set_to_none=True) would hand the next backward new tensors)."""
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _warm_up(self, inputs: dict, step_optimizer: bool, loss_scale: float) -> None:
        if not self.warmup:
            return
        saved = [(p.detach().clone(), p.grad.clone()) for p in self.params]  # gradients: a step may be accumulating
        state_before = {id(t): t.clone() for t in _state_tensors(self.optimizer)}
        for _ in range(self.warmup):
            self._body(inputs, step_optimizer, loss_scale)
        with torch.no_grad():
            for p, (value, grad) in zip(self.params, saved):
                p.copy_(value)
                p.grad.copy_(grad)
            for t in _state_tensors(self.optimizer):
                if id(t) in state_before:
                    t.copy_(state_before[id(t)])
                else:  # created by the warm-up: AdamW's and LAMB's state starts at zero
                    t.zero_()

    def _capture(self, batch: StaticBatch, step_optimizer: bool, loss_scale: float) -> _Captured:
        static = batch.to(self.device)
        inputs = static.model_inputs()
        self._persistent_grads()
        if not self.graphs:
            self._warm_up(inputs, step_optimizer, loss_scale)
            return _Captured(None, static, *self._body(inputs, step_optimizer, loss_scale))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._warm_up(inputs, step_optimizer, loss_scale)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            loss, grad_norm = self._body(inputs, step_optimizer, loss_scale)
        graph.replay()  # the capture recorded the step; this takes it
        return _Captured(graph, static, loss, grad_norm)

    def static_batch(self, batch: dict[str, torch.Tensor], pad_token_id: int, mlm: bool = False,
                     width_multiple: int = 32, max_width: int | None = None) -> StaticBatch | None:
        """A loader's CPU batch packed on the host into its bucket, or None when it has none (run it eagerly).
        Widths round up to `width_multiple` (at most `max_width`), so batches padded to their longest member share
        a few buckets instead of capturing a graph per length."""
        width = -(-batch["input_ids"].shape[-1] // width_multiple) * width_multiple
        if max_width is not None:
            width = min(width, max_width)
        bucket = bucket_of(batch, mlm=mlm, width=width)
        return None if bucket is None else pack_batch(batch, bucket, pad_token_id, mlm=mlm)

    def __call__(self, batch: StaticBatch, step_optimizer: bool = True, loss_scale: float = 1.0):
        """One (micro-)step on a batch: (loss, gradient norm before clipping or None), device tensors that the next
        call of the same kind overwrites. loss is the model's, before `loss_scale` (1 / accumulation steps), or
        the dict loss_of returns."""
        key = (batch.bucket, step_optimizer, loss_scale)
        captured = self.captured.get(key)
        if captured is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))  # forget the oldest bucket
            self.captured[key] = self._capture(batch, step_optimizer, loss_scale)
            return self.captured[key].loss, self.captured[key].grad_norm
        captured.static.copy_(batch)
        if captured.graph is not None:
            captured.graph.replay()
            return captured.loss, captured.grad_norm
        return self._body(captured.static.model_inputs(), step_optimizer, loss_scale)


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _check_capturable(optimizer: torch.optim.Optimizer) -> None:
    """A step a graph can hold: no Python-float learning rate to bake in, no host sync in the update."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            raise CaptureError("CapturedStep: the learning rate must be a tensor (build_optimizer(..., capturable=True)), "
                             "or a captured step would keep the rate of its capture")
        if "capturable" in group and not group["capturable"]:
            raise CaptureError("CapturedStep: the optimizer must be capturable (build_optimizer(..., capturable=True))")
