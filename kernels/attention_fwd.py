"""Variable-length (unpadded) flash attention, forward: softmax(scale * Q K^T) V per sequence, dropout inside.

Sequences lie back to back in (tokens, heads, head_dim) tensors; cu_seqlens (batch + 1,) int32 gives their offsets.
Every query attends to all keys of its own sequence (bidirectional, no causal mask), so no padding is ever read
or computed. One program owns BLOCK_M queries of one (sequence, head) and streams that sequence's keys through an
online softmax (FlashAttention-2): exp2 of scores pre-multiplied by scale * log2(e), running max and sum in fp32.

Dtype contract: q, k, v in fp16 / bf16 / fp32; dots accumulate in fp32, P is cast to the input dtype for P V
(as in FlashAttention); the output is stored in the input dtype and the per-row logsumexp (natural log) in fp32
for the backward. fp32 inputs take the exact path: tl.dot with input_precision="ieee" (no tf32), so fp32 is
accurate but several times slower than half precision; use fp16/bf16 for speed.

Dropout on the attention probabilities (HAS_DROPOUT): a Philox-4x32-10 draw keyed by the seed, one call per
(sequence * heads + head, query, group of 8 keys); its 128 bits give eight 16-bit uniforms, one per key of the
group, and the element is kept iff uniform >= round(p * 65536) (so p is honoured to 2^-16). Counters are unique per
(sequence, head, query, key): masks never repeat across heads, sequences or tiles, do not depend on block sizes,
and the backward regenerates them exactly. `varlen_dropout_mask` writes the same mask out for the reference.

Limits: head_dim in {16, 32, 64, 128}; any sequence length (tested to 4096); zero-length sequences allowed (no
rows to write). The last dim of q / k / v must have unit stride (otherwise it is copied); token and head strides
are free, so q, k, v may be strided views of one packed (tokens, 3, heads, head_dim) QKV projection.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (
    autotune,
    cdiv,
    check_float_dtype,
    check_kernel_device,
    dot_precision,
    interpreting,
    launch_kwargs,
    next_power_of_2,
    seed_arguments,
)
from ._launch import launch

HEAD_DIMS = (16, 32, 64, 128)
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
_NO_SPECIALIZE = ["seed", "dropout_threshold", "total_tokens", "max_seqlen", "seq_bucket"]


@triton.jit
def _dropout_keep(seed, bh, rows, start_n, threshold, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keep-mask (BLOCK_M, BLOCK_N) for queries `rows` and keys start_n .. start_n + BLOCK_N of (sequence, head) bh.

    One Philox call per (bh, query, key // 8): counter (key // 8, query, bh, 0). Its four 32-bit outputs split in
    sixteen-bit halves, one per key of the group. start_n must be a multiple of 8. (Joins and one reshape rather
    than nested tl.interleave: fewer nested calls, which the interpreter pays for.)
    """
    GROUPS: tl.constexpr = BLOCK_N // 8
    zero = tl.zeros((BLOCK_M, GROUPS), dtype=tl.uint32)
    c_key = zero + (start_n // 8 + tl.arange(0, GROUPS)).to(tl.uint32)[None, :]
    c_query = zero + rows.to(tl.uint32)[:, None]
    r0, r1, r2, r3 = tl.philox(seed, c_key, c_query, zero + bh.to(tl.uint32), zero)
    lo0, hi0 = (r0 & 0xFFFF).to(tl.int32), (r0 >> 16).to(tl.int32)
    lo1, hi1 = (r1 & 0xFFFF).to(tl.int32), (r1 >> 16).to(tl.int32)
    lo2, hi2 = (r2 & 0xFFFF).to(tl.int32), (r2 >> 16).to(tl.int32)
    lo3, hi3 = (r3 & 0xFFFF).to(tl.int32), (r3 >> 16).to(tl.int32)
    # (BLOCK_M, GROUPS, 2, 2, 2) -> (BLOCK_M, BLOCK_N): key 8g + j takes one distinct half-word of call g
    u = tl.join(tl.join(tl.join(lo0, hi0), tl.join(lo1, hi1)), tl.join(tl.join(lo2, hi2), tl.join(lo3, hi3)))
    return tl.reshape(u, (BLOCK_M, BLOCK_N)) >= threshold


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q,  # running output, row sums, row maxima (log2 units), the query block
    k_base, v_base, stride_kt, stride_vt,
    lo, hi, seq_len, rows, qk_scale, seed, bh, dropout_threshold,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Keys lo .. hi in steps of BLOCK_N. MASK_KEYS only for the last, partial block: full blocks skip the masks."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n
        kt_ptrs = k_base + cols[None, :] * stride_kt + offs_d[:, None]  # (HEAD_DIM, BLOCK_N): K^T
        v_ptrs = v_base + cols[:, None] * stride_vt + offs_d[None, :]
        if MASK_KEYS:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < seq_len, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
        qk = tl.dot(q, kt, input_precision=DOT_PRECISION)
        if MASK_KEYS:
            qk = tl.where(cols[None, :] < seq_len, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)  # the softmax denominator counts dropped elements too
        acc = acc * alpha[:, None]
        if HAS_DROPOUT:
            p = tl.where(_dropout_keep(seed, bh, rows, start_n, dropout_threshold, BLOCK_M, BLOCK_N), p, 0.0)
        if MASK_KEYS:
            v = tl.load(v_ptrs, mask=cols[:, None] < seq_len, other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _fwd_kernel(
    Q, K, V,  # (tokens, heads, HEAD_DIM): any token / head strides, unit stride along HEAD_DIM
    Out,  # (tokens, heads, HEAD_DIM)
    Lse,  # (heads, tokens) fp32: natural-log logsumexp of each query's scaled scores
    cu_seqlens,  # (batch + 1,) int32 sequence offsets
    qk_scale,  # softmax_scale * log2(e)
    dropout_scale,  # 1 / (1 - p)
    dropout_threshold,  # keep iff 16-bit uniform >= threshold
    seed,
    SEED,  # (1,) int64 seed, read instead of `seed` when SEED_IN_MEMORY
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    total_tokens, heads, max_seqlen,
    seq_bucket,  # autotune key only: next power of two of max_seqlen
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, SEED_IN_MEMORY: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # Query blocks vary fastest in the 1-D grid: the programs of one (sequence, head) run side by side and share
    # its K / V through L2. A flat grid also lifts CUDA's 65535 limit on batch * heads.
    n_blocks = tl.cdiv(max_seqlen, BLOCK_M)
    pid = tl.program_id(0)
    bh = pid // n_blocks
    start_m = (pid % n_blocks) * BLOCK_M
    b = bh // heads
    h = bh % heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    if start_m >= seq_len:  # a short sequence in a batch launched for max_seqlen (or an empty one)
        return
    if SEED_IN_MEMORY:  # only with dropout
        seed = tl.load(SEED)
    seq_start = seq_start.to(tl.int64)
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = rows < seq_len

    q_ptrs = Q + seq_start * stride_qt + h * stride_qh + rows[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + seq_start * stride_kt + h * stride_kh
    v_base = V + seq_start * stride_vt + h * stride_vh

    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    full_end = (seq_len // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, 0, full_end, seq_len, rows, qk_scale,
        seed, bh, dropout_threshold, HEAD_DIM, BLOCK_M, BLOCK_N, False, HAS_DROPOUT, DOT_PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(  # the partial last block, if any (0 or 1 iteration)
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, full_end, seq_len, seq_len, rows, qk_scale,
        seed, bh, dropout_threshold, HEAD_DIM, BLOCK_M, BLOCK_N, True, HAS_DROPOUT, DOT_PRECISION,
    )
    # Every real row saw at least one key, so l_i >= 1 there; rows past seq_len are never stored.
    inv_l = 1.0 / l_i
    if HAS_DROPOUT:
        inv_l = inv_l * dropout_scale
    out = acc * inv_l[:, None]
    o_ptrs = Out + seq_start * stride_ot + h * stride_oh + rows[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    lse = (m_i + tl.math.log2(l_i)) * LN2
    tl.store(Lse + h * total_tokens + seq_start + rows, lse, mask=row_ok)


@triton.jit(do_not_specialize=["seed", "dropout_threshold", "max_seqlen"])
def _dropout_mask_kernel(
    Mask,  # (batch, heads, max_seqlen, max_seqlen) int8, zero-filled
    cu_seqlens, seed, SEED, dropout_threshold, heads, max_seqlen,
    SEED_IN_MEMORY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Writes the keep-mask the attention kernels draw: block [b, h, :L, :L] for sequence b of length L."""
    if SEED_IN_MEMORY:
        seed = tl.load(SEED)
    bh = tl.program_id(0)
    start_m = tl.program_id(1) * BLOCK_M
    start_n = tl.program_id(2) * BLOCK_N
    b = bh // heads
    seq_len = tl.load(cu_seqlens + b + 1) - tl.load(cu_seqlens + b)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols = start_n + tl.arange(0, BLOCK_N)
    keep = _dropout_keep(seed, bh, rows, start_n, dropout_threshold, BLOCK_M, BLOCK_N)
    keep = keep & (rows[:, None] < seq_len) & (cols[None, :] < seq_len)
    ptrs = Mask + bh.to(tl.int64) * max_seqlen * max_seqlen + rows[:, None] * max_seqlen + cols[None, :]
    tl.store(ptrs, keep.to(tl.int8), mask=(rows[:, None] < max_seqlen) & (cols[None, :] < max_seqlen))


# Launch configurations. Hopper, head_dim <= 64: 128-query blocks with 64- or 128-key blocks, 4 or 8 warps.
# The autotune key buckets max_seqlen (a new max length in a ragged workload must not re-tune) and includes
# the head dim, the dropout flag and (implicitly) the dtypes. The interpreter and fp32 never autotune.
FWD_CONFIGS = {
    "small": [  # head_dim <= 64
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=2),
    ],
    "large": [  # head_dim 128
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=2),
    ],
}
AUTOTUNE_KEY = ["HEAD_DIM", "seq_bucket", "HAS_DROPOUT"]
_fwd_tuned: dict = {}


def seq_bucket(max_seqlen: int) -> int:
    """Next power of two of max_seqlen (at least 64): the autotune key for the sequence length."""
    return max(64, next_power_of_2(max(int(max_seqlen), 1)))


def tiles_within_sequences(block_names: tuple[str, ...]):
    """An autotune pruning rule: keep the configs whose tiles (the named block sizes) fit the key's sequence bucket,
    the smallest config when none does. A tile longer than every sequence computes masked rows and columns only, so
    at short lengths (fine-tuning's 64 tokens) the shape decides and nothing is compiled or timed for the rest."""

    def prune(configs, named_args):
        bucket = named_args["seq_bucket"]
        fitting = [c for c in configs if all(c.kwargs[name] <= bucket for name in block_names)]
        return fitting or [min(configs, key=lambda c: max(c.kwargs[name] for name in block_names))]

    return prune


# fp32 ("ieee" dots run on CUDA cores, operands held in registers): one fixed config per head-dim group, the
# largest tile that compiles for sm_90a without spilling (bench/compile_sm90.py, triton 3.6 and 3.9: a 64 x 32
# tile at 4 warps spills 1.3 KiB a thread at head_dim 64 and 29 KiB at 128).
FWD_FP32_CONFIGS = {
    "small": triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),  # head_dim <= 32
    "medium": triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=8, num_stages=2),  # 64
    "large": triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=8, num_stages=2),  # 128
}


def config_group_fp32(head_dim: int) -> str:
    return "small" if head_dim <= 32 else "medium" if head_dim <= 64 else "large"


def use_autotune(dtype: torch.dtype) -> bool:
    return not interpreting() and dtype != torch.float32


def config_group(head_dim: int) -> str:
    return "small" if head_dim <= 64 else "large"


def _fwd_launch(head_dim: int, dtype: torch.dtype, config: triton.Config | None):
    """(kernel, fixed launch kwargs): the autotuned kernel on GPU in half precision, else a fixed config."""
    if config is not None:  # tests and benchmarks pin one config
        return _fwd_kernel, launch_kwargs(config)
    if use_autotune(dtype):
        group = config_group(head_dim)
        if group not in _fwd_tuned:
            _fwd_tuned[group] = autotune(FWD_CONFIGS[group], AUTOTUNE_KEY,
                                         prune=tiles_within_sequences(("BLOCK_M", "BLOCK_N")))(_fwd_kernel)
        return _fwd_tuned[group], {}
    if interpreting():  # few, large blocks: the interpreter pays per operation, not per element
        return _fwd_kernel, {"BLOCK_M": 128, "BLOCK_N": 64}
    return _fwd_kernel, launch_kwargs(FWD_FP32_CONFIGS[config_group_fp32(head_dim)])


def dropout_threshold(dropout_p: float) -> int:
    """Keep an element iff its 16-bit uniform is >= this (p quantised to 2^-16)."""
    return min(round(dropout_p * 65536), 65536)


def check_attention_inputs(op: str, q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale) -> None:
    """Cheap checks (shapes, dtypes, devices, ranges); no device sync. Values of cu_seqlens: check_cu_seqlens."""
    check_kernel_device(op, q, k, v, cu_seqlens)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_dtype(op, name, t)
        if t.dim() != 3:
            raise ValueError(f"{op}: {name} must be (total_tokens, heads, head_dim), got shape {tuple(t.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"{op}: q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"{op}: head_dim {q.shape[-1]} is not supported; supported: {HEAD_DIMS}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"{op}: cu_seqlens must be 1-D of shape (batch + 1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"{op}: cu_seqlens must be int32, got {cu_seqlens.dtype}")
    if not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"{op}: max_seqlen must be a non-negative int, got {max_seqlen!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    if not (softmax_scale > 0.0 and math.isfinite(softmax_scale)):
        raise ValueError(f"{op}: softmax_scale must be positive and finite, got {softmax_scale}")


def unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def varlen_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | torch.Tensor = 0,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher (no autograd): returns out (tokens, heads, head_dim) in q's dtype and lse (heads, tokens) fp32.

    cu_seqlens must be valid (0 first, non-decreasing, total_tokens last, lengths <= max_seqlen): see
    check_cu_seqlens. `seed` is an int or an int64 tensor on q's device (its first element). `out`, if given, is
    written in place (any token / head strides, unit last stride). `config` pins a launch config (BLOCK_M,
    BLOCK_N) instead of the default choice.
    """
    softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    check_attention_inputs("varlen_attention_fwd", q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1):
        raise ValueError("varlen_attention_fwd: out must match q in shape and dtype, with unit last stride")
    seed, seed_tensor = seed_arguments(seed, q.device) if dropout_p > 0.0 else (0, None)
    return attention_fwd(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, out, config)


def attention_fwd(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor, out=None,
                  config=None):  # fmt: skip
    """The forward launch on validated inputs (varlen_attention_fwd's checks done by the caller)."""
    head_dim = q.shape[-1]
    q, k, v = unit_last_stride(q), unit_last_stride(k), unit_last_stride(v)
    total, heads, _ = q.shape
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or max_seqlen == 0:
        return out, lse
    kernel, fixed = _fwd_launch(head_dim, q.dtype, config)

    def grid(meta):
        return (cdiv(max_seqlen, meta["BLOCK_M"]) * batch * heads,)

    launch(
        kernel, grid,
        q, k, v, out, lse, cu_seqlens,
        softmax_scale * 1.4426950408889634, 1.0 / (1.0 - dropout_p), dropout_threshold(dropout_p), seed, seed_tensor,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        total, heads, max_seqlen, seq_bucket(max_seqlen),
        HEAD_DIM=head_dim, HAS_DROPOUT=dropout_p > 0.0, SEED_IN_MEMORY=seed_tensor is not None,
        DOT_PRECISION=dot_precision(q.dtype), **fixed,
    )  # fmt: skip
    return out, lse


def varlen_dropout_mask(
    seed: int | torch.Tensor, cu_seqlens: torch.Tensor, heads: int, max_seqlen: int, dropout_p: float
) -> torch.Tensor:
    """The keep-mask the kernels draw for `seed` (an int, or an int64 tensor whose first element is the seed): bool (batch, heads, max_seqlen, max_seqlen), block [b, :, :L, :L]
    for sequence b of length L (False outside), as varlen_attention_ref's dropout_mask takes it.

    Runs the kernels' own Philox helper, so it is exact: with it the reference reproduces the kernel's dropout.
    The mask does not depend on max_seqlen beyond its size (counters use the position in the sequence).
    """
    check_kernel_device("varlen_dropout_mask", cu_seqlens)
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
        raise TypeError("varlen_dropout_mask: cu_seqlens must be a 1-D int32 tensor")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"varlen_dropout_mask: dropout_p must be in [0, 1), got {dropout_p}")
    batch = cu_seqlens.numel() - 1
    mask = torch.zeros((batch, heads, max_seqlen, max_seqlen), dtype=torch.int8, device=cu_seqlens.device)
    if mask.numel() == 0:
        return mask.bool()
    seed, seed_tensor = seed_arguments(seed, cu_seqlens.device)
    block = 128
    grid = (batch * heads, cdiv(max_seqlen, block), cdiv(max_seqlen, block))
    _dropout_mask_kernel[grid](
        mask, cu_seqlens, seed, seed_tensor, dropout_threshold(dropout_p), heads, max_seqlen,
        SEED_IN_MEMORY=seed_tensor is not None, BLOCK_M=block, BLOCK_N=block, num_warps=8,
    )  # fmt: skip
    return mask.bool()
