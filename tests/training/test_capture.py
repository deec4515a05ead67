"""Captured training steps (bert_fast.training.capture): on the CPU the same sequence of work runs eagerly, which
checks everything but the graphs themselves (warm-up that changes no number, persistent gradients, accumulation,
clipping); the tests marked gpu replay real CUDA graphs."""

import copy

import pytest
import torch

import bert_fast
from bert_fast.buckets import bucket_of, pack_batch
from bert_fast.training import Lamb, build_optimizer
from bert_fast.training.capture import CapturedStep, CaptureError
from tests.model.conftest import random_batch, tiny_config


def _batches(config, n, seq=12, batch=2, device="cpu"):
    out = []
    for i in range(n):
        data = random_batch(config, batch=batch, seq=seq, lengths=[seq, 3 + 2 * i, seq // 2, 5][:batch])
        real = data["attention_mask"].bool()
        labels = torch.where(torch.rand(batch, seq) < 0.3, data["input_ids"], -100).masked_fill(~real, -100)
        labels[:, 0] = data["input_ids"][:, 0]
        data.update(labels=labels, next_sentence_label=torch.randint(0, 2, (batch,)))
        bucket = bucket_of(data, mlm=True, token_multiple=8, masked_multiple=4)
        out.append(pack_batch(data, bucket, config.pad_token_id, mlm=True))
    return out


def _eager_step(model, optimizer, batch, max_grad_norm, loss_scale=1.0, step=True):
    loss = model(**batch.model_inputs()).loss
    (loss * loss_scale).backward()
    if step:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return loss.detach()


@pytest.mark.parametrize("optimizer_name", ["adamw", "lamb"])
def test_steps_match_plain_eager_training(optimizer_name):
    """Three steps (two buckets, one twice) with clipping, then two micro-steps of accumulation: the same losses and
    the same weights as plain eager training on the same static batches. The warm-up before each new bucket ran the
    step twice and was undone."""
    config = tiny_config(num_hidden_layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = bert_fast.BertForPreTraining(config, impl="triton").train()
    twin = copy.deepcopy(model)
    optimizer = build_optimizer(model, optimizer_name, lr=1e-2, capturable=True)
    twin_optimizer = build_optimizer(twin, optimizer_name, lr=1e-2, capturable=True)
    step = CapturedStep(model, optimizer, max_grad_norm=0.5, graphs=False)
    batches = _batches(config, 3)
    plan = [(batches[0], True, 1.0), (batches[1], True, 1.0), (batches[0], True, 1.0),
            (batches[1], False, 0.5), (batches[2], True, 0.5)]  # fmt: skip
    for batch, step_optimizer, scale in plan:
        loss, _ = step(batch, step_optimizer=step_optimizer, loss_scale=scale)
        expected = _eager_step(twin, twin_optimizer, batch, 0.5, scale, step_optimizer)
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-6)
    assert len(step.captured) == len({(b.bucket, s, sc) for b, s, sc in plan})  # one per kind of step
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    assert all(not p.grad.any() for p in model.parameters())  # persistent gradients, zeroed in place


def test_graphs_need_a_tensor_learning_rate_and_the_fused_path():
    model = bert_fast.BertModel(tiny_config())
    with pytest.raises(CaptureError, match="learning rate must be a tensor"):
        CapturedStep(model, torch.optim.AdamW(model.parameters(), lr=1e-3), graphs=True)
    model.set_impl("reference")
    with pytest.raises(CaptureError, match="capture the fused path"):
        CapturedStep(model, build_optimizer(model, capturable=True), graphs=True)


def test_lamb_keeps_its_step_counter_on_the_device_and_takes_a_tensor_rate():
    torch.manual_seed(0)
    weights = [torch.randn(5, 3) for _ in range(2)]
    grads = [torch.randn(5, 3) for _ in range(3)]
    results = []
    for lr in (1e-2, torch.tensor(1e-2)):
        p = torch.nn.Parameter(weights[0].clone())
        optimizer = Lamb([p], lr=lr)
        for g in grads:
            p.grad = g.clone()
            optimizer.step()
        assert torch.is_tensor(optimizer.state[p]["step"]) and optimizer.state[p]["step"].item() == 3
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1])
    # a checkpoint from when the counter was an int resumes
    p = torch.nn.Parameter(weights[1].clone())
    optimizer = Lamb([p], lr=1e-2)
    p.grad = grads[0].clone()
    optimizer.step()
    optimizer.state[p]["step"] = 1
    p.grad = grads[1].clone()
    optimizer.step()
    assert optimizer.state[p]["step"].item() == 2


# --- on a GPU: real graphs ------------------------------------------------------------------------------------
