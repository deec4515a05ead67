"""Variable-length flash attention against its reference (kernels/reference.py), on the CPU under the interpreter.

Outputs and dq / dk / dv follow the three-way rule: |kernel - fp64 reference| <= 2 |PyTorch in the same dtype -
fp64 reference| + atol. Shapes are small (the interpreter runs every block op in numpy) but ragged: lengths 1, 7,
113, 128, 129 in one batch cross the block boundaries of every loop (blocks of 64 / 128 under the interpreter).
The helpers here also serve the GPU tests (test_varlen_attention_gpu.py).
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
from bert_fast_kernels.attention_bwd import varlen_attention_bwd
from bert_fast_kernels.attention_fwd import varlen_attention_fwd
from tolerance import assert_within_pytorch_error

RAGGED = (1, 7, 113, 128, 129)
ATOL = {torch.float32: 2e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}


def cu_seqlens_of(lengths, device="cpu") -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)


def strided_qkv(total, heads, head_dim, dtype, device="cpu"):
    """Leaf q, k, v with three different layouts: contiguous, token-strided (a wider last dim sliced), head-major."""
    q = torch.randn(total, heads, head_dim, dtype=dtype, device=device)
    k = torch.randn(total, heads, 2 * head_dim, dtype=dtype, device=device)[..., :head_dim]
    v = torch.randn(heads, total, head_dim, dtype=dtype, device=device).transpose(0, 1)
    assert not k.is_contiguous() and not v.is_contiguous()
    return [t.detach().requires_grad_() for t in (q, k, v)]


def reference_pair(ref_fn, inputs, dout, **kwargs):
    """(out, *grads) of the reference in the inputs' dtype and in float64."""
    results = []
    for dtype in (inputs[0].dtype, torch.float64):
        leaves = [t.detach().to(dtype).requires_grad_() for t in inputs]
        out = ref_fn(*leaves, **kwargs)
        grads = torch.autograd.grad(out, leaves, dout.to(dtype))
        results.append((out, *grads))
    return results


def assert_matches_reference(results, ref_fn, inputs, dout, names=("out", "dq", "dk", "dv"), **kwargs):
    out_pt, out_ref = reference_pair(ref_fn, inputs, dout, **kwargs)
    atol = ATOL[inputs[0].dtype]
    for name, a, b, c in zip(names, results, out_pt, out_ref):
        assert_within_pytorch_error(a, b, c, atol=atol, name=name)


@pytest.mark.parametrize(
    "lengths, head_dim, dtype",
    [
        (RAGGED, 32, torch.float32),
        (RAGGED, 64, torch.float32),
        (RAGGED, 32, torch.float16),  # fp16 with head_dim 64: test_qkvpacked_ragged_batch
        ((3, 65, 20), 16, torch.float16),
        ((3, 65, 20), 128, torch.float32),
    ],
)
def test_ragged_batch_matches_reference(lengths, head_dim, dtype):
    heads, cu = 2, cu_seqlens_of(lengths)
    q, k, v = strided_qkv(sum(lengths), heads, head_dim, dtype)
    out = varlen_attention(q, k, v, cu, max(lengths))
    assert out.is_contiguous() and out.dtype == dtype
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert_matches_reference((out, *grads), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu)


def test_qkvpacked_ragged_batch():
    """The model's path: qkv (tokens, 3, heads, head_dim) from one projection; one dqkv tensor comes back."""
    heads, head_dim, cu = 2, 64, cu_seqlens_of(RAGGED)
    hidden = torch.randn(sum(RAGGED), 3 * heads * head_dim, dtype=torch.float16)
    qkv = hidden.view(-1, 3, heads, head_dim).requires_grad_()
    out = varlen_attention_qkvpacked(qkv, cu, max(RAGGED), softmax_scale=0.2)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    assert dqkv.shape == qkv.shape
    assert_matches_reference(
        (out, *dqkv.unbind(1)), varlen_attention_ref, qkv.unbind(1), dout, cu_seqlens=cu, softmax_scale=0.2
    )


@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_atomic_dq_backward_matches_reference(dropout_p):
    """deterministic=False: dQ added up by every key block with fp32 atomics, through the packed public path
    (strided q / k / v views, dqkv written in place); the same gradients as the reference, under dropout too."""
    heads, head_dim, cu = 2, 32, cu_seqlens_of(RAGGED)
    qkv = torch.randn(sum(RAGGED), 3, heads, head_dim, dtype=torch.float16).requires_grad_()
    seed = int(torch.randint(0, 2**31 - 1, ()))
    out = varlen_attention_qkvpacked(qkv, cu, max(RAGGED), dropout_p=dropout_p, seed=seed, deterministic=False)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    keep = varlen_dropout_mask(seed, cu, heads, max(RAGGED), dropout_p) if dropout_p else None
    assert_matches_reference(
        (out, *dqkv.unbind(1)), varlen_attention_ref, qkv.unbind(1), dout, cu_seqlens=cu, dropout_p=dropout_p,
        dropout_mask=keep,
    )  # fmt: skip


def test_empty_sequences_and_every_row_written():
    """Zero-length sequences write nothing and break nothing; every real row of out / dq / dk / dv is written
    (the launchers write into NaN-poisoned buffers)."""
    lengths, heads, head_dim = (0, 5, 0, 17, 1, 0), 2, 32
    cu, total = cu_seqlens_of(lengths), sum(lengths)
    q, k, v = (torch.randn(total, heads, head_dim) for _ in range(3))
    out = torch.full_like(q, float("nan"))
    _, lse = varlen_attention_fwd(q, k, v, cu, max(lengths), out=out)
    dout = torch.randn_like(out)
    dq, dk, dv = (torch.full_like(q, float("nan")) for _ in range(3))
    varlen_attention_bwd(dout, q, k, v, out, lse, cu, max(lengths), dq=dq, dk=dk, dv=dv)
    assert torch.isfinite(lse).all()
    assert_matches_reference((out, dq, dk, dv), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu)


def test_no_tokens_at_all():
    q = torch.randn(0, 2, 32, requires_grad=True)
    out = varlen_attention(q, q, q, cu_seqlens_of((0, 0)), 0)
    assert out.shape == (0, 2, 32)
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad.shape == q.shape


def padding_mask(batch, seq, device="cpu"):
    """Right padding, left padding with a hole, one full row and one fully padded row."""
    mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    mask[1, seq // 2 :] = False
    mask[2, :3] = False
    mask[2, seq // 3] = False
    mask[3] = False
    return mask


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_padded_attention(dropout_p):
    batch, seq, heads, head_dim = 4, 37, 2, 32
    mask = padding_mask(batch, seq)
    q, k, v = (torch.randn(batch, seq, heads, head_dim, requires_grad=True) for _ in range(3))
    seed = int(torch.randint(0, 2**31 - 1, ()))
    out = padded_attention(q, k, v, mask, dropout_p, seed=seed)
    assert (out[~mask] == 0).all()
    keep = padded_dropout_mask(seed, mask, heads, dropout_p) if dropout_p else None
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert_matches_reference(
        (out, *grads), padded_attention_ref, (q, k, v), dout,
        key_padding_mask=mask, dropout_p=dropout_p, dropout_mask=keep,
    )  # fmt: skip


def test_seed_read_from_a_device_tensor():
    """A seed tensor (the kernels read it on the device) draws the int seed's mask in the forward and the backward;
    seed=None draws a fresh seed on the device each call."""
    lengths = (9, 1, 20)
    cu = cu_seqlens_of(lengths)
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    dout = torch.randn(sum(lengths), 2, 16)
    results = []
    for seed in (2**40 + 7, torch.tensor([2**40 + 7])):
        leaf = qkv.clone().requires_grad_()
        out = varlen_attention_qkvpacked(leaf, cu, 20, dropout_p=0.25, seed=seed)
        results.append((out, *torch.autograd.grad(out, leaf, dout)))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert torch.equal(varlen_dropout_mask(torch.tensor([2**40 + 7]), cu, 2, 20, 0.25),
                       varlen_dropout_mask(2**40 + 7, cu, 2, 20, 0.25))
    first = varlen_attention_qkvpacked(qkv, cu, 20, dropout_p=0.25)
    assert not torch.equal(first, varlen_attention_qkvpacked(qkv, cu, 20, dropout_p=0.25))


def test_dropout_matches_reference_given_the_kernel_mask():
    """The reference, handed the keep-mask regenerated from the seed, reproduces the kernel's output and gradients:
    the backward drops exactly what the forward dropped."""
    lengths, heads, head_dim, p = (1, 7, 70), 2, 32, 0.2
    cu = cu_seqlens_of(lengths)
    q, k, v = strided_qkv(sum(lengths), heads, head_dim, torch.float32)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    out = varlen_attention(q, k, v, cu, max(lengths), dropout_p=p, seed=seed)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    keep = varlen_dropout_mask(seed, cu, heads, max(lengths), p)
    assert_matches_reference(
        (out, *grads), varlen_attention_ref, (q, k, v), dout, cu_seqlens=cu, dropout_p=p, dropout_mask=keep
    )
    no_dropout = varlen_attention_ref(q, k, v, cu)
    assert (out - no_dropout).abs().max() > 0.05  # dropout did something


def test_forward_draws_the_exported_mask():
    """Probe the forward directly: with k = 0 attention is uniform (1 / L) and with v[j] = e_j the output is
    out[i, j] = keep[i, j] / (L (1 - p)), so the kernel's own mask can be read off its output."""
    lengths, heads, head_dim, p = (5, 64, 33), 2, 64, 0.3
    cu, total = cu_seqlens_of(lengths), sum(lengths)
    position = torch.cat([torch.arange(n) for n in lengths])
    v = torch.nn.functional.one_hot(position, head_dim).float()[:, None, :].expand(total, heads, head_dim)
    q, k = torch.randn(total, heads, head_dim), torch.zeros(total, heads, head_dim)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    out = varlen_attention(q, k, v, cu, max(lengths), dropout_p=p, seed=seed)
    keep = varlen_dropout_mask(seed, cu, heads, max(lengths), p)
    for b, (start, n) in enumerate(zip(cu.tolist(), lengths)):
        scaled = out[start : start + n, :, :n].transpose(0, 1) * n * (1 - p)  # (heads, query, key)
        assert torch.allclose(scaled, scaled.round(), atol=1e-4)
        assert torch.equal(scaled.round().bool(), keep[b, :, :n, :n])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_statistics(p):
    lengths, heads = (128, 96, 128, 64), 2
    cu = cu_seqlens_of(lengths)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    keep = varlen_dropout_mask(seed, cu, heads, 128, p)
    blocks = [keep[b, :, :n, :n] for b, n in enumerate(lengths)]
    assert all(not keep[b, :, n:].any() and not keep[b, :, :, n:].any() for b, n in enumerate(lengths))
    kept = torch.cat([blk.flatten() for blk in blocks]).double()
    sigma = (p * (1 - p) / kept.numel()) ** 0.5
    assert abs(kept.mean().item() - (1 - p)) < 5 * sigma
    # each of the 8 keys sharing a Philox call uses its own bits: every key lane keeps at the same rate
    lanes = torch.cat([blk.reshape(-1, 8) for blk in blocks]).double()
    lane_rate = lanes.mean(dim=0)
    assert (lane_rate - (1 - p)).abs().max() < 5 * (sigma * 8**0.5)
    # no repeats across heads, sequences of equal length, seeds; the same seed gives the same mask
    assert not torch.equal(blocks[0][0], blocks[0][1])
    assert not torch.equal(blocks[0], blocks[2])
    assert not torch.equal(keep, varlen_dropout_mask(seed + 1, cu, heads, 128, p))
    wider = varlen_dropout_mask(seed, cu, heads, 130, p)  # positions, not max_seqlen, key the draw
    assert torch.equal(wider[:, :, :128, :128], keep)


def test_dropout_seed_comes_from_torch_generator():
    lengths, heads, head_dim = (3, 9), 1, 16
    cu = cu_seqlens_of(lengths)
    q, k, v = (torch.randn(sum(lengths), heads, head_dim) for _ in range(3))
    torch.manual_seed(7)
    a = varlen_attention(q, k, v, cu, 9, dropout_p=0.5)
    torch.manual_seed(7)
    b = varlen_attention(q, k, v, cu, 9, dropout_p=0.5)
    c = varlen_attention(q, k, v, cu, 9, dropout_p=0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(varlen_attention(q, k, v, cu, 9, seed=1), varlen_attention(q, k, v, cu, 9, seed=2))


def test_custom_op_registration():
    """torch.library.opcheck: schema, fake tensors, autograd registration and AOT dispatch of the packed op."""
    cu = cu_seqlens_of((3, 5))
    qkv = torch.randn(8, 3, 1, 16, requires_grad=True)
    torch.library.opcheck(torch.ops.bert_fast.varlen_attention_qkvpacked_fwd.default, (qkv, cu, 5, 0.0, 0.25, 0, None, True))
    seed = torch.tensor([7])  # a seed the kernel reads from memory
    torch.library.opcheck(torch.ops.bert_fast.varlen_attention_qkvpacked_fwd.default, (qkv, cu, 5, 0.1, 0.25, 0, seed, True))


def _bad_input_cases():
    q = torch.randn(10, 2, 32)
    cu = cu_seqlens_of((4, 6))
    x = torch.randn(2, 5, 2, 32)

    def call(*args, **kwargs):
        return lambda: varlen_attention(*args, **kwargs)

    return [
        (call(q, q[:9], q, cu, 6), ValueError, "same shape"),
        (call(q, q.half(), q, cu, 6), TypeError, "share a dtype"),
        (call(q.double(), q.double(), q.double(), cu, 6), TypeError, "float64"),
        (call(q[..., :24], q[..., :24], q[..., :24], cu, 6), ValueError, "head_dim 24"),
        (call(q[0], q[0], q[0], cu, 6), ValueError, "total_tokens, heads, head_dim"),
        (call(q, q.to("meta"), q, cu, 6), ValueError, "different devices"),
        (call(q, q, q, cu.long(), 6), TypeError, "int32"),
        (call(q, q, q, cu[None], 6), ValueError, "1-D"),
        (call(q, q, q, torch.tensor([1, 4, 10], dtype=torch.int32), 6), ValueError, "start at 0"),
        (call(q, q, q, torch.tensor([0, 6, 4, 10], dtype=torch.int32), 6), ValueError, "non-decreasing"),
        (call(q, q, q, torch.tensor([0, 4, 9], dtype=torch.int32), 6), ValueError, "ends at 9"),
        (call(q, q, q, cu, 5), ValueError, "max_seqlen 5"),
        (call(q, q, q, cu, 6, dropout_p=1.0), ValueError, "dropout_p"),
        (call(q, q, q, cu, 6, softmax_scale=-1.0), ValueError, "softmax_scale"),
        (lambda: varlen_attention_qkvpacked(q, cu, 6), ValueError, "qkv must be"),
        (lambda: padded_attention(x, x, x, torch.ones(2, 4)), ValueError, "key_padding_mask"),
        (lambda: padded_attention(x, x, x, torch.zeros(2, 5).masked_fill_(torch.eye(2, 5) > 0, -1e4)), ValueError,
         "additive"),
        (lambda: padded_attention(x, x[:, :4], x, None), ValueError, "same shape"),
    ]  # fmt: skip


BAD_INPUT_IDS = ["k-shape-differs", "dtype-mixed", "float64", "head-dim-24", "not-3d", "devices-differ",
                 "cu-seqlens-int64", "cu-seqlens-2d", "cu-seqlens-not-from-0", "cu-seqlens-decreasing",
                 "cu-seqlens-wrong-end", "max-seqlen-short", "dropout-p-1", "softmax-scale-negative", "qkv-wrong-shape",
                 "padded-mask-shape", "padded-additive-mask", "padded-k-shape-differs"]


@pytest.mark.parametrize("case", range(len(BAD_INPUT_IDS)), ids=BAD_INPUT_IDS)
def test_bad_input_raises(case):
    cases = _bad_input_cases()
    assert len(cases) == len(BAD_INPUT_IDS)  # a case added needs its name
    fn, error, message = cases[case]
    with pytest.raises(error, match=message):
        fn()


def test_autotuning_skips_tiles_longer_than_the_sequences():
    """At a 64-token bucket (fine-tuning's short sentences) the configs whose tiles fit are left (one forward config:
    nothing is timed); at 512 every config is a candidate."""
    import importlib

    fwd = importlib.import_module("bert_fast_kernels.attention_fwd")
    bwd = importlib.import_module("bert_fast_kernels.attention_bwd")
    prune_fwd = fwd.tiles_within_sequences(("BLOCK_M", "BLOCK_N"))
    prune_bwd = fwd.tiles_within_sequences(("BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2"))
    for group in ("small", "large"):
        (kept,) = prune_fwd(fwd.FWD_CONFIGS[group], {"seq_bucket": 64})
        assert kept.kwargs["BLOCK_M"] <= 64 and kept.kwargs["BLOCK_N"] <= 64
        kept = prune_bwd(bwd.BWD_CONFIGS[group], {"seq_bucket": 64})
        assert 1 <= len(kept) < len(bwd.BWD_CONFIGS[group])
        assert all(max(c.kwargs.values()) <= 64 for c in kept)
        assert prune_fwd(fwd.FWD_CONFIGS[group], {"seq_bucket": 512}) == fwd.FWD_CONFIGS[group]
