"""The encoder layer as one autograd node on a GPU (it is off there by default until these pass): against the same
layer step by step in bf16 at BERT-base's width, forward and every gradient; with dropout, seeds drawn on the
device give fresh masks each call that the seed reproduces."""

import pytest
import torch
from bert_fast_kernels._common import set_device_seeds

import bert_fast
from bert_fast import fused_layer
from bert_fast import ops as ops_lib
from bert_fast.modeling import BertLayer

pytestmark = pytest.mark.gpu


@pytest.fixture
def one_node_layers():
    previous_layer, previous_seeds = bert_fast.set_fused_layer(True), set_device_seeds(True)
    yield
    bert_fast.set_fused_layer(previous_layer)
    set_device_seeds(previous_seeds)


def _layer(dropout: float):
    config = bert_fast.BertConfig.preset("base", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    layer = BertLayer(config).cuda().train()
    mask = torch.zeros(4, 128, dtype=torch.long, device="cuda")
    for i, n in enumerate((128, 1, 77, 100)):
        mask[i, :n] = 1
    layout = ops_lib.packed_layout(mask, 4, 128, "cuda")
    hidden = torch.randn(int(mask.sum()), config.hidden_size, device="cuda")
    return layer, layout, hidden


def test_one_node_matches_step_by_step_in_bf16(one_node_layers, monkeypatch):
    layer, layout, hidden = _layer(0.0)
    ops = ops_lib.triton_ops()
    dy = torch.randn_like(hidden)
    applied = []
    original = fused_layer.EncoderLayerFunction.apply
    monkeypatch.setattr(fused_layer.EncoderLayerFunction, "apply", lambda *a: applied.append(1) or original(*a))
    results = []
    for run in (lambda h: ops.encoder_layer(layer, h, layout, ops), lambda h: layer.forward_steps(h, layout, ops)):
        leaf = hidden.clone().requires_grad_()
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = run(leaf)
        out.backward(dy.to(out.dtype))
        results.append((out.float(), leaf.grad.float(), {n: p.grad.float() for n, p in layer.named_parameters()}))
    assert applied, "the one-node layer did not run"
    (out, d_hidden, grads), (ref, ref_hidden, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(d_hidden, ref_hidden, rtol=2e-2, atol=2e-2)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=5e-2, atol=5e-2, msg=name)


def test_device_seeds_draw_fresh_masks_and_replay_from_the_seed(one_node_layers):
    layer, layout, hidden = _layer(0.1)
    ops = ops_lib.triton_ops()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.manual_seed(7)
        first, second = ops.encoder_layer(layer, hidden, layout, ops), ops.encoder_layer(layer, hidden, layout, ops)
        torch.manual_seed(7)
        again = ops.encoder_layer(layer, hidden, layout, ops)
    assert not torch.equal(first, second)  # a new draw each call
    assert torch.equal(first, again)  # and the seed reproduces it
