"""add_layer_norm against add_layer_norm_ref: output and every gradient, by the three-result rule.

CPU tests run the kernels under Triton's interpreter in float32 and float16 (the interpreter has no bfloat16);
the tests marked gpu repeat the checks in all three dtypes at BERT shapes and under torch.compile.
"""

import pytest
import torch
from bert_fast_kernels import add_layer_norm, add_layer_norm_dropout_mask, add_layer_norm_ref
from bert_fast_kernels.add_layer_norm import add_layer_norm_bwd, add_layer_norm_fwd, split_param_grads
from tolerance import assert_within_pytorch_error, leaves, run

# atol, relative to the largest reference value: room for a last-bit difference when PyTorch itself is exact
ATOL = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}
NAMES = ("x", "residual", "weight", "bias", "x_bias")


def make_inputs(shape, dtype, param_dtype=None, device="cpu", residual=True, bias=True, x_bias=True):
    """Fresh random inputs (never zeros): activations ~ N(0, 1), LayerNorm weight ~ 1, biases small."""
    n = shape[-1]
    pd = param_dtype or dtype
    return {
        "x": torch.randn(shape, device=device).to(dtype),
        "residual": torch.randn(shape, device=device).to(dtype) if residual else None,
        "weight": (1 + 0.2 * torch.randn(n, device=device)).to(pd),
        "bias": (0.2 * torch.randn(n, device=device)).to(pd) if bias else None,
        "x_bias": (0.2 * torch.randn(n, device=device)).to(pd) if x_bias else None,
    }


def check_three_way(inputs, dy, eps=1e-12, dropout_p=0.0, seed=0):
    """Kernel vs reference in the inputs' dtypes vs reference in float64: output and every gradient."""
    dtype = inputs["x"].dtype
    mask = None
    if dropout_p > 0:
        n = inputs["x"].shape[-1]
        mask = add_layer_norm_dropout_mask(seed, dy.numel() // n, n, dropout_p, dy.device).reshape(dy.shape)
    kw_ref = {"eps": eps, "dropout_p": dropout_p, "dropout_mask": mask}
    out, grads = run(add_layer_norm, leaves(inputs), dy, eps=eps, dropout_p=dropout_p, seed=seed)
    out_pt, grads_pt = run(add_layer_norm_ref, leaves(inputs), dy, **kw_ref)
    out_ref, grads_ref = run(add_layer_norm_ref, leaves(inputs, torch.float64), dy, **kw_ref)
    assert out.dtype == dtype

    def close(name, a, a_pt, a_ref, tensor_dtype):
        atol = ATOL[tensor_dtype] * max(1.0, a_ref.abs().max().item())
        assert_within_pytorch_error(a, a_pt, a_ref, atol=atol, name=name)

    close("y", out, out_pt, out_ref, dtype)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == inputs[name].dtype, f"d{name} has dtype {grads[name].dtype}"
        close(f"d{name}", grads[name], grads_pt[name], grads_ref[name], inputs[name].dtype)


# ---------------------------------------------------------------------------------------------------------------
# CPU (interpreter)
# ---------------------------------------------------------------------------------------------------------------

CASES = [  # (dtype, shape): hidden sizes that break lazy indexing, row counts incl. 1 and partial tiles
    (torch.float32, (3, 1)),
    (torch.float32, (1, 7)),
    (torch.float32, (5, 7, 64)),
    (torch.float32, (5, 1023)),
    (torch.float32, (9, 1024)),
    (torch.float16, (5, 7)),
    (torch.float16, (37, 64)),
    (torch.float16, (1, 1023)),
    (torch.float16, (2, 3, 1024)),
]


@pytest.mark.parametrize("dtype,shape", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_matches_reference(dtype, shape):
    check_three_way(make_inputs(shape, dtype), torch.randn(shape).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "present", [(False, True, True), (True, False, False), (False, False, False)], ids=["no_res", "no_b_xb", "plain"]
)
def test_optional_inputs(dtype, present):
    residual, bias, x_bias = present
    shape = (6, 100)
    inputs = make_inputs(shape, dtype, residual=residual, bias=bias, x_bias=x_bias)
    check_three_way(inputs, torch.randn(shape).to(dtype), eps=1e-5)


@pytest.mark.parametrize("dtype,n", [(torch.float32, 7), (torch.float32, 1023), (torch.float16, 130)])
def test_dropout_matches_reference_with_regenerated_mask(dtype, n):
    shape = (5, n)
    check_three_way(make_inputs(shape, dtype), torch.randn(shape).to(dtype), dropout_p=0.1, seed=1234)


def test_mixed_precision_parameters():
    """float32 LayerNorm weight/bias and x_bias with float16 activations (autocast): grads in their own dtypes."""
    shape = (4, 3, 96)
    inputs = make_inputs(shape, torch.float16, param_dtype=torch.float32)
    check_three_way(inputs, torch.randn(shape).half())
    # a float32 residual with float16 x: dresidual in float32, written apart from dx although p = 0
    inputs["residual"] = torch.randn(shape)
    check_three_way(inputs, torch.randn(shape).half())


def test_non_contiguous_inputs():
    n = 65
    x_base = torch.randn(2, 3, 2 * n)  # x = x_base[..., :n]: row stride 2n, viewed as rows without a copy
    r_base = torch.randn(3, 2, n)  # residual = r_base.transpose(0, 1): rows not evenly strided, copied
    w_base = torch.randn(2 * n)  # weight = w_base[::2]: stride 2
    dy = torch.randn(2, 3, 2 * n)[..., ::2]  # strided last dim

    results = []
    for impl, dtype in ((add_layer_norm, torch.float32), (add_layer_norm_ref, torch.float32),
                        (add_layer_norm_ref, torch.float64)):  # fmt: skip
        bases = [t.clone().to(dtype).requires_grad_() for t in (x_base, r_base, w_base)]
        x, residual, weight = bases[0][..., :n], bases[1].transpose(0, 1), 1 + 0.1 * bases[2][::2]
        out = impl(x, residual, weight, None, 1e-5)
        out.backward(dy.to(dtype))
        results.append([out] + [b.grad for b in bases])
    for name, a, a_pt, a_ref in zip(("y", "dx", "dresidual", "dweight"), *results):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=1e-6 * max(1.0, a_ref.abs().max().item()), name=name)


def test_dropout_statistics_and_scaling():
    """Keep rate ~ 1 - p (also per Philox word), kept values scaled by exactly 1 / (1 - p), the mask equal to the
    regenerated one, the backward using the forward's mask, and seeds reproducing masks."""
    p, shape = 0.2, (64, 1024)
    inputs = leaves(make_inputs(shape, torch.float32))
    y, h = add_layer_norm(**inputs, eps=1e-5, dropout_p=p, seed=77, return_residual=True)
    keep = add_layer_norm_dropout_mask(77, *shape, p, "cpu")

    # h - residual is dropout(x + x_bias): zero where dropped, (x + x_bias) / (1 - p) where kept
    dropped = (h - inputs["residual"]).detach()
    expect = torch.where(keep, (inputs["x"] + inputs["x_bias"]).detach() / (1 - p), torch.zeros(()))
    torch.testing.assert_close(dropped, expect, rtol=1e-5, atol=1e-5)
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * sigma
    words = [keep[:, k::4].float() for k in range(4)]  # the 4 words of one Philox call decide columns 4g + k
    for k in range(4):  # each word keeps ~ 1 - p, and any two words are independent
        assert abs(words[k].mean().item() - (1 - p)) < 5 * 2 * sigma
        for j in range(k):
            assert abs((words[k] * words[j]).mean().item() - (1 - p) ** 2) < 5 * 2 * sigma
    assert not torch.equal(keep[0], keep[1]) and not torch.equal(keep[:, :512], keep[:, 512:])

    # backward: dx is zero exactly where the forward dropped, and dresidual / (1 - p) where it kept
    y.backward(torch.randn(shape))
    assert torch.all(inputs["x"].grad[~keep] == 0)
    torch.testing.assert_close(inputs["x"].grad[keep], inputs["residual"].grad[keep] / (1 - p))

    # seeds: the same seed gives the same output, another seed another mask; seed=None follows torch.manual_seed
    same = add_layer_norm(**inputs, eps=1e-5, dropout_p=p, seed=77)
    other = add_layer_norm(**inputs, eps=1e-5, dropout_p=p, seed=78)
    assert torch.equal(same, y) and not torch.equal(other, y)
    assert not torch.equal(add_layer_norm_dropout_mask(78, *shape, p, "cpu"), keep)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(add_layer_norm(**inputs, eps=1e-5, dropout_p=p))
    assert torch.equal(outs[0], outs[1])


def test_return_residual_gradient_flows():
    """With return_residual=True both outputs feed the loss: the residual output's gradient joins dh."""
    shape, p = (7, 33), 0.25
    inputs = make_inputs(shape, torch.float32)
    dy, dh = torch.randn(shape), torch.randn(shape)
    mask = add_layer_norm_dropout_mask(3, *shape, p, "cpu")
    results = []
    for impl, dtype in ((add_layer_norm, None), (add_layer_norm_ref, None), (add_layer_norm_ref, torch.float64)):
        lv = leaves(inputs, dtype)
        kw = {"seed": 3} if impl is add_layer_norm else {"dropout_mask": mask}
        y, h = impl(**lv, eps=1e-5, dropout_p=p, return_residual=True, **kw)
        torch.autograd.backward([y, h], [dy.to(y.dtype), dh.to(y.dtype)])
        results.append([y, h] + [lv[k].grad for k in NAMES])
    for name, a, a_pt, a_ref in zip(("y", "h") + NAMES, *results):
        assert_within_pytorch_error(a, a_pt, a_ref, atol=1e-6 * max(1.0, a_ref.abs().max().item()), name=name)


def test_shared_gradient_accumulates_safely():
    """Without dropout dx and dresidual are one tensor; accumulation into .grad must not double count."""
    inputs = leaves(make_inputs((4, 64), torch.float32))
    dy = torch.randn(4, 64)
    expect = None
    for step in range(2):
        add_layer_norm(**inputs).backward(dy)
        if step == 0:
            expect = inputs["x"].grad.clone()
    torch.testing.assert_close(inputs["x"].grad, 2 * expect)
    torch.testing.assert_close(inputs["residual"].grad, 2 * expect)
    # the same tensor as x and residual: its gradient is the sum of both paths
    a = torch.randn(4, 64, requires_grad=True)
    w = inputs["weight"].detach()
    add_layer_norm(a, a, w, None).backward(dy)
    ref = torch.autograd.grad(add_layer_norm_ref(a, a, w, None), a, dy)[0]
    torch.testing.assert_close(a.grad, ref, rtol=1e-4, atol=1e-5)


def test_launchers_and_empty_input():
    inputs = make_inputs((0, 32), torch.float32)
    y, res_out, mean, rstd = add_layer_norm_fwd(**inputs, return_residual=True)
    assert y.shape == (0, 32) and res_out.shape == (0, 32) and mean.shape == (0,)
    dy = torch.randn(0, 32)
    dx, dres, param_grads = add_layer_norm_bwd(dy, **inputs, mean=mean, rstd=rstd)
    dw, db, dxb = split_param_grads(param_grads, inputs["weight"], inputs["bias"], inputs["x_bias"])
    assert dx.shape == dres.shape == (0, 32)
    assert all(torch.equal(g, torch.zeros(32)) for g in (dw, db, dxb))


def test_bad_inputs_raise_clear_errors():
    good = make_inputs((4, 16), torch.float32)

    def call(**changes):
        add_layer_norm(**{**good, **changes})

    with pytest.raises(ValueError, match="residual has shape"):
        call(residual=torch.randn(4, 17))
    with pytest.raises(ValueError, match="weight has shape"):
        call(weight=torch.randn(17))
    with pytest.raises(ValueError, match="x_bias has shape"):
        call(x_bias=torch.randn(4, 16))
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        call(x=torch.ones(4, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="bias has dtype"):
        call(bias=torch.ones(16, dtype=torch.int32))
    with pytest.raises(ValueError, match="different devices"):
        call(weight=torch.randn(16, device="meta"))
    with pytest.raises(ValueError, match="hidden size"):
        add_layer_norm(torch.randn(1, 16385), None, torch.randn(16385), None)
    with pytest.raises(ValueError, match="dropout_p"):
        add_layer_norm(**good, dropout_p=1.0)
    with pytest.raises(ValueError, match="weight is required"):
        call(weight=None)


def test_custom_op_registration():
    """opcheck: schema, fake (meta) implementation and autograd registration agree with the real kernels."""
    from torch.library import opcheck

    inputs = make_inputs((3, 24), torch.float32)
    lv = leaves(inputs)
    for p, ret in ((0.0, False), (0.1, True)):
        args = (lv["x"], lv["residual"], lv["weight"], lv["bias"], lv["x_bias"], 1e-5, p, 11, None, ret)
        opcheck(torch.ops.bert_fast.add_layer_norm_fwd.default, args,
                test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))  # fmt: skip


def test_torch_compile_fullgraph():
    """No graph break around the op (aot_eager: traces forward and backward through the fake kernels)."""

    def block(x, residual, weight, bias, x_bias):
        return add_layer_norm(x, residual, weight, bias, 1e-12, x_bias, dropout_p=0.1, seed=9)

    inputs = make_inputs((4, 48), torch.float32)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    dy = torch.randn(4, 48)
    out_c, grads_c = run(compiled, leaves(inputs), dy)
    out_e, grads_e = run(block, leaves(inputs), dy)
    assert torch.equal(out_c, out_e)
    for name in grads_e:
        assert torch.equal(grads_c[name], grads_e[name]), name

    # seed=None: the seed is drawn inside the graph, fresh on every call, reproducible under torch.manual_seed
    def drop(x, weight):
        return add_layer_norm(x, None, weight, None, dropout_p=0.5)

    compiled = torch.compile(drop, fullgraph=True, backend="aot_eager")
    x, w = inputs["x"], inputs["weight"]
    assert not torch.equal(compiled(x, w), compiled(x, w))
    torch.manual_seed(1)
    first = compiled(x, w)
    torch.manual_seed(1)
    assert torch.equal(compiled(x, w), first)


def test_seed_read_from_a_device_tensor():
    """A seed in an int64 tensor (read by the kernel on the device) draws exactly the int seed's mask, forward and
    backward; seed=None draws a fresh one on the device each call, which torch.manual_seed reproduces."""
    from bert_fast_kernels.launchers import draw_seeds

    inputs = make_inputs((6, 40), torch.float32)
    dy = torch.randn(6, 40)
    out_int, grads_int = run(add_layer_norm, leaves(inputs), dy, dropout_p=0.3, seed=123456789012)
    out_t, grads_t = run(add_layer_norm, leaves(inputs), dy, dropout_p=0.3, seed=torch.tensor([123456789012]))
    assert torch.equal(out_int, out_t)
    for name in grads_int:
        assert torch.equal(grads_int[name], grads_t[name]), name
    mask = add_layer_norm_dropout_mask(torch.tensor([123456789012]), 6, 40, 0.3, "cpu")
    assert torch.equal(mask, add_layer_norm_dropout_mask(123456789012, 6, 40, 0.3, "cpu"))

    x, w = inputs["x"], inputs["weight"]
    assert not torch.equal(add_layer_norm(x, None, w, None, dropout_p=0.3),
                           add_layer_norm(x, None, w, None, dropout_p=0.3))
    torch.manual_seed(3)
    drawn = add_layer_norm(x, None, w, None, dropout_p=0.3)
    torch.manual_seed(3)
    (seed,) = draw_seeds(1, x.device)  # the draw seed=None made
    assert torch.equal(drawn, add_layer_norm(x, None, w, None, dropout_p=0.3, seed=int(seed)))
    with pytest.raises(ValueError, match="seed tensor must be int64"):
        add_layer_norm(x, None, w, None, dropout_p=0.3, seed=torch.tensor([1.0]))


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------
