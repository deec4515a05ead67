"""bert_fast.patch on transformers models: same numbers in place, the model's own weights, a clean revert."""

import pytest
import torch

import bert_fast
from tests.model.conftest import SENTENCES, hf_config, random_batch, tiny_config

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def run(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs)


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("hf_class", ["BertModel", "BertForSequenceClassification", "BertForPreTraining"])
def test_patch_matches_and_unpatch_restores(hf_class, impl):
    config = tiny_config()
    model = getattr(transformers, hf_class)(hf_config(config)).eval()
    batch = random_batch(config, batch=3, seq=14)
    before = run(model, batch, output_hidden_states=True)
    forward_before = model.forward
    bert_fast.patch(model, impl=impl)
    assert bert_fast.is_patched(model)
    after = run(model, batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    first_before, first_after = before[0], after[0]
    if first_before.dim() == 3 and first_before.shape[:2] == real.shape:
        assert (first_before[real] - first_after[real]).abs().max() <= TOL
    else:
        assert (first_before - first_after).abs().max() <= TOL
    for h_before, h_after in zip(before.hidden_states, after.hidden_states):
        assert (h_before[real] - h_after[real]).abs().max() <= TOL
    # The model's parameters are untouched and not duplicated.
    assert sum(1 for _ in model.parameters()) == sum(1 for _ in type(model)(hf_config(config)).parameters())
    bert_fast.unpatch(model)
    assert not bert_fast.is_patched(model) and model.forward == forward_before
    restored = run(model, batch)
    assert torch.equal(restored[0], before[0])


def test_padded_and_unpadded_agree_after_patching():
    config = tiny_config()
    model = bert_fast.patch(transformers.BertModel(hf_config(config)).eval(), impl="triton")
    batch = random_batch(config, batch=3, seq=12)
    together = run(model, batch).last_hidden_state
    for i in range(3):
        n = int(batch["attention_mask"][i].sum())
        alone = run(model, {k: v[i:i + 1, :n] for k, v in batch.items()}).last_hidden_state
        assert (alone[0] - together[i, :n]).abs().max() <= TOL


def test_unserved_features_fall_back_to_transformers():
    config = tiny_config()
    model = transformers.BertModel(hf_config(config)).eval()
    batch = random_batch(config)
    reference = run(model, batch, output_attentions=True)
    bert_fast.patch(model, impl="triton")
    out = run(model, batch, output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == config.num_hidden_layers
    assert torch.equal(out.last_hidden_state, reference.last_hidden_state)  # transformers' own path, bit for bit
    embeds = model.embeddings.word_embeddings(batch["input_ids"])
    assert run(model, {"inputs_embeds": embeds, "attention_mask": batch["attention_mask"]}).last_hidden_state \
        .shape == embeds.shape


def test_training_updates_the_models_own_parameters():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(hf_config(config)).train()
    twin = transformers.BertForSequenceClassification(hf_config(config)).train()
    twin.load_state_dict(model.state_dict())
    bert_fast.patch(model, impl="triton")
    batch = random_batch(config)
    labels = torch.tensor([0, 1, 1])
    model(**batch, labels=labels).loss.backward()
    twin(**batch, labels=labels).loss.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert p.grad is not None, name
        assert (p.grad - q.grad).abs().max() <= 1e-5, name


def test_return_dict_false_gives_a_tuple():
    config = tiny_config()
    model = bert_fast.patch(transformers.BertModel(hf_config(config)).eval(), impl="reference")
    out = run(model, random_batch(config), return_dict=False)
    assert isinstance(out, tuple) and len(out) == 2


def test_nothing_to_patch():
    with pytest.raises(ValueError, match="no patchable"):
        bert_fast.patch(torch.nn.Linear(2, 2))


def test_sentence_transformers_round_trip(minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    sentences = [SENTENCES[2], SENTENCES[1]]  # short: the kernels run in Triton's interpreter here
    before = model.encode(sentences, convert_to_tensor=True)
    bert_fast.patch(model, impl="triton")
    after = model.encode(sentences, convert_to_tensor=True)
    assert (before - after).abs().max() <= TOL
    bert_fast.unpatch(model)
    assert torch.equal(model.encode(sentences, convert_to_tensor=True), before)
