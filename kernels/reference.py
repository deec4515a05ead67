"""Plain PyTorch references for every fused kernel: the specification the kernels are tested against.

Each function computes in the dtype it is given unless `upcast=True`, which computes in float32 (or wider,
if the input is wider) and returns the input dtype: the same contract as the kernels. Tests call them
twice: once on the inputs as they are (PyTorch's own error in that dtype) and once on float64 copies
(the ground truth).

Dropout: with `dropout_mask` (a bool keep-mask of the dropped tensor's shape) the reference applies exactly
that mask, scaled by 1 / (1 - p), so it can reproduce a kernel's in-kernel Philox mask. Without one it draws
a mask from torch's RNG, which is what the model's reference path uses in training.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F


def _compute_dtype(dtype: torch.dtype, upcast: bool) -> torch.dtype:
    if upcast and dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _dropout(x: torch.Tensor, p: float, keep_mask: torch.Tensor | None) -> torch.Tensor:
    if p == 0.0:
        return x
    if keep_mask is None:
        return F.dropout(x, p=p, training=True)
    if keep_mask.shape != x.shape:
        raise ValueError(f"dropout_mask has shape {tuple(keep_mask.shape)}, expected {tuple(x.shape)}")
    return x * keep_mask.to(x.dtype) / (1.0 - p)


def bias_gelu_ref(
    x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none", upcast: bool = False
) -> torch.Tensor:
    """y = gelu(x + bias) over the last dim. approximate="none" is the exact erf GELU of BERT."""
    out_dtype = x.dtype
    dtype = _compute_dtype(x.dtype, upcast)
    h = x.to(dtype)
    if bias is not None:
        h = h + bias.to(dtype)
    return F.gelu(h, approximate=approximate).to(out_dtype)


def linear_gelu_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none", upcast: bool = False
) -> torch.Tensor:
    """y = gelu(x @ weight.T + bias): a projection followed by bias_gelu, as BERT's FFN up-projection runs.

    The bias is added after the matmul's rounding (the matmul has no bias), as in the model's split form.
    """
    dtype = _compute_dtype(x.dtype, upcast)
    z = F.linear(x.to(dtype), weight.to(dtype))
    return bias_gelu_ref(z, bias, approximate).to(x.dtype)


def add_layer_norm_ref(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-12,
    x_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    dropout_mask: torch.Tensor | None = None,
    return_residual: bool = False,
    upcast: bool = False,
):
    """y = LayerNorm(dropout(x + x_bias) + residual) * weight + bias, over the last dim.

    This is BERT's post-LN block: x is a projection's output before its bias, residual the block's input.
    With return_residual=True also returns the pre-norm sum dropout(x + x_bias) + residual (input dtype).
    weight/bias may be float32 while x is half precision (as under autocast): the norm then runs in float32.
    """
    out_dtype = x.dtype
    dtype = _compute_dtype(x.dtype, upcast)
    if weight.dtype.itemsize > dtype.itemsize:
        dtype = weight.dtype  # mixed precision (fp32 weights, half activations): normalise in the wider dtype
    h = x.to(dtype)
    if x_bias is not None:
        h = h + x_bias.to(dtype)
    h = _dropout(h, dropout_p, dropout_mask)
    if residual is not None:
        h = h + residual.to(dtype)
    w = weight.to(dtype)
    b = bias.to(dtype) if bias is not None else None
    y = F.layer_norm(h, (h.shape[-1],), w, b, eps).to(out_dtype)
    if return_residual:
        return y, h.to(out_dtype)
    return y


def _check_scale(head_dim: int, softmax_scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale


def _attend(q, k, v, key_keep, dropout_p, keep_mask, scale, dtype):
    """One block of sequences. q, k, v: (..., seq, heads, head_dim); key_keep: (..., 1, 1, seq) bool or None."""
    q, k, v = (t.to(dtype).transpose(-3, -2) for t in (q, k, v))  # (..., heads, seq, head_dim)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (..., heads, seq_q, seq_k)
    if key_keep is not None:
        scores = scores.masked_fill(~key_keep, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if key_keep is not None:
        probs = probs.nan_to_num(0.0)  # a query with no key to attend to gets zeros, not NaN
    probs = _dropout(probs, dropout_p, keep_mask)
    return torch.matmul(probs, v).transpose(-3, -2)  # (..., seq_q, heads, head_dim)


def varlen_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    dropout_mask: torch.Tensor | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """Bidirectional attention over sequences packed back to back.

    q, k, v: (total_tokens, heads, head_dim); cu_seqlens: (batch + 1,) int offsets of each sequence.
    Each token attends to the tokens of its own sequence only. dropout_mask, if given, is a bool keep-mask
    of shape (batch, heads, max_seqlen, max_seqlen) whose [b, :, :L, :L] block belongs to sequence b.
    Returns (total_tokens, heads, head_dim) in q's dtype.
    """
    out_dtype = q.dtype
    dtype = _compute_dtype(q.dtype, upcast)
    scale = _check_scale(q.shape[-1], softmax_scale)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=out_dtype, device=q.device)
    bounds = cu_seqlens.tolist()
    for b, (start, end) in enumerate(itertools.pairwise(bounds)):
        length = end - start
        keep = None if dropout_mask is None else dropout_mask[b, :, :length, :length]
        sl = slice(start, end)
        out[sl] = _attend(q[sl], k[sl], v[sl], None, dropout_p, keep, scale, dtype).to(out_dtype)
    return out


def padded_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    dropout_mask: torch.Tensor | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """BERT attention on a padded batch.

    q, k, v: (batch, seq, heads, head_dim); key_padding_mask: (batch, seq), true/1 for real tokens, or None.
    Padded keys get no weight; outputs at padded query positions are zero. dropout_mask, if given, is a bool
    keep-mask of shape (batch, heads, seq, seq). Returns (batch, seq, heads, head_dim) in q's dtype.
    """
    out_dtype = q.dtype
    dtype = _compute_dtype(q.dtype, upcast)
    scale = _check_scale(q.shape[-1], softmax_scale)
    key_keep = None
    if key_padding_mask is not None:
        key_keep = key_padding_mask.bool()[:, None, None, :]  # (batch, 1, 1, seq_k)
    out = _attend(q, k, v, key_keep, dropout_p, dropout_mask, scale, dtype)
    if key_padding_mask is not None:
        out = out * key_padding_mask.bool()[:, :, None, None]
    return out.to(out_dtype)
