"""The fused path's encoder layer as one autograd node (bert_fast/fused_layer.py) against the same layer step by step:
the same kernels and GEMMs, so the same numbers, forward and every gradient, in fp32 and under autocast."""

import pytest
import torch

import bert_fast
from bert_fast import fused_layer
from bert_fast import ops as ops_lib
from bert_fast.modeling import BertLayer
from tests.model.conftest import tiny_config


def _layer_and_inputs(dtype=torch.float32):
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    layer = BertLayer(config).train()
    mask = torch.zeros(3, 11, dtype=torch.long)
    for i, n in enumerate((11, 1, 6)):
        mask[i, :n] = 1
    layout = ops_lib.packed_layout(mask, 3, 11, "cpu")
    hidden = torch.randn(int(mask.sum()), config.hidden_size, dtype=dtype)
    return layer, layout, hidden


def _run(fn, layer, hidden, dy):
    leaf = hidden.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    out = fn(leaf)
    out.backward(dy.to(out.dtype))
    return out.detach(), leaf.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("autocast", [None, torch.float16], ids=["fp32", "fp16-autocast"])
def test_one_node_matches_step_by_step(autocast, monkeypatch):
    layer, layout, hidden = _layer_and_inputs()
    ops = ops_lib.triton_ops()
    dy = torch.randn_like(hidden)
    context = (lambda: torch.autocast("cpu", dtype=autocast)) if autocast else torch.enable_grad
    applied = []
    original = fused_layer.EncoderLayerFunction.apply
    monkeypatch.setattr(fused_layer.EncoderLayerFunction, "apply",
                        lambda *args: applied.append(1) or original(*args))

    def one_node(h):
        with context():
            return ops.encoder_layer(layer, h, layout, ops)

    def steps(h):
        with context():
            return layer.forward_steps(h, layout, ops)

    out, d_hidden, grads = _run(one_node, layer, hidden, dy)
    ref, ref_hidden, ref_grads = _run(steps, layer, hidden, dy)
    assert applied, "the one-node layer did not run"
    tol = {"rtol": 1e-5, "atol": 1e-5} if autocast is None else {"rtol": 2e-2, "atol": 2e-2}
    assert out.dtype == ref.dtype and d_hidden.dtype == hidden.dtype  # gradients in each input's own dtype
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(d_hidden, ref_hidden, **tol)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name
        torch.testing.assert_close(grad, ref_grads[name], **tol, msg=name)


def test_hooked_or_replaced_modules_take_the_step_path(monkeypatch):
    """A hook on a module whose forward the steps call, or a module of another class, means the layer cannot skip
    that forward."""
    layer, layout, hidden = _layer_and_inputs()
    ops = ops_lib.triton_ops()
    monkeypatch.setattr(fused_layer.EncoderLayerFunction, "apply", lambda *args: pytest.fail("fused with a hook"))
    seen = []
    for module in (layer.attention.self.qkv, layer.intermediate):
        handle = module.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        out = ops.encoder_layer(layer, hidden.requires_grad_(), layout, ops)
        handle.remove()
    assert len(seen) == 2 and out.shape == hidden.shape
    layer.output.dense = torch.nn.Sequential(layer.output.dense)  # a wrapper (as adapters add)
    assert fused_layer.layer_params(layer) is None


def test_inference_needs_no_autograd_node(monkeypatch):
    layer, layout, hidden = _layer_and_inputs()
    ops = ops_lib.triton_ops()
    monkeypatch.setattr(fused_layer.EncoderLayerFunction, "apply", lambda *args: pytest.fail("an autograd node"))
    with torch.no_grad():
        out = ops.encoder_layer(layer, hidden, layout, ops)
        ref = layer.forward_steps(hidden, layout, ops)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_patched_models_concatenated_qkv_runs_in_one_node():
    """The transformers patch's QKV (three projections, concatenated per call) feeds the one-node layer too."""
    transformers = pytest.importorskip("transformers")
    from tests.model.conftest import hf_config, random_batch

    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(hf_config(config)).train()
    batch = random_batch(config, batch=3, seq=9)
    reference = model(**batch).last_hidden_state
    (grad_before,) = torch.autograd.grad(reference[batch["attention_mask"].bool()].sum(),
                                         [model.encoder.layer[0].attention.self.query.weight])
    bert_fast.patch(model, impl="triton")
    shadow_layer = model.__dict__["_bert_fast_shadow"].encoder.layer[0]
    assert fused_layer.layer_params(shadow_layer) is not None
    out = model(**batch).last_hidden_state
    (grad_after,) = torch.autograd.grad(out[batch["attention_mask"].bool()].sum(),
                                        [model.encoder.layer[0].attention.self.query.weight])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], reference[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_after, grad_before, rtol=1e-4, atol=1e-4)
