"""impl="triton" (packed real tokens, fused kernels; CPU: Triton's interpreter) against the reference path, for
every family: hidden states, MLM logits and loss, and every gradient within 1e-4."""

import pytest
import torch

import bert_fast
from tests.families.conftest import family_batch, family_config

TOL = 1e-4


def paired(model_class, config):
    reference = model_class(config, impl="reference")
    fast = model_class(config, impl="triton")
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference, fast


def test_masked_lm_forward_and_gradients_match_reference(model_type):
    config = family_config(model_type)
    reference, fast = paired(bert_fast.BertForMaskedLM, config)
    reference.train()
    fast.train()  # dropout is 0 in these configs: training mode runs the training kernels deterministically
    batch = family_batch(config, batch=3, seq=11, lengths=[11, 1, 6])
    labels = torch.where(torch.rand(batch["input_ids"].shape) < 0.5, batch["input_ids"], -100)
    labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    labels[0, 0] = batch["input_ids"][0, 0]
    ref = reference(**batch, labels=labels, output_hidden_states=True)
    out = fast(**batch, labels=labels, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert (a[real] - b[real]).abs().max() <= TOL, f"hidden state {i}"
    assert (out.logits - ref.logits).abs().max() <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    ref.loss.backward()
    out.loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), fast.named_parameters()):
        assert a.grad is not None and b.grad is not None, name
        assert (a.grad - b.grad).abs().max() <= TOL, name


@pytest.mark.parametrize("model_type", ["roberta", "electra", "distilbert"])
def test_sequence_classification_matches_reference(model_type):
    config = family_config(model_type, num_labels=3)
    reference, fast = paired(bert_fast.BertForSequenceClassification, config)
    batch = family_batch(config, batch=3, seq=9)
    labels = torch.tensor([0, 2, 1])
    ref = reference(**batch, labels=labels)
    out = fast(**batch, labels=labels)
    assert (out.logits - ref.logits).abs().max() <= TOL
    ref.loss.backward()
    out.loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), fast.named_parameters()):
        assert (a.grad - b.grad).abs().max() <= TOL, name
