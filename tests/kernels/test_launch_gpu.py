"""Launch plans on a GPU: bitwise the results of Triton's own launch path."""

import bert_fast_kernels._launch as lean
import pytest
import torch
from bert_fast_kernels import add_layer_norm, bias_gelu, varlen_attention

pytestmark = pytest.mark.gpu


def _outputs_both_ways(fn):
    results = []
    for enabled in (False, True, True):  # Triton's path; the cached path's first call; its cached calls
        lean.set_lean_launch(enabled)
        torch.manual_seed(0)
        results.append(fn())
    return results


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cached_path_gives_bitwise_equal_results_on_the_gpu(lean_setting, dtype):
    torch.manual_seed(1)
    x = torch.randn(300, 768, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(768, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(768, device="cuda", requires_grad=True)
    lengths = torch.tensor([128, 1, 113, 58])
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32).cuda()
    qkv = torch.randn(int(lengths.sum()), 3, 12, 64, device="cuda", dtype=dtype, requires_grad=True)

    def run():
        y = add_layer_norm(bias_gelu(x, b), x, w, None, dropout_p=0.1)
        out = varlen_attention(*qkv.unbind(1), cu, 128, dropout_p=0.1)
        grads = torch.autograd.grad((y.float().sum(), out.float().square().sum()), (x, b, w, qkv))
        return [y, out, *grads]

    reference, first, cached = _outputs_both_ways(run)
    for ours in (first, cached):
        for r, o in zip(reference, ours):
            assert torch.equal(r, o)
