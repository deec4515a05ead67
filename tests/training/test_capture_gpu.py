"""Captured training steps on a GPU: real CUDA graphs equal eager steps, a thousand replays hold memory and never sync."""

import copy

import pytest
import torch

import bert_fast
from bert_fast.training import build_optimizer
from bert_fast.training.capture import CapturedStep
from tests.model.conftest import tiny_config
from tests.training.test_capture import _batches

pytestmark = pytest.mark.gpu


def _gpu_setup(dtype=None, dropout=0.0):
    config = tiny_config(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = bert_fast.BertForPreTraining(config, impl="triton").cuda().train()
    return config, model


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_captured_steps_equal_eager_steps(autocast):
    config, model = _gpu_setup()
    twin = copy.deepcopy(model)
    optimizer = build_optimizer(model, lr=1e-3, capturable=True)
    twin_optimizer = build_optimizer(twin, lr=1e-3, capturable=True)
    captured = CapturedStep(model, optimizer, max_grad_norm=1.0, autocast_dtype=autocast)
    eager = CapturedStep(twin, twin_optimizer, max_grad_norm=1.0, autocast_dtype=autocast, graphs=False)
    batches = _batches(config, 3, seq=48, batch=4)
    for i in range(6):
        batch = batches[i % 3]
        loss, norm = captured(batch)
        expected, expected_norm = eager(batch)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(norm, expected_norm, rtol=1e-4, atol=1e-5)
    assert all(c.graph is not None for c in captured.captured.values())
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)

def test_gpu_a_thousand_replays_hold_memory_steady_and_never_sync():
    config, model = _gpu_setup(dropout=0.1)
    optimizer = build_optimizer(model, lr=1e-4, capturable=True)
    step = CapturedStep(model, optimizer, max_grad_norm=1.0, autocast_dtype=torch.bfloat16)
    batches = _batches(config, 2, seq=48, batch=4)
    losses = [step(b)[0].clone() for b in batches]  # captures both buckets
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1000):
            loss, _ = step(batches[i % 2])
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.cuda.memory_allocated() == before
    assert torch.isfinite(loss) and not torch.equal(loss, losses[1])  # the weights moved; dropout drew anew

def test_gpu_eager_static_step_has_no_host_sync():
    """The bucketed step run eagerly (no graph): forward, backward and the optimizer step without a device sync."""
    config, model = _gpu_setup(dropout=0.1)
    optimizer = build_optimizer(model, lr=1e-4, capturable=True)
    step = CapturedStep(model, optimizer, max_grad_norm=1.0, autocast_dtype=torch.bfloat16, graphs=False)
    (batch,) = _batches(config, 1, seq=48, batch=4)
    step(batch)  # warm-up: compiles and tunes
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
