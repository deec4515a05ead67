"""Packed pretraining batches on a GPU: packed and unpacked agree in bf16."""

import pytest
import torch

from bert_fast import BertForPreTraining
from bert_fast.training.objective import PretrainingObjective
from tests.training.test_packed_objective import _config, _examples, _packed

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_and_unpacked_agree_on_the_gpu(dtype):
    """The fused path on CUDA: packed rows against the same examples unpacked, in fp32 and under bf16 autocast."""
    model = BertForPreTraining(_config(), impl="triton").cuda().train()
    lengths = [32, 20, 12, 25, 7, 14, 9, 5, 18]
    unpacked, packed = _packed(_examples(lengths), rows=5)
    objective = PretrainingObjective(model)
    losses, grads = [], []
    for batch in (unpacked, packed):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = objective(**{k: v.cuda() for k, v in batch.items()})
        out["loss"].backward()
        losses.append(out["loss"].detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(losses[1], losses[0], rtol=tol, atol=tol)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=tol, atol=tol * 1e-1, msg=name)
