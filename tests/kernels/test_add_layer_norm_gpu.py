"""bias + dropout + residual + LayerNorm on a GPU: bf16, wide rows, every launch configuration."""

import pytest
import torch
from bert_fast_kernels import add_layer_norm, add_layer_norm_dropout_mask
from tolerance import leaves, run

from tests.kernels.test_add_layer_norm import check_three_way, make_inputs

pytestmark = pytest.mark.gpu


GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (1000, 768), (2, 513, 1024), (257, 1023), (64, 4096), (9, 8192)])
def test_gpu_matches_reference(dtype, shape):
    check_three_way(make_inputs(shape, dtype, device="cuda"), torch.randn(shape, device="cuda").to(dtype))

@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(4096, 768), (77, 1024), (8, 3000)])
def test_gpu_dropout_and_mixed_precision(dtype, shape):
    inputs = make_inputs(shape, dtype, param_dtype=torch.float32, device="cuda")
    check_three_way(inputs, torch.randn(shape, device="cuda").to(dtype), dropout_p=0.1, seed=2024)

def test_gpu_optional_inputs_and_plain_layer_norm():
    for present in ((False, True, True), (True, False, False), (False, False, False)):
        residual, bias, x_bias = present
        inputs = make_inputs((1024, 768), torch.bfloat16, device="cuda", residual=residual, bias=bias, x_bias=x_bias)
        check_three_way(inputs, torch.randn(1024, 768, device="cuda").bfloat16())

def test_gpu_dropout_statistics_and_determinism():
    p, shape = 0.1, (16384, 1024)
    keep = add_layer_norm_dropout_mask(5, *shape, p, "cuda")
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * sigma
    inputs = leaves(make_inputs(shape, torch.bfloat16, device="cuda"))
    dy = torch.randn(shape, device="cuda").bfloat16()
    runs = []
    for _ in range(2):  # no atomics anywhere: two runs are bitwise equal, gradients included
        out, grads = run(add_layer_norm, leaves(inputs), dy, dropout_p=p, seed=5)
        runs.append([out] + list(grads.values()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)

def test_gpu_torch_compile_inductor():
    def block(x, residual, weight, bias, x_bias):
        h = add_layer_norm(x * 2, residual, weight, bias, 1e-12, x_bias)
        return add_layer_norm(h, None, weight, bias)

    inputs = make_inputs((512, 768), torch.bfloat16, param_dtype=torch.float32, device="cuda")
    dy = torch.randn(512, 768, device="cuda").bfloat16()
    out_c, grads_c = run(torch.compile(block, fullgraph=True), leaves(inputs), dy)
    out_e, grads_e = run(block, leaves(inputs), dy)
    drop = torch.compile(lambda x, w: add_layer_norm(x, None, w, None, dropout_p=0.1), fullgraph=True)
    assert not torch.equal(drop(inputs["x"], inputs["weight"]), drop(inputs["x"], inputs["weight"]))  # fresh seeds
    for a, b in zip([out_c, *grads_c.values()], [out_e, *grads_e.values()]):  # compiled code may round differently
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())
