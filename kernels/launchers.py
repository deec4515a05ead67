"""The launchers without input checks, for a caller that composes several kernels in one autograd.Function.

bert_fast's fused encoder layer runs attention, bias + GELU and two add + LayerNorms, forward and backward, inside
one autograd node. It builds every input itself (shapes, dtypes, devices known), so the checks each public
function makes would only cost host time there. Everything here takes validated inputs and plain eager tensors:
no custom op, no autograd. Anything else should call the public functions.

Dropout seeds are int64 device tensors whose first element is the seed (`draw_seeds`), or None without dropout.
"""

from __future__ import annotations

import torch

from ._common import draw_seeds
from .add_layer_norm import _bwd as _ln_bwd
from .add_layer_norm import _fwd as _ln_fwd
from .add_layer_norm import gradients as _ln_gradients
from .attention_fwd import attention_fwd as _attention_fwd
from .bias_gelu import _bwd as _bg_bwd
from .bias_gelu import _fwd as _bg_fwd
from .varlen_attention import packed_attention_bwd

__all__ = [
    "add_layer_norm_bwd",
    "add_layer_norm_fwd",
    "attention_qkvpacked_bwd",
    "attention_qkvpacked_fwd",
    "bias_gelu_bwd",
    "bias_gelu_fwd",
    "draw_seeds",
]


def add_layer_norm_fwd(x, residual, weight, bias, x_bias, eps: float, dropout_p: float, seed: torch.Tensor | None):
    """(y, mean, rstd): add_layer_norm's forward, the pre-norm sum not returned."""
    y, _, mean, rstd = _ln_fwd(x, residual, weight, bias, x_bias, eps, dropout_p, 0, seed, False)
    return y, mean, rstd


def add_layer_norm_bwd(dy, x, residual, weight, bias, x_bias, mean, rstd, dropout_p: float,
                       seed: torch.Tensor | None, needs):  # fmt: skip
    """(dx, dresidual, dweight, dbias, dx_bias), None where `needs` (five flags in that order) says no. dx and
    dresidual may be one tensor (add_layer_norm.grads_alias): never update either in place."""
    return _ln_gradients(_ln_bwd, dy, None, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, 0, seed, needs)


def bias_gelu_fwd(x, bias, approximate: str) -> torch.Tensor:
    return _bg_fwd(x, bias, approximate)


def bias_gelu_bwd(dy, x, bias, approximate: str, need_dbias: bool):
    """(dx, dbias or None)."""
    return _bg_bwd(dy, x, bias, approximate, need_dbias)


def attention_qkvpacked_fwd(qkv, cu_seqlens, max_seqlen: int, dropout_p: float, softmax_scale: float,
                            seed: torch.Tensor | None):  # fmt: skip
    """(out (tokens, heads, head_dim), lse (heads, tokens) float32) for qkv (tokens, 3, heads, head_dim)."""
    q, k, v = qkv.unbind(1)
    return _attention_fwd(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, 0, seed)


def attention_qkvpacked_bwd(dout, qkv, out, lse, cu_seqlens, max_seqlen: int, dropout_p: float, softmax_scale: float,
                            seed: torch.Tensor | None, deterministic: bool = True) -> torch.Tensor:  # fmt: skip
    """dqkv (tokens, 3, heads, head_dim) for attention_qkvpacked_fwd's out and lse."""
    return packed_attention_bwd(dout, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, 0, seed,
                                deterministic)
