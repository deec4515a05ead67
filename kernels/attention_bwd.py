"""Variable-length flash attention, backward: dq, dk, dv from dout, the forward's output and its logsumexp.

With S = scale * Q K^T, P = softmax(S) (rebuilt from the saved logsumexp), Z the dropout keep-mask and
r = 1 / (1 - p):  dV = (r Z * P)^T dO,  dP = r Z * (dO V^T),  dS = P * (dP - delta),  dQ = scale dS K,
dK = scale dS^T Q, where delta = rowsum(dO * O) (a small preprocess kernel; it equals rowsum(P * dP), also under
dropout, because O already carries the mask).

dQ without atomics: one kernel whose program i computes dK, dV for key block i (looping over the sequence's
query blocks) and then dQ for query block i (looping over its key blocks), each written exactly once. That
recomputes Q K^T and dO V^T for dQ (7 block matmuls per tile pair instead of 5), which we accept for:
bitwise-reproducible gradients (training runs and the reference-vs-fused convergence test replay exactly), no
fp32 dQ scratch buffer to zero and convert, and a packed dqkv written in place. Programs of one (sequence, head)
are adjacent in the grid, so its Q, K, V, dO stay in L2 across them.

deterministic=False (ATOMIC_DQ) is FlashAttention-2's way instead: while looping over query blocks for dK, dV,
each program also adds scale dS K into a zeroed fp32 dQ buffer with atomics, and skips the dQ loop; the launcher
converts the buffer into dq. 5 block matmuls per tile pair, at the price of the buffer's traffic and dq bits that
depend on the order of the additions. Which is faster at BERT's shapes is for bench_attention to say.

Dtype contract: inputs fp16 / bf16 / fp32; all accumulations in fp32 (dq, dk, dv accumulators, delta, softmax);
P and dS are cast to the input dtype for their matmuls (as in FlashAttention); gradients are stored in the input
dtype. fp32 inputs use exact ("ieee") dots. Dropout regenerates the forward's keep-mask from the same seed.
Empty sequences have no rows and write nothing; rows past a sequence's end are masked on load and never stored.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import autotune, cdiv, dot_precision, interpreting, launch_kwargs, seed_arguments
from ._launch import launch
from .attention_fwd import (
    _NO_SPECIALIZE,
    AUTOTUNE_KEY,
    LOG2E,
    _dropout_keep,
    check_attention_inputs,
    config_group,
    config_group_fp32,
    dropout_threshold,
    seq_bucket,
    tiles_within_sequences,
    unit_last_stride,
    use_autotune,
)


@triton.jit
def _bwd_preprocess(
    Out, DO,  # (tokens, heads, HEAD_DIM)
    Delta,  # (heads, tokens) fp32: rowsum(dO * O)
    stride_ot, stride_oh, stride_dot, stride_doh, total_tokens,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = rows < total_tokens
    o = tl.load(Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], mask=ok[:, None], other=0.0)
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + h * total_tokens + rows, delta, mask=ok)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v,  # (BLOCK_N1, HEAD_DIM) accumulators and this program's keys / values
    q_base, do_base, lse_base, delta_base, dq_acc_base, stride_qt, stride_dot, stride_dq_acc_t,
    lo, hi, seq_len, start_n, softmax_scale, qk_scale, dropout_scale, seed, bh, dropout_threshold,
    HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
    MASK_Q: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr, ATOMIC_DQ: tl.constexpr,
):
    """Queries lo .. hi in steps of BLOCK_M1 against keys start_n ..; works on transposed tiles (keys x queries).

    MASK_Q for the last, partial query block only; its padding queries load as zeros and get P = 0.
    ATOMIC_DQ: also add this key block's share of dQ (scale * dS K) into the fp32 buffer at dq_acc_base.
    """
    offs_m = tl.arange(0, BLOCK_M1)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M1):
        start_m = tl.multiple_of(start_m, BLOCK_M1)
        rows = start_m + offs_m
        qt_ptrs = q_base + rows[None, :] * stride_qt + offs_d[:, None]  # (HEAD_DIM, BLOCK_M1): Q^T
        do_ptrs = do_base + rows[:, None] * stride_dot + offs_d[None, :]
        if MASK_Q:
            row_ok = rows < seq_len
            qt = tl.load(qt_ptrs, mask=row_ok[None, :], other=0.0)
            lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * LOG2E
        else:
            qt = tl.load(qt_ptrs)
            lse2 = tl.load(lse_base + rows) * LOG2E
        qkt = tl.dot(k, qt, input_precision=DOT_PRECISION)
        pt = tl.math.exp2(qkt * qk_scale - lse2[None, :])  # P^T (BLOCK_N1, BLOCK_M1)
        if MASK_Q:
            pt = tl.where(row_ok[None, :], pt, 0.0)
            do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        else:
            do = tl.load(do_ptrs)
            delta = tl.load(delta_base + rows)
        if HAS_DROPOUT:
            keep_t = tl.trans(_dropout_keep(seed, bh, rows, start_n, dropout_threshold, BLOCK_M1, BLOCK_N1))
            dv += tl.dot(tl.where(keep_t, pt, 0.0).to(do.dtype), do, input_precision=DOT_PRECISION)  # r: at store
        else:
            dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        if HAS_DROPOUT:
            dpt = tl.where(keep_t, dpt * dropout_scale, 0.0)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(dst).to(k.dtype), k, input_precision=DOT_PRECISION) * softmax_scale
            dq_ptrs = dq_acc_base + rows[:, None] * stride_dq_acc_t + offs_d[None, :]
            if MASK_Q:
                tl.atomic_add(dq_ptrs, dq, mask=(rows < seq_len)[:, None], sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq, sem="relaxed")
    return dk, dv


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse2, delta,  # (BLOCK_M2, HEAD_DIM) accumulator, queries, dO; (BLOCK_M2,) log2 lse and delta
    k_base, v_base, stride_kt, stride_vt,
    lo, hi, seq_len, rows, qk_scale, dropout_scale, seed, bh, dropout_threshold,
    HEAD_DIM: tl.constexpr, BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
    MASK_KEYS: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Keys lo .. hi in steps of BLOCK_N2 for this program's queries. MASK_KEYS for the last, partial block only."""
    offs_n = tl.arange(0, BLOCK_N2)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N2):
        start_n = tl.multiple_of(start_n, BLOCK_N2)
        cols = start_n + offs_n
        kt_ptrs = k_base + cols[None, :] * stride_kt + offs_d[:, None]  # (HEAD_DIM, BLOCK_N2): K^T
        vt_ptrs = v_base + cols[None, :] * stride_vt + offs_d[:, None]
        if MASK_KEYS:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < seq_len, other=0.0)
            vt = tl.load(vt_ptrs, mask=cols[None, :] < seq_len, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        qk = tl.dot(q, kt, input_precision=DOT_PRECISION)
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASK_KEYS:  # padding keys would get exp2(-lse), which can overflow: zero them explicitly
            p = tl.where(cols[None, :] < seq_len, p, 0.0)
        dp = tl.dot(do, vt, input_precision=DOT_PRECISION)
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, bh, rows, start_n, dropout_threshold, BLOCK_M2, BLOCK_N2)
            dp = tl.where(keep, dp * dropout_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT_PRECISION)
    return dq


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _bwd_kernel(
    Q, K, V, DO,  # (tokens, heads, HEAD_DIM): inputs and the output's gradient, any token / head strides
    DQ, DK, DV,  # (tokens, heads, HEAD_DIM): gradients, each element written once
    DQ_ACC,  # ATOMIC_DQ: (tokens, heads, HEAD_DIM) fp32, zeroed; every key block adds its share of dQ. Else unused.
    Lse, Delta,  # (heads, tokens) fp32: forward logsumexp (natural log), rowsum(dO * O)
    cu_seqlens,  # (batch + 1,) int32
    softmax_scale, qk_scale, dropout_scale, dropout_threshold, seed,
    SEED,  # (1,) int64 seed, read instead of `seed` when SEED_IN_MEMORY
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh, stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_dq_acc_t, stride_dq_acc_h,
    total_tokens, heads, max_seqlen,
    seq_bucket,  # autotune key only
    HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
    BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, SEED_IN_MEMORY: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
):
    tl.static_assert(BLOCK_N1 == BLOCK_M2)  # program i owns key block i and query block i
    n_blocks = tl.cdiv(max_seqlen, BLOCK_N1)
    pid = tl.program_id(0)
    bh = pid // n_blocks
    start = (pid % n_blocks) * BLOCK_N1
    b = bh // heads
    h = bh % heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    if start >= seq_len:
        return
    if SEED_IN_MEMORY:  # only with dropout
        seed = tl.load(SEED)
    seq_start = seq_start.to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = Q + seq_start * stride_qt + h * stride_qh
    k_base = K + seq_start * stride_kt + h * stride_kh
    v_base = V + seq_start * stride_vt + h * stride_vh
    do_base = DO + seq_start * stride_dot + h * stride_doh
    lse_base = Lse + h * total_tokens + seq_start
    delta_base = Delta + h * total_tokens + seq_start
    dq_acc_base = DQ_ACC + seq_start * stride_dq_acc_t + h * stride_dq_acc_h

    # dK, dV for keys start .. start + BLOCK_N1, over all queries of the sequence.
    cols = start + tl.arange(0, BLOCK_N1)
    col_ok = cols < seq_len
    k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    dk = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    full_end = (seq_len // BLOCK_M1) * BLOCK_M1
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base, stride_qt, stride_dot, stride_dq_acc_t,
        0, full_end, seq_len, start, softmax_scale, qk_scale, dropout_scale, seed, bh, dropout_threshold,
        HEAD_DIM, BLOCK_M1, BLOCK_N1, False, HAS_DROPOUT, DOT_PRECISION, ATOMIC_DQ,
    )
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base, stride_qt, stride_dot, stride_dq_acc_t,
        full_end, seq_len, seq_len, start, softmax_scale, qk_scale, dropout_scale, seed, bh, dropout_threshold,
        HEAD_DIM, BLOCK_M1, BLOCK_N1, True, HAS_DROPOUT, DOT_PRECISION, ATOMIC_DQ,
    )
    if HAS_DROPOUT:
        dv = dv * dropout_scale
    dk = dk * softmax_scale
    dv_ptrs = DV + seq_start * stride_dvt + h * stride_dvh + cols[:, None] * stride_dvt + offs_d[None, :]
    dk_ptrs = DK + seq_start * stride_dkt + h * stride_dkh + cols[:, None] * stride_dkt + offs_d[None, :]
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])

    if ATOMIC_DQ:  # dQ was added up by the key blocks; the launcher converts it
        return
    # dQ for queries start .. start + BLOCK_M2, over all keys of the sequence.
    rows = start + tl.arange(0, BLOCK_M2)
    row_ok = rows < seq_len
    q = tl.load(q_base + rows[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(do_base + rows[:, None] * stride_dot + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * LOG2E
    delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
    dq = tl.zeros((BLOCK_M2, HEAD_DIM), dtype=tl.float32)
    full_end = (seq_len // BLOCK_N2) * BLOCK_N2
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt,
        0, full_end, seq_len, rows, qk_scale, dropout_scale, seed, bh, dropout_threshold,
        HEAD_DIM, BLOCK_M2, BLOCK_N2, False, HAS_DROPOUT, DOT_PRECISION,
    )
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt,
        full_end, seq_len, seq_len, rows, qk_scale, dropout_scale, seed, bh, dropout_threshold,
        HEAD_DIM, BLOCK_M2, BLOCK_N2, True, HAS_DROPOUT, DOT_PRECISION,
    )
    dq = dq * softmax_scale
    dq_ptrs = DQ + seq_start * stride_dqt + h * stride_dqh + rows[:, None] * stride_dqt + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])


def _bwd_config(m1, n1, m2, n2, warps, stages):
    return triton.Config(
        {"BLOCK_M1": m1, "BLOCK_N1": n1, "BLOCK_M2": m2, "BLOCK_N2": n2}, num_warps=warps, num_stages=stages
    )


# Hopper: 128-key blocks held in registers while 32-query blocks stream past (and the mirror image for dQ) is
# the shape Triton's fused-attention tutorial tunes for head_dim 64; a few neighbours for short / long sequences.
BWD_CONFIGS = {
    "small": [  # head_dim <= 64
        _bwd_config(32, 128, 128, 32, 4, 5),
        _bwd_config(64, 128, 128, 64, 8, 3),
        _bwd_config(32, 64, 64, 32, 4, 3),
        _bwd_config(16, 128, 128, 16, 4, 4),
    ],
    "large": [  # head_dim 128
        _bwd_config(32, 128, 128, 32, 8, 3),
        _bwd_config(32, 64, 64, 32, 4, 3),
        _bwd_config(16, 64, 64, 16, 4, 2),
    ],
}
# fp32 ("ieee" dots on CUDA cores): fixed configs that compile for sm_90a without spilling (see FWD_FP32_CONFIGS)
BWD_FP32_CONFIGS = {
    "small": _bwd_config(16, 64, 64, 16, 8, 2),
    "medium": _bwd_config(16, 64, 64, 16, 8, 2),
    "large": _bwd_config(16, 32, 32, 16, 8, 2),
}
_bwd_tuned: dict = {}


def _bwd_launch(head_dim: int, dtype: torch.dtype, config: triton.Config | None, atomic_dq: bool):
    if config is not None:
        return _bwd_kernel, launch_kwargs(config)
    if use_autotune(dtype):
        key = (config_group(head_dim), atomic_dq)
        if key not in _bwd_tuned:
            # the atomic variant adds into DQ_ACC: each timed trial must start from zeros
            _bwd_tuned[key] = autotune(
                BWD_CONFIGS[key[0]], AUTOTUNE_KEY, reset_to_zero=["DQ_ACC"] if atomic_dq else None,
                prune=tiles_within_sequences(("BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2")),
            )(_bwd_kernel)
        return _bwd_tuned[key], {}
    if interpreting():  # BLOCK_M1 != BLOCK_N1 on purpose: the CPU tests cover the mixed-size tiling too
        return _bwd_kernel, {"BLOCK_M1": 64, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 64}
    return _bwd_kernel, launch_kwargs(BWD_FP32_CONFIGS[config_group_fp32(head_dim)])


def varlen_attention_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | torch.Tensor = 0,
    dq: torch.Tensor | None = None,
    dk: torch.Tensor | None = None,
    dv: torch.Tensor | None = None,
    config: triton.Config | None = None,
    deterministic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launcher (no autograd): (dq, dk, dv) for the forward that produced out and lse with the same arguments.

    dq / dk / dv, if given, are written in place (e.g. the three slices of a packed dqkv); any token / head strides.
    `config` pins a launch config (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2) instead of the default choice.
    deterministic=False adds dQ up with fp32 atomics (5 block matmuls per tile pair instead of 7, plus a zeroed
    fp32 buffer and a conversion); the order of the additions varies, so dq may differ between runs in the last
    bits.
    """
    softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    check_attention_inputs("varlen_attention_bwd", q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    if dout.shape != q.shape or out.shape != q.shape or dout.dtype != q.dtype or out.dtype != q.dtype:
        raise ValueError("varlen_attention_bwd: dout and out must match q in shape and dtype")
    total, heads, _ = q.shape
    if lse.shape != (heads, total) or lse.dtype != torch.float32:
        raise ValueError(f"varlen_attention_bwd: lse must be float32 of shape {(heads, total)}")
    for name, given in (("dq", dq), ("dk", dk), ("dv", dv)):
        if given is not None and (given.shape != q.shape or given.dtype != q.dtype or given.stride(-1) != 1):
            raise ValueError(f"varlen_attention_bwd: {name} must match q in shape and dtype, with unit last stride")
    seed, seed_tensor = seed_arguments(seed, q.device) if dropout_p > 0.0 else (0, None)
    return attention_bwd(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                         seed_tensor, dq, dk, dv, config, deterministic)


def _grad_buffer(like: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
    return torch.empty(like.shape, dtype=like.dtype, device=like.device) if given is None else given


def attention_bwd(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, seed_tensor,
                  dq=None, dk=None, dv=None, config=None, deterministic=True):  # fmt: skip
    """The backward launches on validated inputs (varlen_attention_bwd's checks done by the caller)."""
    head_dim = q.shape[-1]
    total, heads, _ = q.shape
    q, k, v, dout, out = (unit_last_stride(t) for t in (q, k, v, dout, out))
    dq, dk, dv = _grad_buffer(q, dq), _grad_buffer(k, dk), _grad_buffer(v, dv)
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or max_seqlen == 0:
        return dq, dk, dv

    delta = torch.empty_like(lse)
    block_t = 64 if interpreting() else 128
    launch(
        _bwd_preprocess, (cdiv(total, block_t), heads),
        out, dout, delta, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), total,
        HEAD_DIM=head_dim, BLOCK_T=block_t,
    )  # fmt: skip

    atomic_dq = not deterministic
    dq_acc = torch.zeros((total, heads, head_dim), dtype=torch.float32, device=q.device) if atomic_dq else dq
    kernel, fixed = _bwd_launch(head_dim, q.dtype, config, atomic_dq)

    def grid(meta):
        return (cdiv(max_seqlen, meta["BLOCK_N1"]) * batch * heads,)

    launch(
        kernel, grid,
        q, k, v, dout, dq, dk, dv, dq_acc, lse, delta, cu_seqlens,
        softmax_scale, softmax_scale * 1.4426950408889634, 1.0 / (1.0 - dropout_p), dropout_threshold(dropout_p),
        seed, seed_tensor,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
        dq.stride(0), dq.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        dq_acc.stride(0), dq_acc.stride(1), total, heads, max_seqlen, seq_bucket(max_seqlen),
        HEAD_DIM=head_dim, HAS_DROPOUT=dropout_p > 0.0, SEED_IN_MEMORY=seed_tensor is not None,
        DOT_PRECISION=dot_precision(q.dtype), ATOMIC_DQ=atomic_dq, **fixed,
    )  # fmt: skip
    if atomic_dq:
        dq.copy_(dq_acc)
    return dq, dk, dv
