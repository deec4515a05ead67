"""Linear + cross-entropy without the full logits: loss = mean CE(x @ weight.T + bias, labels).

A masked-LM decoder projects every predicted position onto the whole vocabulary (30522 for BERT); the (N, V)
logits and their gradient are the largest tensors of a pretraining step. This computes the loss a chunk of rows
at a time and, while each chunk's logits are at hand, also the gradients of x, weight and bias, so at most
(chunk, V) logits exist at once. The backward only scales the stored gradients.

Dtype contract: the matmuls run in x's dtype (bf16 under autocast), softmax and loss in float32, weight and bias
gradients accumulate in float32 and come back in each parameter's dtype. Rows whose label is `ignore_index`
add nothing; the mean is over the other rows (0 when there are none, as a 0/0 guard).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per chunk are chosen so a chunk's float32 logits stay near this many elements (256 MiB).
_CHUNK_ELEMENTS = 2**26


def linear_cross_entropy_ref(x, weight, bias, labels, ignore_index: int = -100) -> torch.Tensor:
    """The specification: materialise the logits, then cross-entropy in float32."""
    logits = F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, labels, ignore_index, chunk_rows):
        n_rows = x.shape[0]
        w = weight.to(x.dtype)
        b = None if bias is None else bias.to(x.dtype)
        valid = labels != ignore_index
        n_valid = valid.sum().clamp(min=1).float()  # stays on the device: no host sync
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if ctx.needs_input_grad[1] else None
        grad_b = None
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=x.device)
        for start in range(0, n_rows, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n_rows))
            xc, yc, vc = x[rows], labels[rows], valid[rows]
            logits = F.linear(xc, w, b).float()  # (chunk, V)
            lse = torch.logsumexp(logits, dim=-1)
            target = yc.clamp(min=0).unsqueeze(1)
            loss += ((lse - logits.gather(1, target).squeeze(1)) * vc).sum()
            # d(mean CE)/d(logits) = (softmax - one_hot) / n_valid on valid rows, 0 elsewhere.
            grad_logits = torch.exp(logits - lse.unsqueeze(1))
            grad_logits.scatter_add_(1, target, -torch.ones_like(target, dtype=grad_logits.dtype))
            grad_logits *= (vc.float() / n_valid).unsqueeze(1)
            if grad_b is not None:
                grad_b += grad_logits.sum(0)
            grad_logits = grad_logits.to(x.dtype)
            if grad_x is not None:
                grad_x[rows] = grad_logits @ w
            if grad_w is not None:
                grad_w += (grad_logits.t() @ xc).float()
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.param_dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.param_dtypes
        scale = grad_loss.float()
        dx = None if grad_x is None else grad_x * scale.to(grad_x.dtype)
        dw = None if grad_w is None else (grad_w * scale).to(weight_dtype)
        db = None if grad_b is None else (grad_b * scale).to(bias_dtype)
        return dx, dw, db, None, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                         ignore_index: int = -100, chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of x @ weight.T + bias against labels, never holding more than a chunk of logits.

    x: (N, H); weight: (V, H); bias: (V,) or None; labels: (N,) int64 in [0, V) or ignore_index.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not match")
    if labels.shape != x.shape[:1]:
        raise ValueError(f"linear_cross_entropy: labels {tuple(labels.shape)} for {x.shape[0]} rows")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear_cross_entropy: bias {tuple(bias.shape)} for {weight.shape[0]} classes")
    chunk_rows = chunk_rows or max(1, _CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(x, weight, bias, labels, ignore_index, chunk_rows)
