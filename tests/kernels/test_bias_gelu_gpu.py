"""bias + GELU on a GPU: bf16, every launch configuration, the sizes the interpreter cannot reach."""

import pytest
import torch
from bert_fast_kernels import bias_gelu
from tolerance import leaves, run

from tests.kernels.test_bias_gelu import check_three_way, make_inputs

pytestmark = pytest.mark.gpu


GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2048, 3072), (2, 333, 4096), (129, 1023), (5, 8192)])
def test_gpu_matches_reference(dtype, shape, approximate):
    check_three_way(make_inputs(shape, dtype, device="cuda"), torch.randn(shape, device="cuda").to(dtype), approximate)

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_mixed_precision_and_no_bias(dtype):
    shape = (4096, 3072)
    dy = torch.randn(shape, device="cuda").to(dtype)
    check_three_way(make_inputs(shape, dtype, bias_dtype=torch.float32, device="cuda"), dy)
    check_three_way(make_inputs(shape, dtype, device="cuda", bias=False), dy)

def test_gpu_deterministic():
    inputs = make_inputs((16384, 3072), torch.bfloat16, device="cuda")
    dy = torch.randn(16384, 3072, device="cuda").bfloat16()
    first, second = (run(bias_gelu, leaves(inputs), dy) for _ in range(2))
    assert torch.equal(first[0], second[0])
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name

def test_gpu_torch_compile_inductor():
    def ffn(x, w, bias):
        return bias_gelu(x @ w, bias) @ w.t()

    x = torch.randn(512, 768, device="cuda", dtype=torch.bfloat16)
    w = (0.05 * torch.randn(768, 3072, device="cuda")).bfloat16()
    inputs = {"x": x, "w": w, "bias": torch.randn(3072, device="cuda")}
    dy = torch.randn(512, 768, device="cuda").bfloat16()
    out_c, grads_c = run(torch.compile(ffn, fullgraph=True), leaves(inputs), dy)
    out_e, grads_e = run(ffn, leaves(inputs), dy)
    for a, b in zip([out_c, *grads_c.values()], [out_e, *grads_e.values()]):  # compiled code may round differently
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())
