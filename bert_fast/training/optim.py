"""Optimizers and the learning-rate schedule of BERT's recipe.

Weight decay 0.01 on every weight matrix and embedding, none on biases and LayerNorm parameters; AdamW (fused
on CUDA) by default, LAMB (You et al., 2020) for large batches; linear warmup to the peak rate, then linear
decay to zero.
"""

from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases + LayerNorm parameters without decay (tied weights once)."""
    no_decay_types = (nn.LayerNorm,)
    no_decay_ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, no_decay_types):
                no_decay_ids.add(id(param))
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():  # parameters() yields each tied tensor once
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam's update rescaled per tensor by the trust ratio ||w|| / ||update||, with decoupled decay.

    Sync-free: the step counter is a tensor on the parameter's device and the learning rate may be one, so a step
    can be captured in a CUDA graph (a scheduler then fills the rate in place)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        if float(lr) <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                elif not torch.is_tensor(state["step"]):  # a checkpoint of the int counter this class kept before
                    state["step"] = torch.tensor(float(state["step"]), device=p.device)
                step = state["step"].add_(1)
                grad = p.grad.float()
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = state["exp_avg"] / (1 - torch.pow(beta1, step))
                v_hat = state["exp_avg_sq"] / (1 - torch.pow(beta2, step))
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p.float(), alpha=group["weight_decay"])
                w_norm, u_norm = p.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                lr = group["lr"]
                if torch.is_tensor(lr):
                    p.sub_((update * (trust * lr)).to(p.dtype))
                else:
                    p.add_((update * trust).to(p.dtype), alpha=-lr)
        return loss


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-4, weight_decay: float = 0.01,
                    betas=(0.9, 0.999), eps: float = 1e-6, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or LAMB over `parameter_groups`. capturable=True makes the step one a CUDA graph can
    hold (bert_fast.training.capture): the learning rate is a tensor on the parameters' device, which schedulers
    fill in place, and AdamW runs fused with its step counters on the device."""
    groups = parameter_groups(model, weight_decay)
    device = next(model.parameters()).device
    rate = torch.tensor(lr, dtype=torch.float32, device=device) if capturable else lr
    if name == "adamw":
        fused = True if capturable else (device.type == "cuda" or None)
        return torch.optim.AdamW(groups, lr=rate, betas=betas, eps=eps, fused=fused, capturable=capturable)
    if name == "lamb":
        return Lamb(groups, lr=rate, betas=betas, eps=eps)
    raise ValueError(f"optimizer {name!r} is not one of 'adamw', 'lamb'")


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup from 0 to the optimizer's lr over warmup_steps, then linear decay to 0 at total_steps."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
