"""Mixed precision for training: bf16 autocast (fp32 master weights), fp16 autocast with a GradScaler, or fp32.

One object owns the autocast context, the scaler and the optimizer step with gradient clipping, so trainers
read the same whatever the precision.
"""

from __future__ import annotations

import contextlib

import torch

MODES = ("bf16", "fp16", "fp32")


class Precision:
    def __init__(self, mode: str, device: torch.device | str):
        if mode not in MODES:
            raise ValueError(f"precision {mode!r} is not one of {MODES}")
        self.mode = mode
        self.device_type = torch.device(device).type
        # fp16 on the CPU works (autocast and GradScaler support it) but is slow: it is there for tests.
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    @classmethod
    def default(cls, device) -> Precision:
        """bf16 autocast on CUDA, fp32 elsewhere."""
        return cls("bf16" if torch.device(device).type == "cuda" else "fp32", device)

    def autocast(self):
        if self.mode == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mode == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters, max_grad_norm: float | None,
             clip_fn=None) -> tuple[torch.Tensor, bool]:
        """Unscale, clip, step. Returns (gradient norm before clipping, whether the step was taken). The norm stays
        a device tensor: reading it waits for the GPU, so a caller reads it only when it logs.

        With fp16 a step whose gradients overflowed is skipped (and the scale lowered); the caller should then
        not advance the learning-rate schedule. `clip_fn(max_norm) -> norm` replaces the clipping where the
        norm needs more than the local gradients (FSDP's sharded parameters: `fsdp_module.clip_grad_norm_`).
        """
        parameters = [p for p in parameters if p.grad is not None]
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if max_grad_norm and clip_fn is not None:
            norm = clip_fn(max_grad_norm)
        elif max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.float().norm() for p in parameters]))
        if self.scaler:
            scale_before = self.scaler.get_scale()
            self.scaler.step(optimizer)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale_before
        else:
            optimizer.step()
            stepped = True
        return norm.detach(), stepped

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"checkpoint was trained with precision {state['mode']}, this run uses {self.mode}")
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
