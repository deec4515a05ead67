"""Fused masked attention for BERT: variable-length flash attention (no padding computed), autograd, dropout.

Public functions (the kernels live in attention_fwd.py / attention_bwd.py, the specification in reference.py):
- varlen_attention(q, k, v, cu_seqlens, max_seqlen, ...): (tokens, heads, head_dim) sequences back to back.
- varlen_attention_qkvpacked(qkv, cu_seqlens, max_seqlen, ...): qkv (tokens, 3, heads, head_dim), e.g. one fused
  QKV projection viewed in place; its backward writes one dqkv tensor directly (no concatenation).
- padded_attention(q, k, v, key_padding_mask, ...): (batch, seq, heads, head_dim) with a (batch, seq) mask of real
  tokens; unpads, runs the varlen kernel, pads back with zeros at padded queries.
- varlen_dropout_mask / padded_dropout_mask: the exact keep-mask a seed draws, in the reference's layout.

Each attention call is a torch custom op (bert_fast::varlen_attention_fwd / _bwd and the qkvpacked pair) with a
fake implementation and a registered backward, so torch.compile keeps it in one graph; eager calls run the same
implementation through a plain autograd.Function (EagerOp: the custom-op dispatch costs more host time than the
kernels). The output is a fresh contiguous (tokens, heads, head_dim) tensor: it reshapes to (tokens, heads *
head_dim) for free.

Dropout: dropout_p > 0 draws the seed on the device from torch's generator unless one is given (so torch.manual_seed
rules, and no host sync is needed); dropout_p = 0 compiles the dropout code out. Validating cu_seqlens' values needs them on the host (one device sync):
pass validate=False when they are known to be good (e.g. built once per batch and checked with check_cu_seqlens).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from ._common import EagerOp, check_kernel_device, seed_arguments
from .attention_bwd import attention_bwd
from .attention_fwd import attention_fwd, check_attention_inputs, varlen_dropout_mask

__all__ = [
    "check_cu_seqlens",
    "cu_seqlens_from_mask",
    "padded_attention",
    "padded_dropout_mask",
    "varlen_attention",
    "varlen_attention_qkvpacked",
    "varlen_dropout_mask",
]


# ---- custom ops: separate q, k, v ----


def _fwd_impl(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    deterministic: bool,  # the backward's choice, kept with the forward's arguments
) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_fwd(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor)


_fwd_op = torch.library.custom_op("bert_fast::varlen_attention_fwd", mutates_args=())(_fwd_impl)


@_fwd_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic):
    check_attention_inputs("varlen_attention", q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


def _bwd_impl(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_bwd(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                         seed_tensor, deterministic=deterministic)


_bwd_op = torch.library.custom_op("bert_fast::varlen_attention_bwd", mutates_args=())(_bwd_impl)
_attention_backward = EagerOp(_bwd_op, _bwd_impl)


@_bwd_op.register_fake
def _(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _fwd_setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, seed_tensor)
    ctx.args = (max_seqlen, dropout_p, softmax_scale, seed)
    ctx.deterministic = deterministic


def _fwd_backward(ctx, dout, _dlse):
    q, k, v, out, lse, cu_seqlens, seed_tensor = ctx.saved_tensors
    dq, dk, dv = _attention_backward(dout, q, k, v, out, lse, cu_seqlens, *ctx.args, seed_tensor, ctx.deterministic)
    return dq, dk, dv, None, None, None, None, None, None, None


_fwd_op.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)
_attention = EagerOp(_fwd_op, _fwd_impl, _fwd_setup_context, _fwd_backward)


# ---- custom ops: packed qkv (tokens, 3, heads, head_dim) ----


def _packed_fwd_impl(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    deterministic: bool,  # the backward's choice, kept with the forward's arguments
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = qkv.unbind(1)  # strided views: token stride 3 * heads * head_dim, no copy
    return attention_fwd(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor)


_packed_fwd_op = torch.library.custom_op(
    "bert_fast::varlen_attention_qkvpacked_fwd", mutates_args=()
)(_packed_fwd_impl)


@_packed_fwd_op.register_fake
def _(qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic):
    q, k, v = qkv.unbind(1)
    check_attention_inputs("varlen_attention_qkvpacked", q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


def packed_attention_bwd(dout, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor,
                         deterministic=True) -> torch.Tensor:  # fmt: skip
    """The backward launches for packed qkv on validated inputs: one (tokens, 3, heads, head_dim) gradient."""
    dqkv = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
    q, k, v = qkv.unbind(1)
    dq, dk, dv = dqkv.unbind(1)  # the kernel writes the three slices in place
    attention_bwd(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor,
                  dq, dk, dv, deterministic=deterministic)
    return dqkv


def _packed_bwd_impl(
    dout: torch.Tensor,
    qkv: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    deterministic: bool,
) -> torch.Tensor:
    return packed_attention_bwd(dout, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                                seed_tensor, deterministic)


_packed_bwd_op = torch.library.custom_op(
    "bert_fast::varlen_attention_qkvpacked_bwd", mutates_args=()
)(_packed_bwd_impl)
_packed_attention_backward = EagerOp(_packed_bwd_op, _packed_bwd_impl)


@_packed_bwd_op.register_fake
def _(dout, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic):
    return qkv.new_empty(qkv.shape)


def _packed_setup_context(ctx, inputs, output):
    qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse, cu_seqlens, seed_tensor)
    ctx.args = (max_seqlen, dropout_p, softmax_scale, seed)
    ctx.deterministic = deterministic


def _packed_backward(ctx, dout, _dlse):
    qkv, out, lse, cu_seqlens, seed_tensor = ctx.saved_tensors
    dqkv = _packed_attention_backward(dout, qkv, out, lse, cu_seqlens, *ctx.args, seed_tensor, ctx.deterministic)
    return dqkv, None, None, None, None, None, None, None


_packed_fwd_op.register_autograd(_packed_backward, setup_context=_packed_setup_context)
_packed_attention = EagerOp(_packed_fwd_op, _packed_fwd_impl, _packed_setup_context, _packed_backward)


# ---- public functions ----


def check_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int, max_seqlen: int) -> None:
    """Raise unless cu_seqlens starts at 0, never decreases, ends at total_tokens and no length exceeds max_seqlen.

    A too-small max_seqlen would leave rows uncomputed, so it is an error, not a silent result. Reads the values on
    the host (one device sync); skipped while torch.compile traces.
    """
    if torch.compiler.is_compiling():
        return
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D of shape (batch + 1,), got shape {tuple(cu_seqlens.shape)}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {bounds[0]}")
    lengths = [end - start for start, end in itertools.pairwise(bounds)]
    if min(lengths) < 0:
        bad = lengths.index(min(lengths))
        raise ValueError(f"cu_seqlens must be non-decreasing; sequence {bad} has negative length {lengths[bad]}")
    if bounds[-1] != total_tokens:
        raise ValueError(f"cu_seqlens ends at {bounds[-1]}, but q has {total_tokens} tokens")
    if max(lengths) > max_seqlen:
        raise ValueError(f"max_seqlen {max_seqlen} is smaller than the longest sequence ({max(lengths)})")


def _prepare(op, q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, validate):
    max_seqlen = int(max_seqlen)
    dropout_p = float(dropout_p)
    softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    check_attention_inputs(op, q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    if validate:
        check_cu_seqlens(cu_seqlens, q.shape[0], max_seqlen)
    seed, seed_tensor = seed_arguments(seed, q.device) if dropout_p > 0.0 else (0, None)
    return max_seqlen, dropout_p, softmax_scale, seed, seed_tensor


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | torch.Tensor | None = None,
    *,
    validate: bool = True,
    deterministic: bool = True,
) -> torch.Tensor:
    """Bidirectional attention within each of the sequences packed back to back in q, k, v.

    q, k, v: (total_tokens, heads, head_dim), fp16 / bf16 / fp32, head_dim in {16, 32, 64, 128}; token and head
    strides are free (unit stride on head_dim). cu_seqlens: int32 (batch + 1,) offsets; max_seqlen >= the longest
    sequence. dropout_p: dropout on the attention probabilities (Philox from seed; see varlen_dropout_mask).
    seed: an int, an int64 tensor on q's device (its first element), or None to draw one on the device from torch's
    generator (no host sync). softmax_scale defaults to 1 / sqrt(head_dim). Returns contiguous (total_tokens,
    heads, head_dim) in q's dtype.
    deterministic=True (the default) gives bitwise-reproducible gradients; False adds dq up with fp32 atomics, a
    cheaper backward whose dq may differ between runs in the last bits.
    """
    args = _prepare("varlen_attention", q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, validate)
    out, _ = _attention(q, k, v, cu_seqlens, *args, bool(deterministic))
    return out


def varlen_attention_qkvpacked(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | torch.Tensor | None = None,
    *,
    validate: bool = True,
    deterministic: bool = True,
) -> torch.Tensor:
    """varlen_attention on qkv (total_tokens, 3, heads, head_dim) (q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]).

    The gradient is one (total_tokens, 3, heads, head_dim) tensor written by the kernel. Returns contiguous
    (total_tokens, heads, head_dim).
    """
    op = "varlen_attention_qkvpacked"
    if qkv.dim() != 4 or qkv.shape[1] != 3:
        raise ValueError(f"{op}: qkv must be (total_tokens, 3, heads, head_dim), got {tuple(qkv.shape)}")
    q, k, v = qkv.unbind(1)
    args = _prepare(op, q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, validate)
    out, _ = _packed_attention(qkv, cu_seqlens, *args, bool(deterministic))
    return out


def cu_seqlens_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(batch + 1,) int32 offsets of the real tokens of each row of a (batch, seq) bool mask, packed row after row.
    No host sync."""
    return F.pad(mask.sum(1, dtype=torch.int32).cumsum(0, dtype=torch.int32), (1, 0))


def _padding_keep(op: str, key_padding_mask: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    if key_padding_mask.shape != (batch, seq):
        shape = tuple(key_padding_mask.shape)
        raise ValueError(f"{op}: key_padding_mask must be (batch, seq) = {(batch, seq)}, got {shape}")
    if key_padding_mask.is_floating_point() and ((key_padding_mask != 0) & (key_padding_mask != 1)).any():
        raise ValueError(f"{op}: a float key_padding_mask must hold 1 (real token) or 0 (padding), not additive values")
    return key_padding_mask.bool()


def padded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """BERT attention on a padded batch, computed without the padding.

    q, k, v: (batch, seq, heads, head_dim); key_padding_mask: (batch, seq), true / nonzero for real tokens (Hugging
    Face's attention_mask), or None. Padded keys get no weight; outputs at padded queries are zero. Padding may be
    anywhere (left, right, holes): the real tokens of a row, in order, form its sequence. Unpadding costs one device
    sync (nonzero). Returns (batch, seq, heads, head_dim) in q's dtype.
    """
    op = "padded_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be (batch, seq, heads, head_dim), got shape {tuple(t.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        shapes = ", ".join(str(tuple(t.shape)) for t in (q, k, v))
        raise ValueError(f"{op}: q, k, v must have the same shape, got {shapes}")
    batch, seq, heads, head_dim = q.shape
    if key_padding_mask is None:
        cu_seqlens = torch.arange(0, (batch + 1) * seq, seq, dtype=torch.int32, device=q.device)
        flat = [t.reshape(batch * seq, heads, head_dim) for t in (q, k, v)]
        out = varlen_attention(*flat, cu_seqlens, seq, dropout_p, softmax_scale, seed, validate=False)
        return out.view(batch, seq, heads, head_dim)
    check_kernel_device(op, q, key_padding_mask)
    keep = _padding_keep(op, key_padding_mask, batch, seq)
    cu_seqlens = cu_seqlens_from_mask(keep)
    index = keep.reshape(-1).nonzero().squeeze(1)  # (real tokens,), row-major: each row's tokens in order
    packed = [t.reshape(batch * seq, heads, head_dim).index_select(0, index) for t in (q, k, v)]
    out = varlen_attention(*packed, cu_seqlens, seq, dropout_p, softmax_scale, seed, validate=False)
    padded = out.new_zeros(batch * seq, heads, head_dim).index_copy(0, index, out)
    return padded.view(batch, seq, heads, head_dim)


def padded_dropout_mask(seed: int, key_padding_mask: torch.Tensor, heads: int, dropout_p: float) -> torch.Tensor:
    """The keep-mask padded_attention draws for `seed`: bool (batch, heads, seq, seq), as padded_attention_ref's
    dropout_mask takes it (False at padded rows and columns)."""
    batch, seq = key_padding_mask.shape
    keep = _padding_keep("padded_dropout_mask", key_padding_mask, batch, seq)
    cu_seqlens = cu_seqlens_from_mask(keep)
    packed = varlen_dropout_mask(seed, cu_seqlens, heads, seq, dropout_p)  # (batch, heads, seq, seq), unpadded order
    rank = (keep.long().cumsum(1) - 1).clamp_min(0)  # position of each real token within its sequence
    b = torch.arange(batch, device=keep.device)[:, None, None, None]
    h = torch.arange(heads, device=keep.device)[None, :, None, None]
    mask = packed[b, h, rank[:, None, :, None], rank[:, None, None, :]]
    return mask & keep[:, None, :, None] & keep[:, None, None, :]
