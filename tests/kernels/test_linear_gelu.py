"""linear_gelu (one Triton GEMM with bias + GELU in its epilogue) against linear_gelu_ref, by the three-result rule.

CPU tests run the kernel under Triton's interpreter in float32 and float16 on odd, small shapes (edge tiles in M,
N and K); the tests marked gpu repeat the checks in all three dtypes at BERT's FFN shapes, with every autotune
configuration pinned in turn, and under torch.compile.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from bert_fast_kernels import linear_gelu, linear_gelu_ref
from bert_fast_kernels.linear_gelu import linear_gelu_fwd
from tolerance import assert_within_pytorch_error, leaves, run

ATOL = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}


def make_inputs(m_shape, k, n, dtype, bias_dtype=None, device="cpu", bias=True):
    """x ~ N(0, 1) and weight ~ N(0, 1/k): pre-activations of unit scale, reaching both sides of GELU's bend."""
    return {
        "x": torch.randn(*m_shape, k, device=device).to(dtype),
        "weight": (torch.randn(n, k, device=device) / k**0.5).to(dtype),
        "bias": (0.5 * torch.randn(n, device=device)).to(bias_dtype or dtype) if bias else None,
    }


def check_three_way(inputs, approximate="none", variant="tiled"):
    x, weight = inputs["x"], inputs["weight"]
    dy = torch.randn(*x.shape[:-1], weight.shape[0], device=x.device).to(x.dtype)
    out, grads = run(linear_gelu, leaves(inputs), dy, approximate=approximate, variant=variant)
    out_pt, grads_pt = run(linear_gelu_ref, leaves(inputs), dy, approximate=approximate)
    out_ref, grads_ref = run(linear_gelu_ref, leaves(inputs, torch.float64), dy, approximate=approximate)
    assert out.dtype == x.dtype

    def close(name, a, a_pt, a_ref, dtype):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=ATOL[dtype] * max(1.0, a_ref.abs().max().item()), name=name)

    close("y", out, out_pt, out_ref, x.dtype)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == inputs[name].dtype, f"d{name} has dtype {grads[name].dtype}"
        close(f"d{name}", grads[name], grads_pt[name], grads_ref[name], inputs[name].dtype)


# ---------------------------------------------------------------------------------------------------------------
# CPU (interpreter; 32 x 32 x 32 tiles, so these shapes have partial tiles in every dimension; the persistent
# kernel runs 3 programs, so each walks several tiles, and takes shapes that meet TMA's 16-byte alignment)
# ---------------------------------------------------------------------------------------------------------------

CASES = [  # (dtype, leading shape, K, N)
    (torch.float32, (1,), 1, 1),
    (torch.float32, (3,), 7, 5),
    (torch.float32, (37,), 64, 96),  # K a multiple of the K tile: the unmasked loop
    (torch.float32, (2, 35), 100, 36),
    (torch.float16, (1,), 16, 8),
    (torch.float16, (70,), 96, 136),
    (torch.float16, (3, 11), 33, 64),
]


@pytest.mark.parametrize("variant", ["tiled", "persistent"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,m_shape,k,n", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_matches_reference(dtype, m_shape, k, n, approximate, variant):
    check_three_way(make_inputs(m_shape, k, n, dtype), approximate, variant)


def test_persistent_takes_the_tiled_kernel_where_tma_cannot_go(monkeypatch):
    """TMA needs 16-byte aligned rows: K = 33 halves (66-byte rows) runs the tiled kernel, and gives its numbers."""
    module = sys.modules["bert_fast_kernels.linear_gelu"]
    launches = []
    persistent = module._launch_persistent
    monkeypatch.setattr(module, "_launch_persistent", lambda *a, **k: launches.append(1) or persistent(*a, **k))
    aligned = make_inputs((20,), 32, 48, torch.float16)
    linear_gelu_fwd(**aligned, variant="persistent")
    assert launches == [1]
    odd = make_inputs((20,), 33, 48, torch.float16)
    y, _ = linear_gelu_fwd(**odd, variant="persistent")
    assert launches == [1]
    assert torch.equal(y, linear_gelu_fwd(**odd, variant="tiled")[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_bias(dtype):
    check_three_way(make_inputs((45,), 40, 50, dtype, bias=False))


def test_mixed_precision_bias():
    """float32 bias with float16 x and weight (autocast's layout): dbias comes back in float32."""
    check_three_way(make_inputs((4, 9), 48, 72, torch.float16, bias_dtype=torch.float32))


def test_preactivation_is_the_plain_projection():
    """store_preact writes z = x W^T (no bias), the tensor the split form's GEMM writes and the backward reads."""
    inputs = make_inputs((50,), 70, 40, torch.float32)
    y, z = linear_gelu_fwd(**inputs, store_preact=True)
    torch.testing.assert_close(z, F.linear(inputs["x"], inputs["weight"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, F.gelu(z + inputs["bias"]), rtol=1e-5, atol=1e-5)
    assert linear_gelu_fwd(**inputs)[1] is None


def test_strided_views():
    """x a column slice of a wider matrix (row stride 2K), weight a transposed view: no copies needed, same result."""
    k, n = 40, 24
    x_base = torch.randn(30, 2 * k)
    w_t = torch.randn(k, n) / k**0.5  # weight = w_t.t(): unit stride along N, not K
    bias = torch.randn(n)
    dy = torch.randn(30, n)
    results = []
    runs = ((linear_gelu, torch.float32), (linear_gelu_ref, torch.float32), (linear_gelu_ref, torch.float64))
    for impl, dtype in runs:
        bases = [t.clone().to(dtype).requires_grad_() for t in (x_base, w_t, bias)]
        out = impl(bases[0][:, :k], bases[1].t(), bases[2])
        out.backward(dy.to(dtype))
        results.append([out] + [b.grad for b in bases])
    for name, a, a_pt, a_ref in zip(("y", "dx", "dweight", "dbias"), *results):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=1e-6 * max(1.0, a_ref.abs().max().item()), name=name)


def test_no_grad_stores_nothing_and_grad_follows_inputs():
    inputs = make_inputs((6,), 20, 30, torch.float32)
    with torch.no_grad():
        y = linear_gelu(**leaves(inputs))
    assert not y.requires_grad
    only_x = dict(inputs, x=inputs["x"].clone().requires_grad_())  # parameters frozen: dx only
    dy = torch.randn(6, 30)
    linear_gelu(**only_x).backward(dy)
    ref = torch.autograd.grad(linear_gelu_ref(*(t.double() for t in only_x.values())), only_x["x"], dy.double())[0]
    torch.testing.assert_close(only_x["x"].grad, ref.float(), rtol=1e-5, atol=1e-6)


def test_autocast_casts_like_linear():
    """Under autocast, float32 x and weight run in the autocast dtype (y in it, as bias_gelu(F.linear(x, w), b)
    gives) and the gradients come back in float32."""
    inputs = leaves(make_inputs((8,), 32, 48, torch.float32))
    with torch.autocast("cpu", dtype=torch.float16):
        y = linear_gelu(**inputs)
        z = F.linear(inputs["x"], inputs["weight"])
    assert y.dtype == z.dtype == torch.float16
    torch.testing.assert_close(y, F.gelu(z.float() + inputs["bias"]).half(), rtol=2e-3, atol=2e-3)
    y.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in inputs.values())


def test_empty_rows():
    inputs = make_inputs((0,), 16, 8, torch.float32)
    assert linear_gelu(**inputs).shape == (0, 8)


def test_bad_inputs_raise_clear_errors():
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    with pytest.raises(ValueError, match="x has 15 features"):
        linear_gelu(torch.randn(4, 15), w)
    with pytest.raises(ValueError, match="weight must be"):
        linear_gelu(x, torch.randn(16))
    with pytest.raises(ValueError, match="bias has shape"):
        linear_gelu(x, w, torch.randn(7))
    with pytest.raises(TypeError, match="must share a dtype"):
        linear_gelu(x, w.half())
    with pytest.raises(TypeError, match="x has dtype torch.int32"):
        linear_gelu(x.int(), w)
    with pytest.raises(ValueError, match="approximate"):
        linear_gelu(x, w, approximate="relu")
    with pytest.raises(ValueError, match="different devices"):
        linear_gelu(x, torch.randn(8, 16, device="meta"))
    with pytest.raises(ValueError, match="variant must be one of"):
        linear_gelu(x, w, variant="stream-k")


def test_custom_op_registration():
    from torch.library import opcheck

    lv = leaves(make_inputs((5,), 24, 40, torch.float32))
    for store_preact in (False, True):
        args = (lv["x"], lv["weight"], lv["bias"], "none", store_preact, "tiled")
        opcheck(torch.ops.bert_fast.linear_gelu_fwd.default, args,
                test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))  # fmt: skip


def test_torch_compile_fullgraph():
    def ffn(x, weight, bias):
        return linear_gelu(x * 0.5, weight, bias) * 2

    inputs = make_inputs((2, 9), 32, 40, torch.float32)
    dy = torch.randn(2, 9, 40)
    out_c, grads_c = run(torch.compile(ffn, fullgraph=True, backend="aot_eager"), leaves(inputs), dy)
    out_e, grads_e = run(ffn, leaves(inputs), dy)
    assert torch.equal(out_c, out_e)
    for name in grads_e:
        assert torch.equal(grads_c[name], grads_e[name]), name


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------
