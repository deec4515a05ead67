"""Variable-length flash attention on a GPU: bf16, long sequences (to 4096), every launch config, the fp32 exact
path, dropout, determinism, torch.compile. Skipped without CUDA (tests/conftest.py).

Run: PYTHONPATH=.dev python -m pytest -q tests/kernels/test_varlen_attention_gpu.py
"""

from __future__ import annotations

import itertools

import pytest
import torch
from bert_fast_kernels import (
    padded_attention,
    padded_attention_ref,
    padded_dropout_mask,
    varlen_attention,
    varlen_attention_qkvpacked,
    varlen_attention_ref,
    varlen_dropout_mask,
)
from bert_fast_kernels.attention_bwd import BWD_CONFIGS, varlen_attention_bwd
from bert_fast_kernels.attention_fwd import FWD_CONFIGS, varlen_attention_fwd
from test_varlen_attention import (
    ATOL,
    RAGGED,
    assert_matches_reference,
    cu_seqlens_of,
    padding_mask,
    strided_qkv,
)

pytestmark = pytest.mark.gpu
DEV = "cuda"
LONG = (1, 7, 113, 129, 512, 1000, 2048, 4096)
HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_long_ragged_batch(dtype, head_dim):
    heads, cu = 2, cu_seqlens_of(LONG, DEV)
    q, k, v = strided_qkv(sum(LONG), heads, head_dim, dtype, DEV)
    out = varlen_attention(q, k, v, cu, max(LONG))
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert_matches_reference((out, *grads), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_every_launch_config(head_dim):
    """Each autotune candidate compiles and is correct (the autotuner would silently skip a broken one)."""
    dtype, heads, cu = torch.bfloat16, 3, cu_seqlens_of(RAGGED + (300,), DEV)
    max_seqlen = 300
    q, k, v = (torch.randn(int(cu[-1]), heads, head_dim, dtype=dtype, device=DEV) for _ in range(3))
    dout = torch.randn_like(q)
    group = "small" if head_dim <= 64 else "large"
    ref_out = None
    for fwd_config in FWD_CONFIGS[group]:
        out, lse = varlen_attention_fwd(q, k, v, cu, max_seqlen, 0.1, None, 42, config=fwd_config)
        if ref_out is None:
            ref_out, ref_lse = out, lse
        torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=0, msg=f"{fwd_config}")
        torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=0, msg=f"{fwd_config}")
    keep = varlen_dropout_mask(42, cu, heads, max_seqlen, 0.1)
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    expect = torch.autograd.grad(
        varlen_attention_ref(*leaves, cu, max_seqlen, 0.1, dropout_mask=keep), leaves, dout.float()
    )
    for bwd_config, deterministic in itertools.product(BWD_CONFIGS[group], (True, False)):
        grads = varlen_attention_bwd(dout, q, k, v, ref_out, ref_lse, cu, max_seqlen, 0.1, None, 42, config=bwd_config,
                                     deterministic=deterministic)
        for name, g, e in zip(("dq", "dk", "dv"), grads, expect):
            torch.testing.assert_close(g.float(), e, atol=5e-2, rtol=5e-2,
                                       msg=f"{name} {bwd_config} deterministic={deterministic}")


def test_atomic_dq_long_ragged_bf16():
    """deterministic=False through the autotuner (its trials must start from a zeroed dQ buffer) on lengths to
    4096; dk, dv are still bitwise reproducible, dq within rounding of the deterministic path's."""
    heads, head_dim, cu = 4, 64, cu_seqlens_of(LONG, DEV)
    qkv = torch.randn(sum(LONG), 3, heads, head_dim, dtype=torch.bfloat16, device=DEV).requires_grad_()
    out = varlen_attention_qkvpacked(qkv, cu, max(LONG), deterministic=False)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    assert_matches_reference((out, *dqkv.unbind(1)), varlen_attention_ref, qkv.unbind(1), dout, cu_seqlens=cu)
    (again,) = torch.autograd.grad(varlen_attention_qkvpacked(qkv, cu, max(LONG), deterministic=False), qkv, dout)
    assert torch.equal(again[:, 1:], dqkv[:, 1:])
    (det,) = torch.autograd.grad(varlen_attention_qkvpacked(qkv, cu, max(LONG)), qkv, dout)
    torch.testing.assert_close(det[:, 0].float(), dqkv[:, 0].float(), atol=2e-2, rtol=2e-2)


def test_fp32_exact_path():
    heads, head_dim, cu = 2, 64, cu_seqlens_of(RAGGED + (700,), DEV)
    q, k, v = strided_qkv(int(cu[-1]), heads, head_dim, torch.float32, DEV)
    out = varlen_attention(q, k, v, cu, 700)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert_matches_reference((out, *grads), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu)


@pytest.mark.parametrize("dtype", HALF)
def test_qkvpacked_dropout_is_deterministic_and_matches_reference(dtype):
    heads, head_dim, p, cu = 12, 64, 0.1, cu_seqlens_of(RAGGED + (512,), DEV)
    qkv = torch.randn(int(cu[-1]), 3 * heads * head_dim, dtype=dtype, device=DEV)
    qkv = qkv.view(-1, 3, heads, head_dim).requires_grad_()
    out = varlen_attention_qkvpacked(qkv, cu, 512, dropout_p=p, seed=1234)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    out2 = varlen_attention_qkvpacked(qkv, cu, 512, dropout_p=p, seed=1234)
    (dqkv2,) = torch.autograd.grad(out2, qkv, dout)
    assert torch.equal(out, out2) and torch.equal(dqkv, dqkv2)  # no atomics: bitwise reproducible
    keep = varlen_dropout_mask(1234, cu, heads, 512, p)
    assert_matches_reference(
        (out, *dqkv.unbind(1)), varlen_attention_ref, qkv.unbind(1), dout, cu_seqlens=cu, dropout_p=p,
        dropout_mask=keep,
    )  # fmt: skip


def test_forward_draws_the_exported_mask():
    lengths, heads, head_dim, p = (5, 64, 33, 128), 4, 128, 0.1
    cu, total = cu_seqlens_of(lengths, DEV), sum(lengths)
    position = torch.cat([torch.arange(n, device=DEV) for n in lengths])
    v = torch.nn.functional.one_hot(position, head_dim).half()[:, None, :].expand(total, heads, head_dim)
    q = torch.randn(total, heads, head_dim, device=DEV, dtype=torch.float16)
    k = torch.zeros(total, heads, head_dim, device=DEV, dtype=torch.float16)
    out = varlen_attention(q, k, v, cu, max(lengths), dropout_p=p, seed=99).float()
    keep = varlen_dropout_mask(99, cu, heads, max(lengths), p)
    for b, (start, n) in enumerate(zip(cu.tolist(), lengths)):
        scaled = out[start : start + n, :, :n].transpose(0, 1) * n * (1 - p)
        assert torch.equal(scaled.round().bool(), keep[b, :, :n, :n])


@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_padded_attention_bf16(dropout_p):
    batch, seq, heads, head_dim = 8, 200, 12, 64
    mask = padding_mask(batch, seq, DEV)
    q, k, v = (torch.randn(batch, seq, heads, head_dim, dtype=torch.bfloat16, device=DEV) for _ in range(3))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = padded_attention(q, k, v, mask, dropout_p, seed=5)
    keep = padded_dropout_mask(5, mask, heads, dropout_p) if dropout_p else None
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert_matches_reference(
        (out, *grads), padded_attention_ref, (q, k, v), dout, key_padding_mask=mask, dropout_p=dropout_p,
        dropout_mask=keep,
    )  # fmt: skip


def test_empty_sequences_write_nothing_else():
    lengths, heads, head_dim = (0, 5, 0, 300, 1, 0), 2, 64
    cu = cu_seqlens_of(lengths, DEV)
    q, k, v = (torch.randn(sum(lengths), heads, head_dim, dtype=torch.bfloat16, device=DEV) for _ in range(3))
    out = torch.full_like(q, float("nan"))
    _, lse = varlen_attention_fwd(q, k, v, cu, 300, out=out)
    dout = torch.randn_like(out)
    dq, dk, dv = (torch.full_like(q, float("nan")) for _ in range(3))
    varlen_attention_bwd(dout, q, k, v, out, lse, cu, 300, dq=dq, dk=dk, dv=dv)
    assert_matches_reference((out, dq, dk, dv), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu)


def test_torch_compile_fullgraph():
    heads, head_dim, cu = 4, 64, cu_seqlens_of(RAGGED, DEV)
    w = torch.randn(heads * head_dim, 3 * heads * head_dim, device=DEV, dtype=torch.bfloat16) * 0.05

    def block(x):
        qkv = (x @ w).view(x.shape[0], 3, heads, head_dim)
        return varlen_attention_qkvpacked(qkv, cu, max(RAGGED), validate=False).reshape(x.shape[0], -1)

    x = torch.randn(sum(RAGGED), heads * head_dim, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    eager = block(x)
    (g_eager,) = torch.autograd.grad(eager.float().square().sum(), x)
    compiled = torch.compile(block, fullgraph=True)(x)
    (g_compiled,) = torch.autograd.grad(compiled.float().square().sum(), x)
    torch.testing.assert_close(compiled, eager, atol=ATOL[torch.bfloat16], rtol=0)
    torch.testing.assert_close(g_compiled, g_eager, atol=1e-2, rtol=1e-2)


def test_opcheck_gpu():
    cu = cu_seqlens_of((3, 70), DEV)
    q, k, v = (torch.randn(73, 2, 64, device=DEV, dtype=torch.float16, requires_grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.bert_fast.varlen_attention_fwd.default, (q, k, v, cu, 70, 0.0, 0.125, 0, True))
    qkv = torch.randn(73, 3, 2, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    torch.library.opcheck(torch.ops.bert_fast.varlen_attention_qkvpacked_fwd.default, (qkv, cu, 70, 0.1, 0.125, 3, True))
