"""Chunked linear + cross-entropy against the materialised-logits reference (the 2x rule, fp64 ground truth)."""

import pytest
import torch
from bert_fast_kernels import linear_cross_entropy, linear_cross_entropy_ref

from tests.tolerance import assert_within_pytorch_error


def inputs(n, h, v, dtype, ignore_frac=0.3):
    x = torch.randn(n, h, dtype=dtype, requires_grad=True)
    w = (torch.randn(v, h) * 0.2).requires_grad_()
    b = torch.randn(v).requires_grad_()
    labels = torch.randint(0, v, (n,))
    labels[torch.rand(n) < ignore_frac] = -100
    return x, w, b, labels


def grads(fn, x, w, b, labels):
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    loss = fn(x, w, b, labels)
    loss.backward(torch.tensor(1.7, dtype=loss.dtype))  # a non-unit upstream gradient
    return loss, x.grad, w.grad, b.grad


# atol: a few float32 ulps of a loss near log(vocab) ~ 5, whose chunked sum may round where PyTorch's happens not to
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float16, 1e-4)])
@pytest.mark.parametrize("n, v, chunk", [(37, 101, 8), (5, 7, 64), (64, 300, 64)])
def test_matches_reference(dtype, atol, n, v, chunk):
    x, w, b, labels = inputs(n, 24, v, dtype)
    out = grads(lambda *a: linear_cross_entropy(*a, chunk_rows=chunk), x, w, b, labels)
    out_pt = grads(linear_cross_entropy_ref, x, w, b, labels)
    out_ref = grads(linear_cross_entropy_ref, x.double(), w.double(), b.double(), labels)
    for name, o, p, r in zip(("loss", "dx", "dweight", "dbias"), out, out_pt, out_ref):
        assert_within_pytorch_error(o, p, r, atol=atol, name=name)


def test_all_rows_ignored_gives_zero():
    x, w, b, labels = inputs(6, 8, 11, torch.float32)
    labels[:] = -100
    loss = linear_cross_entropy(x, w, b, labels)
    loss.backward()
    assert loss.item() == 0.0 and not x.grad.any() and not w.grad.any()


def test_shape_errors():
    x, w, b, labels = inputs(6, 8, 11, torch.float32)
    with pytest.raises(ValueError, match="do not match"):
        linear_cross_entropy(x[:, :4], w, b, labels)
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(x, w, b, labels[:3])
