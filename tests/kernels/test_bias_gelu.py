"""bias_gelu against bias_gelu_ref: output and both gradients, by the three-result rule.

CPU tests run the kernels under Triton's interpreter in float32 and float16 (the interpreter has no bfloat16);
the tests marked gpu repeat the checks in all three dtypes at BERT shapes and under torch.compile.
"""

import pytest
import torch
from bert_fast_kernels import bias_gelu, bias_gelu_ref
from bert_fast_kernels.bias_gelu import bias_gelu_bwd, bias_gelu_fwd
from tolerance import assert_within_pytorch_error, leaves, run

ATOL = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}


def make_inputs(shape, dtype, bias_dtype=None, device="cpu", bias=True):
    """x ~ 2 N(0, 1), wide enough to reach both tails of GELU; a small bias."""
    n = shape[-1]
    return {
        "x": (2 * torch.randn(shape, device=device)).to(dtype),
        "bias": (0.5 * torch.randn(n, device=device)).to(bias_dtype or dtype) if bias else None,
    }


def check_three_way(inputs, dy, approximate="none"):
    out, grads = run(bias_gelu, leaves(inputs), dy, approximate=approximate)
    out_pt, grads_pt = run(bias_gelu_ref, leaves(inputs), dy, approximate=approximate)
    out_ref, grads_ref = run(bias_gelu_ref, leaves(inputs, torch.float64), dy, approximate=approximate)
    assert out.dtype == inputs["x"].dtype

    def close(name, a, a_pt, a_ref, dtype):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=ATOL[dtype] * max(1.0, a_ref.abs().max().item()), name=name)

    close("y", out, out_pt, out_ref, inputs["x"].dtype)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == inputs[name].dtype, f"d{name} has dtype {grads[name].dtype}"
        close(f"d{name}", grads[name], grads_pt[name], grads_ref[name], inputs[name].dtype)


# ---------------------------------------------------------------------------------------------------------------
# CPU (interpreter)
# ---------------------------------------------------------------------------------------------------------------

CASES = [
    (torch.float32, (3, 1)),
    (torch.float32, (1, 7)),
    (torch.float32, (5, 7, 64)),
    (torch.float32, (3, 1023)),
    (torch.float32, (9, 3072)),  # three column blocks
    (torch.float16, (5, 7)),
    (torch.float16, (37, 64)),
    (torch.float16, (1, 1023)),
    (torch.float16, (2, 3, 1024)),
    (torch.float16, (2, 768)),  # column block 256: a width that divides the hidden size
]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,shape", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_matches_reference(dtype, shape, approximate):
    check_three_way(make_inputs(shape, dtype), torch.randn(shape).to(dtype), approximate)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_bias(dtype):
    check_three_way(make_inputs((6, 100), dtype, bias=False), torch.randn(6, 100).to(dtype))


def test_mixed_precision_bias():
    """float32 bias with float16 x (autocast): dbias comes back in float32."""
    check_three_way(make_inputs((4, 3, 96), torch.float16, bias_dtype=torch.float32), torch.randn(4, 3, 96).half())


def test_large_arguments_stay_finite():
    """Both tails, where a naive tanh(u) = (e^2u - 1) / (e^2u + 1) overflows."""
    x = torch.tensor([[-1e4, -60.0, -10.0, -1e-3, 0.0, 1e-3, 10.0, 60.0, 1e4]])
    for approximate in ("none", "tanh"):
        y, grads = run(bias_gelu, leaves({"x": x, "bias": None}), torch.ones_like(x), approximate=approximate)
        ref, grads_ref = run(bias_gelu_ref, leaves({"x": x.double(), "bias": None}), torch.ones_like(x.double()),
                             approximate=approximate)  # fmt: skip
        torch.testing.assert_close(y, ref.float(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grads["x"], grads_ref["x"].float(), rtol=1e-6, atol=1e-6)


def test_non_contiguous_inputs():
    n = 130
    x_base = torch.randn(2, 3, 2 * n)  # x = x_base[..., :n]: row stride 2n, viewed as rows without a copy
    b_base = torch.randn(2 * n)  # bias = b_base[::2]: stride 2
    dy = torch.randn(3, 2, n).transpose(0, 1)  # rows not evenly strided
    results = []
    for impl, dtype in ((bias_gelu, torch.float32), (bias_gelu_ref, torch.float32), (bias_gelu_ref, torch.float64)):
        bases = [t.clone().to(dtype).requires_grad_() for t in (x_base, b_base)]
        out = impl(bases[0][..., :n], bases[1][::2])
        out.backward(dy.to(dtype))
        results.append([out] + [b.grad for b in bases])
    for name, a, a_pt, a_ref in zip(("y", "dx", "dbias"), *results):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=1e-6 * max(1.0, a_ref.abs().max().item()), name=name)


def test_gradient_only_for_x():
    """bias without requires_grad: no dbias is computed, dx still right."""
    inputs = make_inputs((5, 40), torch.float32)
    x = inputs["x"].clone().requires_grad_()
    dy = torch.randn(5, 40)
    bias_gelu(x, inputs["bias"]).backward(dy)
    ref = torch.autograd.grad(bias_gelu_ref(x.double(), inputs["bias"].double()), x, dy.double())[0]
    torch.testing.assert_close(x.grad, ref.float(), rtol=1e-5, atol=1e-6)
    assert bias_gelu_bwd(dy, x.detach(), inputs["bias"], need_dbias=False)[1] is None


def test_launchers_and_empty_input():
    x, bias = torch.randn(0, 16), torch.randn(16)
    assert bias_gelu_fwd(x, bias).shape == (0, 16)
    dx, dbias = bias_gelu_bwd(torch.randn(0, 16), x, bias)
    assert dx.shape == (0, 16) and torch.equal(dbias, torch.zeros(16))


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(4, 16)
    with pytest.raises(ValueError, match="bias has shape"):
        bias_gelu(x, torch.randn(15))
    with pytest.raises(TypeError, match="x has dtype torch.int32"):
        bias_gelu(x.int(), None)
    with pytest.raises(TypeError, match="bias has dtype"):
        bias_gelu(x, torch.ones(16, dtype=torch.long))
    with pytest.raises(ValueError, match="approximate"):
        bias_gelu(x, None, approximate="sigmoid")
    with pytest.raises(ValueError, match="different devices"):
        bias_gelu(x, torch.randn(16, device="meta"))
    with pytest.raises(ValueError, match="dy has shape"):
        bias_gelu_bwd(torch.randn(4, 15), x, None)


def test_custom_op_registration():
    from torch.library import opcheck

    lv = leaves(make_inputs((3, 24), torch.float32))
    for approximate in ("none", "tanh"):
        opcheck(torch.ops.bert_fast.bias_gelu_fwd.default, (lv["x"], lv["bias"], approximate),
                test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))  # fmt: skip


def test_torch_compile_fullgraph():
    def ffn_act(x, bias):
        return bias_gelu(x * 0.5, bias) * 2

    inputs = make_inputs((4, 48), torch.float32)
    dy = torch.randn(4, 48)
    out_c, grads_c = run(torch.compile(ffn_act, fullgraph=True, backend="aot_eager"), leaves(inputs), dy)
    out_e, grads_e = run(ffn_act, leaves(inputs), dy)
    assert torch.equal(out_c, out_e)
    for name in grads_e:
        assert torch.equal(grads_c[name], grads_e[name]), name


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------
