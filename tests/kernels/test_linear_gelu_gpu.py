"""The fused FFN GEMM (linear_gelu) on a GPU: both kernels in bf16 and fp16 against cuBLAS + bias_gelu."""

import pytest
import torch
import torch.nn.functional as F
from bert_fast_kernels import linear_gelu, linear_gelu_ref
from bert_fast_kernels.linear_gelu import CONFIGS, PERSISTENT_CONFIGS, linear_gelu_fwd
from tolerance import assert_within_pytorch_error, leaves, run

from tests.kernels.test_linear_gelu import ATOL, check_three_way, make_inputs

pytestmark = pytest.mark.gpu


ALL_CONFIGS = [("tiled", c) for c in CONFIGS] + [("persistent", c) for c in PERSISTENT_CONFIGS]


@pytest.mark.parametrize("variant", ["tiled", "persistent"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m_shape,k,n", [((1,), 768, 3072), ((3, 7), 33, 65), ((4096,), 768, 3072),
                                         ((2, 333), 1024, 4096), ((129,), 1000, 1001)])  # fmt: skip
def test_gpu_matches_reference(dtype, m_shape, k, n, approximate, variant):
    check_three_way(make_inputs(m_shape, k, n, dtype, device="cuda"), approximate, variant)

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("variant,config", ALL_CONFIGS, ids=[f"{v}-{i}" for i, (v, _) in enumerate(ALL_CONFIGS)])
def test_gpu_every_config(dtype, variant, config):
    """Each autotune candidate pinned in turn, on a shape with edge tiles in M: whichever wins must be right."""
    inputs = make_inputs((1000,), 768, 3072, dtype, bias_dtype=torch.float32, device="cuda")
    y, z = linear_gelu_fwd(**inputs, store_preact=True, config=config, variant=variant)
    z_pt = F.linear(inputs["x"], inputs["weight"])
    y_ref = linear_gelu_ref(*(t.double() for t in inputs.values()))
    y_pt = linear_gelu_ref(*inputs.values())
    assert_within_pytorch_error(y, y_pt, y_ref, atol=ATOL[dtype], name="y")
    z_ref = F.linear(inputs["x"].double(), inputs["weight"].double())
    assert_within_pytorch_error(z, z_pt, z_ref, atol=ATOL[dtype], name="z")

def test_gpu_mixed_precision_and_no_bias():
    check_three_way(make_inputs((2048,), 768, 3072, torch.bfloat16, bias_dtype=torch.float32, device="cuda"))
    check_three_way(make_inputs((2048,), 768, 3072, torch.bfloat16, device="cuda", bias=False))

def test_gpu_torch_compile_inductor():
    def ffn(x, weight, bias, w_down):
        return F.linear(linear_gelu(x, weight, bias), w_down)

    inputs = make_inputs((512,), 768, 3072, torch.bfloat16, bias_dtype=torch.float32, device="cuda")
    inputs["w_down"] = (0.02 * torch.randn(768, 3072, device="cuda")).bfloat16()
    dy = torch.randn(512, 768, device="cuda").bfloat16()
    out_c, grads_c = run(torch.compile(ffn, fullgraph=True), leaves(inputs), dy)
    out_e, grads_e = run(ffn, leaves(inputs), dy)
    for a, b in zip([out_c, *grads_c.values()], [out_e, *grads_e.values()]):  # compiled code may round differently
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())
