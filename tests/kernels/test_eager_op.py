"""EagerOp: eager calls skip torch.library's custom-op dispatch; anything that traces still gets the op. Both
faces run the same implementation, so they give the same numbers bit for bit."""

import importlib

import pytest
import torch
from bert_fast_kernels import add_layer_norm, bias_gelu, varlen_attention_qkvpacked
from tolerance import leaves, run
from torch.utils._python_dispatch import TorchDispatchMode

# the modules, not the functions of the same names the package exports
bias_gelu_module = importlib.import_module("bert_fast_kernels.bias_gelu")
ln_module = importlib.import_module("bert_fast_kernels.add_layer_norm")


class OpNames(TorchDispatchMode):
    """Records the name of every op dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _refuse(*args):
    raise AssertionError("called where it should not be")


def test_eager_calls_do_not_go_through_the_custom_ops(monkeypatch):
    monkeypatch.setattr(bias_gelu_module._bias_gelu, "op", _refuse)
    monkeypatch.setattr(bias_gelu_module.bias_gelu_backward, "op", _refuse)
    monkeypatch.setattr(ln_module._add_layer_norm, "op", _refuse)
    monkeypatch.setattr(ln_module._backward_op, "op", _refuse)
    x = torch.randn(5, 24, requires_grad=True)
    b = torch.randn(24, requires_grad=True)
    w = torch.randn(24, requires_grad=True)
    y = add_layer_norm(bias_gelu(x, b), x, w, b, dropout_p=0.1, seed=3)
    y.sum().backward()
    assert x.grad is not None and b.grad is not None and w.grad is not None


def test_inference_calls_skip_the_autograd_function(monkeypatch):
    class Refused:
        apply = staticmethod(_refuse)

    monkeypatch.setattr(bias_gelu_module._bias_gelu, "function", Refused)
    x, b = torch.randn(5, 24), torch.randn(24, requires_grad=True)
    with torch.no_grad():
        y = bias_gelu(x, b)
    assert y.grad_fn is None and torch.allclose(y, torch.nn.functional.gelu(x + b), atol=1e-6)
    y = bias_gelu(x, b.detach())  # grad mode on, but nothing requires a gradient
    assert y.grad_fn is None
    with pytest.raises(AssertionError):  # a gradient needed: the autograd.Function runs
        bias_gelu(x, b)


def test_a_dispatch_mode_sees_the_custom_ops():
    x = torch.randn(5, 24, requires_grad=True)
    b = torch.randn(24, requires_grad=True)
    with OpNames() as mode:
        bias_gelu(x, b).sum().backward()
    assert "bert_fast.bias_gelu_fwd.default" in mode.names
    assert "bert_fast.bias_gelu_bwd.default" in mode.names


@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_both_faces_give_the_same_numbers(dropout_p):
    torch.manual_seed(0)
    inputs = {"x": torch.randn(6, 40), "residual": torch.randn(6, 40), "weight": torch.randn(40),
              "bias": torch.randn(40), "x_bias": torch.randn(40)}  # fmt: skip
    dy = torch.randn(6, 40)

    def eager(x, residual, weight, bias, x_bias):
        return add_layer_norm(x, residual, weight, bias, 1e-12, x_bias, dropout_p, seed=11)

    def through_the_op(x, residual, weight, bias, x_bias):
        y, _, _, _ = torch.ops.bert_fast.add_layer_norm_fwd(x, residual, weight, bias, x_bias, 1e-12, dropout_p, 11,
                                                            None, False)  # fmt: skip
        return y

    out, grads = run(eager, leaves(inputs), dy)
    out_op, grads_op = run(through_the_op, leaves(inputs), dy)
    assert torch.equal(out, out_op)
    for name in inputs:
        assert torch.equal(grads[name], grads_op[name]), name


def test_packed_attention_faces_agree():
    torch.manual_seed(1)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    qkv = torch.randn(8, 3, 2, 16)
    dout = torch.randn(8, 2, 16)
    results = []
    for call in (
        lambda t: varlen_attention_qkvpacked(t, cu, 5),
        lambda t: torch.ops.bert_fast.varlen_attention_qkvpacked_fwd(t, cu, 5, 0.0, 0.25, 0, None, True)[0],
    ):
        leaf = qkv.clone().requires_grad_()
        out = call(leaf)
        (grad,) = torch.autograd.grad(out, leaf, dout)
        results.append((out, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])



def test_autotune_asks_triton_to_keep_its_picks_on_disk(monkeypatch):
    """A new process reuses each key's tuned config instead of timing every candidate again (Triton ignores the
    flag under its interpreter, so this checks what we ask for)."""
    common = importlib.import_module("bert_fast_kernels._common")
    asked = {}
    monkeypatch.setattr(common.triton, "autotune", lambda **kwargs: asked.update(kwargs) or (lambda fn: fn))
    common.autotune(["config"], ["key"], reset_to_zero=["DQ_ACC"])
    assert asked == {"configs": ["config"], "key": ["key"], "cache_results": True, "reset_to_zero": ["DQ_ACC"]}
