"""impl="triton" (packed real tokens, fused kernels; CPU: Triton's interpreter) against the reference path."""

import pytest
import torch

import bert_fast
from tests.model.conftest import random_batch, tiny_config

TOL = 1e-4


def paired(model_class, config, **kwargs):
    reference = model_class(config, impl="reference", **kwargs).eval()
    fast = model_class(config, impl="triton", **kwargs).eval()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def max_real_error(a, b, mask):
    real = mask.bool()
    return (a[real] - b[real]).abs().max().item()


def test_encoder_matches_reference(ffn_gemm):
    config = tiny_config()
    reference, fast = paired(bert_fast.BertModel, config)
    batch = random_batch(config, batch=4, seq=17, lengths=[17, 1, 9, 16])
    with torch.no_grad():
        ref, out = reference(**batch, output_hidden_states=True), fast(**batch, output_hidden_states=True)
    assert max_real_error(out.last_hidden_state, ref.last_hidden_state, batch["attention_mask"]) <= TOL
    assert (out.pooler_output - ref.pooler_output).abs().max() <= TOL
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert max_real_error(a, b, batch["attention_mask"]) <= TOL
    # The packed path hands back zeros at padded positions.
    assert not out.last_hidden_state[~batch["attention_mask"].bool()].any()


@pytest.mark.parametrize("model_class, outputs", [
    (bert_fast.BertModel, ("last_hidden_state",)),
    (bert_fast.BertForMaskedLM, ("logits",)),
    (bert_fast.BertForTokenClassification, ("logits",)),
], ids=["encoder", "mlm", "tagger"])
def test_both_paths_give_zeros_at_padding(model_class, outputs):
    """The README's promise: padded positions hold zeros in every per-token output, on the reference path (the
    specification) as on the packed path, so the two give the same tensor, padding included."""
    config = tiny_config()
    reference, fast = paired(model_class, config)
    batch = random_batch(config, batch=3, seq=13, lengths=[13, 1, 6])
    padded = ~batch["attention_mask"].bool()
    with torch.no_grad():
        ref, out = reference(**batch, output_hidden_states=True), fast(**batch, output_hidden_states=True)
    for name in outputs:
        assert not getattr(ref, name)[padded].any() and not getattr(out, name)[padded].any(), name
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=0, atol=TOL)
    for r, f in zip(ref.hidden_states, out.hidden_states):
        assert not r[padded].any()
        torch.testing.assert_close(f, r, rtol=0, atol=TOL)


def test_unpadded_batch_matches():
    config = tiny_config()
    reference, fast = paired(bert_fast.BertModel, config)
    ids = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        assert (fast(ids).last_hidden_state - reference(ids).last_hidden_state).abs().max() <= TOL


@pytest.mark.parametrize("training", [False, True])
def test_pretraining_loss_and_gradients_match(training, ffn_gemm):
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference, fast = paired(bert_fast.BertForPreTraining, config)
    reference.train(training)
    fast.train(training)
    batch = random_batch(config, batch=3, seq=13)
    labels = torch.where(torch.rand(3, 13) < 0.4, batch["input_ids"], -100).masked_fill(
        batch["attention_mask"] == 0, -100)
    labels[0, 0] = batch["input_ids"][0, 0]
    nsp = torch.tensor([1, 0, 1])
    ref = reference(**batch, labels=labels, next_sentence_label=nsp)
    out = fast(**batch, labels=labels, next_sentence_label=nsp)
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    ref.loss.backward()
    out.loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), fast.named_parameters()):
        assert (a.grad - b.grad).abs().max() <= TOL, name


def test_convergence_30_steps_fp32():
    """30 MLM+NSP training steps on both paths: the same per-step losses (fp32, no dropout)."""
    # One layer, one head and two short sequences: every kernel still runs, and 30 interpreted steps stay quick.
    config = tiny_config(num_hidden_layers=1, hidden_size=16, num_attention_heads=1, intermediate_size=32,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference, fast = paired(bert_fast.BertForPreTraining, config)
    reference.train()
    fast.train()
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=3e-3) for m in (reference, fast)}
    losses = {id(reference): [], id(fast): []}
    for _ in range(30):
        batch = random_batch(config, batch=2, seq=12, lengths=torch.randint(2, 13, (2,)).tolist())
        labels = torch.where(torch.rand(2, 12) < 0.3, batch["input_ids"], -100).masked_fill(
            batch["attention_mask"] == 0, -100)
        labels[:, 0] = batch["input_ids"][:, 0]
        nsp = torch.randint(0, 2, (2,))
        for model in (reference, fast):
            loss = model(**batch, labels=labels, next_sentence_label=nsp).loss
            loss.backward()
            optimizers[id(model)].step()
            optimizers[id(model)].zero_grad()
            losses[id(model)].append(loss.item())
    ref, out = torch.tensor(losses[id(reference)]), torch.tensor(losses[id(fast)])
    assert ref[-5:].mean() < ref[:5].mean()  # it learns
    assert ((out - ref).abs() / ref).max() <= 1e-3, list(zip(ref.tolist(), out.tolist()))


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_fully_padded_row_changes_nothing_else(impl):
    config = tiny_config()
    model = bert_fast.BertModel(config, impl=impl).eval()
    batch = random_batch(config, batch=3, seq=10, lengths=[10, 4, 7])
    padded = {k: v.clone() for k, v in batch.items()}
    padded["attention_mask"][1] = 0
    with torch.no_grad():
        out = model(**padded)
        ref = model(**{k: v[[0, 2]] for k, v in batch.items()})
    assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()
    keep = padded["attention_mask"][[0, 2]].bool()
    assert (out.last_hidden_state[[0, 2]][keep] - ref.last_hidden_state[keep]).abs().max() <= 1e-5
    assert (out.pooler_output[[0, 2]] - ref.pooler_output).abs().max() <= 1e-5


def _replay_ops():
    """The reference functions, run packed, with the kernels' own dropout masks regenerated from the same seeds: each
    layer draws its three seeds from torch's generator as the fused layer does (attention, then the two
    LayerNorms), and the steps use them in that order."""
    import bert_fast_kernels as K
    from bert_fast_kernels.launchers import draw_seeds

    from bert_fast import ops

    seeds = []

    def add_layer_norm(x, residual, weight, bias, eps, x_bias=None, dropout_p=0.0, return_residual=False):
        mask = None
        if dropout_p > 0.0:
            rows = x.reshape(-1, x.shape[-1]).shape[0]
            mask = K.add_layer_norm_dropout_mask(seeds.pop(0), rows, x.shape[-1], dropout_p, x.device)
            mask = mask.view(x.shape)
        return K.add_layer_norm_ref(x, residual, weight, bias, eps, x_bias=x_bias, dropout_p=dropout_p,
                                    dropout_mask=mask, return_residual=return_residual)

    def attention(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None):
        mask = None
        if dropout_p > 0.0:
            mask = K.varlen_dropout_mask(seeds.pop(0), cu_seqlens, qkv.shape[2], max_seqlen, dropout_p)
        q, k, v = qkv.unbind(1)
        return K.varlen_attention_ref(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, dropout_mask=mask)

    def encoder_layer(layer, hidden, layout, replay):
        drawn = draw_seeds(3, hidden.device)
        seeds[:] = [drawn[i:] for i in range(3)]
        out = layer.forward_steps(hidden, layout, replay)
        assert not seeds  # all three were used
        return out

    return ops.Ops("replay", ops.REFERENCE.bias_gelu, ops.REFERENCE.linear_gelu, add_layer_norm,
                   ops.REFERENCE.padded_attention, attention, packed=True, encoder_layer=encoder_layer)


def test_dropout_matches_reference_with_the_kernels_masks(monkeypatch):
    """Training with dropout 0.1 everywhere: the same loss and gradients when the reference replays the masks."""
    from bert_fast import ops

    config = tiny_config()
    reference, fast = paired(bert_fast.BertForPreTraining, config)
    reference.train()
    fast.train()
    batch = random_batch(config, batch=3, seq=13)
    labels = torch.where(torch.rand(3, 13) < 0.4, batch["input_ids"], -100).masked_fill(
        batch["attention_mask"] == 0, -100)
    labels[0, 0] = batch["input_ids"][0, 0]
    nsp = torch.tensor([1, 0, 1])

    torch.manual_seed(1234)
    out = fast(**batch, labels=labels, next_sentence_label=nsp)
    replay = _replay_ops()
    monkeypatch.setattr(ops, "resolve", lambda impl, device, *rest: replay)
    torch.manual_seed(1234)
    ref = reference(**batch, labels=labels, next_sentence_label=nsp)
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    torch.manual_seed(99)
    different = reference(**batch, labels=labels, next_sentence_label=nsp)
    assert abs(different.loss.item() - ref.loss.item()) > 1e-4  # the dropout is really on
    ref.loss.backward()
    out.loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), fast.named_parameters()):
        assert (a.grad - b.grad).abs().max() <= TOL, name


def test_torch_compile_fullgraph_through_the_kernels():
    """The fused path traces as one graph: custom ops with fake implementations, no host syncs in the layers."""
    torch._dynamo.reset()
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = bert_fast.BertForPreTraining(config, impl="triton").train()
    batch = random_batch(config)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    nsp = torch.tensor([0, 1, 0])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(**batch, labels=labels, next_sentence_label=nsp).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    eager = model(**batch, labels=labels, next_sentence_label=nsp).loss
    eager.backward()
    assert abs(loss.item() - eager.item()) <= 1e-5
    for name, p in model.named_parameters():
        assert (grads[name] - p.grad).abs().max() <= 1e-5, name
