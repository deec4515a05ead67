"""One encoder layer of the fused path as a single autograd node, forward and backward written out.

The layer's steps, on packed tokens (tokens, hidden):

    qkv      = hidden @ W_qkv^T + b_qkv                                   (tokens, 3, heads, head_dim)
    context  = attention(qkv)                                              kernel, dropout on the probabilities
    proj     = context @ W_ao^T
    attended = LayerNorm(dropout(proj + b_ao) + hidden)                    kernel
    inter    = attended @ W_i^T;  act = gelu(inter + b_i)                  kernel for bias + GELU
    out      = act @ W_o^T
    y        = LayerNorm(dropout(out + b_o) + attended)                    kernel

Step by step, every custom op, linear and view is its own autograd node, and the autograd engine's bookkeeping
per node costs more host time than our kernels' launches (bench/NOTES.md §10). Here the forward runs the kernels'
launchers and the GEMMs directly and saves what the backward needs; the backward is the chain rule of the same
steps, written out: the same kernels, the same GEMMs in the same dtypes, so the numbers are those of the
step-by-step path (which stays the path torch.compile traces, and the one for anything this does not cover).

Mixed precision: under autocast the GEMMs run in the autocast dtype, as F.linear would run them; the weights are
cast once per call and the casts saved, as autograd saves them. Gradients come back in each input's own dtype.
Dropout: one draw of three seeds per call on the device (attention, then the two LayerNorms), so a captured CUDA
graph draws new masks on every replay.
"""

from __future__ import annotations

import bert_fast_kernels.launchers as L
import torch
import torch.nn.functional as F
from bert_fast_kernels import ATTENTION_HEAD_DIMS
from torch import nn
from torch.nn.modules import module as module_hooks


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    device_type = t.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else t.dtype


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _forward(hidden, cu_seqlens, seeds, meta, w_qkv, b_qkv, w_ao, b_ao, ln1_w, ln1_b, w_i, b_i, w_o, b_o, ln2_w,
             ln2_b):  # fmt: skip
    """The forward steps; returns y and what the backward needs."""
    max_seqlen, heads, head_dim, attention_p, ln1_p, ln2_p, eps1, eps2, approximate, dtype = meta
    tokens = hidden.shape[0]
    x = _cast(hidden, dtype)
    w_qkv, b_qkv, w_ao, w_i, w_o = (_cast(t, dtype) for t in (w_qkv, b_qkv, w_ao, w_i, w_o))
    seed_attention, seed_ln1, seed_ln2 = (None, None, None) if seeds is None else (seeds, seeds[1:], seeds[2:])
    qkv = F.linear(x, w_qkv, b_qkv).view(tokens, 3, heads, head_dim)
    context, lse = L.attention_qkvpacked_fwd(qkv, cu_seqlens, max_seqlen, attention_p, head_dim**-0.5,
                                             seed_attention)
    context2 = context.view(tokens, heads * head_dim)
    proj = F.linear(context2, w_ao)
    attended, mean1, rstd1 = L.add_layer_norm_fwd(proj, hidden, ln1_w, ln1_b, b_ao, eps1, ln1_p, seed_ln1)
    inter = F.linear(attended, w_i)
    act = L.bias_gelu_fwd(inter, b_i, approximate)
    out = F.linear(act, w_o)
    y, mean2, rstd2 = L.add_layer_norm_fwd(out, attended, ln2_w, ln2_b, b_o, eps2, ln2_p, seed_ln2)
    saved = (x, qkv, context, lse, context2, proj, mean1, rstd1, attended, inter, act, out, mean2, rstd2,
             w_qkv, w_ao, w_i, w_o, seed_attention, seed_ln1, seed_ln2)  # fmt: skip
    return y, saved


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """d(x @ weight^T) / d weight, in the weight's dtype."""
    return _cast(dy.t().mm(x), weight.dtype)


class EncoderLayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, cu_seqlens, seeds, meta, *params):
        y, saved = _forward(hidden, cu_seqlens, seeds, meta, *params)
        ctx.save_for_backward(hidden, cu_seqlens, *params, *saved)
        ctx.meta = meta
        ctx.set_materialize_grads(False)
        return y

    @staticmethod
    def backward(ctx, dy):
        if dy is None:
            return (None,) * (4 + 12)
        max_seqlen, heads, head_dim, attention_p, ln1_p, ln2_p, _eps1, _eps2, approximate, _dtype = ctx.meta
        hidden, cu_seqlens, *rest = ctx.saved_tensors
        (_, b_qkv, _, b_ao, ln1_w, ln1_b, _, b_i, _, b_o, ln2_w, ln2_b), saved = rest[:12], rest[12:]
        (x, qkv, context, lse, context2, proj, mean1, rstd1, attended, inter, act, out, mean2, rstd2,
         w_qkv, w_ao, w_i, w_o, seed_attention, seed_ln1, seed_ln2) = saved  # fmt: skip
        needs = ctx.needs_input_grad
        (need_w_qkv, need_b_qkv, need_w_ao, need_b_ao, need_ln1_w, need_ln1_b, need_w_i, need_b_i, need_w_o,
         need_b_o, need_ln2_w, need_ln2_b) = needs[4:]  # fmt: skip
        tokens = hidden.shape[0]

        d_out, d_attended, d_ln2_w, d_ln2_b, d_b_o = L.add_layer_norm_bwd(
            dy, out, attended, ln2_w, ln2_b, b_o, mean2, rstd2, ln2_p, seed_ln2,
            (True, True, need_ln2_w, need_ln2_b, need_b_o))  # fmt: skip
        d_w_o = _weight_grad(d_out, act, rest[8]) if need_w_o else None
        d_inter, d_b_i = L.bias_gelu_bwd(d_out.mm(w_o), inter, b_i, approximate, need_b_i)
        d_w_i = _weight_grad(d_inter, attended, rest[6]) if need_w_i else None
        d_attended = torch.addmm(d_attended, d_inter, w_i)  # a new tensor: d_attended may be d_out itself

        d_proj, d_hidden, d_ln1_w, d_ln1_b, d_b_ao = L.add_layer_norm_bwd(
            d_attended, proj, hidden, ln1_w, ln1_b, b_ao, mean1, rstd1, ln1_p, seed_ln1,
            (True, needs[0], need_ln1_w, need_ln1_b, need_b_ao))  # fmt: skip
        d_w_ao = _weight_grad(d_proj, context2, rest[2]) if need_w_ao else None
        d_context = d_proj.mm(w_ao).view(tokens, heads, head_dim)
        d_qkv = L.attention_qkvpacked_bwd(d_context, qkv, context, lse, cu_seqlens, max_seqlen, attention_p,
                                          head_dim**-0.5, seed_attention).view(tokens, 3 * heads * head_dim)
        d_w_qkv = _weight_grad(d_qkv, x, rest[0]) if need_w_qkv else None
        d_b_qkv = _cast(d_qkv.sum(0), b_qkv.dtype) if need_b_qkv else None
        if needs[0] and d_hidden.dtype == d_qkv.dtype:
            d_hidden = torch.addmm(d_hidden, d_qkv, w_qkv)  # a new tensor: d_hidden may be d_proj itself
        elif needs[0]:  # a wider input than the GEMMs' dtype (the first layer under autocast)
            d_hidden = d_hidden + d_qkv.mm(w_qkv).to(d_hidden.dtype)
        return (d_hidden, None, None, None, d_w_qkv, d_b_qkv, d_w_ao, d_b_ao, d_ln1_w, d_ln1_b, d_w_i, d_b_i, d_w_o,
                d_b_o, d_ln2_w, d_ln2_b)


# --- when the fused layer runs ------------------------------------------------------------------------------


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _linear(module: nn.Module):
    """(weight, bias) of a plain nn.Linear with a bias and no hooks (its forward may be skipped), else None."""
    if type(module) is not nn.Linear or _hooked(module):
        return None
    params = module._parameters
    return (params["weight"], params["bias"]) if params["bias"] is not None else None


def _layer_norm(module: nn.Module):
    if type(module) is not nn.LayerNorm or _hooked(module):
        return None
    params = module._parameters
    return (params["weight"], params["bias"]) if params["weight"] is not None and params["bias"] is not None else None


def _qkv(module: nn.Module):
    """(weight, bias) of the fused QKV projection: an nn.Linear's, or a module that builds them (the patch's)."""
    fused = getattr(type(module), "fused_weight_and_bias", None)
    if fused is not None and not _hooked(module):
        return fused(module)
    return _linear(module)


def _no_global_hooks() -> bool:
    return not (module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks
                or module_hooks._global_backward_hooks or module_hooks._global_backward_pre_hooks)


def _plain_eager(hidden: torch.Tensor) -> bool:
    """Nothing traces: torch.compile and dispatch modes see the step-by-step path's custom ops instead."""
    return (type(hidden) in (torch.Tensor, nn.Parameter) and not torch.compiler.is_compiling()
            and not torch._C._len_torch_dispatch_stack())


def layer_params(layer):
    """The layer's twelve parameters in EncoderLayerFunction's order, or None when a submodule is not the plain
    one this function computes (a subclass, a replaced module, a hook)."""
    from .modeling import BertAttention, BertIntermediate, BertOutput, BertSelfAttention, BertSelfOutput

    blocks = layer._modules
    attention, intermediate, output = blocks["attention"], blocks["intermediate"], blocks["output"]
    self_attention, self_output = attention._modules["self"], attention._modules["output"]
    if not (type(attention) is BertAttention and type(self_attention) is BertSelfAttention
            and type(self_output) is BertSelfOutput and type(intermediate) is BertIntermediate
            and type(output) is BertOutput):
        return None
    if any(_hooked(b) for b in (attention, self_attention, self_output, intermediate, output)):
        return None
    parts = (_qkv(self_attention._modules["qkv"]), _linear(self_output._modules["dense"]),
             _layer_norm(self_output._modules["LayerNorm"]), _linear(intermediate._modules["dense"]),
             _linear(output._modules["dense"]), _layer_norm(output._modules["LayerNorm"]))
    if any(p is None for p in parts):
        return None
    return tuple(t for pair in parts for t in pair)


def fused_encoder_layer(by_steps):
    """The fused path's encoder layer: EncoderLayerFunction where it applies, `by_steps(layer, hidden, layout, ops)`
    (the step-by-step layer) elsewhere: while tracing, with the fused FFN GEMM switched on, for head dims without
    an attention kernel, and for layers whose modules were replaced or hooked."""

    def call(layer, hidden, layout, ops):
        from . import ops as ops_lib

        self_attention = layer.attention.self
        params = None
        if (ops_lib.fused_layer_enabled() and not ops_lib.fused_linear_gelu_enabled()
                and self_attention.head_dim in ATTENTION_HEAD_DIMS
                and hidden.dim() == 2 and _plain_eager(hidden) and _no_global_hooks()):
            params = layer_params(layer)
        if params is None:
            return by_steps(layer, hidden, layout, ops)
        training = layer.training
        attention_p = self_attention.dropout_p if training else 0.0
        ln1_p = layer.attention.output.dropout.p if training else 0.0
        ln2_p = layer.output.dropout.p if training else 0.0
        seeds = L.draw_seeds(3, hidden.device) if attention_p > 0.0 or ln1_p > 0.0 or ln2_p > 0.0 else None
        meta = (layout.max_seqlen, self_attention.num_heads, self_attention.head_dim, attention_p, ln1_p, ln2_p,
                layer.attention.output.LayerNorm.eps, layer.output.LayerNorm.eps, layer.intermediate.approximate,
                _compute_dtype(hidden))  # fmt: skip
        if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in params)):
            return EncoderLayerFunction.apply(hidden, layout.cu_seqlens, seeds, meta, *params)
        return _forward(hidden, layout.cu_seqlens, seeds, meta, *params)[0]

    return call

