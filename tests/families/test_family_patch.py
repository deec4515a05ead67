"""bert_fast.patch on every family's transformers models (bare encoders, *For* heads, sentence-transformers):
the same numbers as unpatched transformers, the model's own parameters, a clean revert."""

import pytest
import torch

import bert_fast
from tests.families.conftest import family_batch, family_config, hf_config
from tests.families.test_family_parity import hf_inputs
from tests.families.tokenizer_fixtures import roberta_tokenizer

transformers = pytest.importorskip("transformers")

TOL = 1e-4  # the triton path runs in Triton's interpreter here


def _run(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs)


@pytest.mark.parametrize(("role", "impl"), [("Model", "triton"), ("ForSequenceClassification", "reference"),
                                            ("ForTokenClassification", "triton")])
def test_patch_matches_transformers_and_unpatch_restores(model_type, role, impl):
    config = family_config(model_type)
    model = getattr(transformers, config.family.class_prefix + role)(hf_config(config)).eval()
    batch = hf_inputs(config, family_batch(config, batch=3, seq=12))
    before = _run(model, batch, output_hidden_states=True)
    bert_fast.patch(model, impl=impl)
    assert bert_fast.is_patched(model)
    after = _run(model, batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    if role == "ForSequenceClassification":
        assert (before.logits - after.logits).abs().max() <= TOL
    else:
        assert (before[0][real] - after[0][real]).abs().max() <= TOL
    assert len(before.hidden_states) == len(after.hidden_states) == config.num_hidden_layers + 1
    for a, b in zip(before.hidden_states, after.hidden_states):
        assert (a[real] - b[real]).abs().max() <= TOL
    bert_fast.unpatch(model)
    assert not bert_fast.is_patched(model)
    assert torch.equal(_run(model, batch)[0], before[0])


def test_positional_calls_follow_each_forwards_own_order():
    """DistilBERT's forward takes (input_ids, attention_mask, inputs_embeds, ...), not BERT's order."""
    config = family_config("distilbert")
    model = transformers.DistilBertModel(hf_config(config)).eval()
    batch = family_batch(config, batch=2, seq=8)
    reference = _run(model, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    bert_fast.patch(model, impl="reference")
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert (out.last_hidden_state[real] - reference.last_hidden_state[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "electra"])
def test_training_through_the_patch_updates_the_models_own_parameters(model_type):
    config = family_config(model_type)
    cls = getattr(transformers, config.family.class_prefix + "ForSequenceClassification")
    model, twin = cls(hf_config(config)).train(), cls(hf_config(config)).train()
    twin.load_state_dict(model.state_dict())
    bert_fast.patch(model, impl="triton")
    batch = hf_inputs(config, family_batch(config))
    labels = torch.tensor([0, 1, 1])
    model(**batch, labels=labels).loss.backward()
    twin(**batch, labels=labels).loss.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert p.grad is not None, name
        assert (p.grad - q.grad).abs().max() <= 1e-4, name


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "electra", "distilbert"])
def test_sentence_transformers_models_of_each_family(model_type, tmp_path):
    """A sentence-transformers model built from a local folder (random transformers weights, a tokenizer trained
    here): patched embeddings match unpatched ones."""
    st = pytest.importorskip("sentence_transformers")
    if model_type in ("roberta", "xlm-roberta"):
        roberta_tokenizer(tmp_path)
        config = family_config(model_type, vocab_size=400, max_position_embeddings=66)
    else:
        tokenizer = bert_fast.BertTokenizer.train(texts=["a few words for a tiny vocabulary"] * 4, vocab_size=60,
                                                  min_frequency=1)
        tokenizer.save_pretrained(tmp_path)
        config = family_config(model_type, vocab_size=tokenizer.vocab_size, max_position_embeddings=66)
    transformers.AutoModel.from_config(hf_config(config, "sdpa")).save_pretrained(tmp_path)
    model = st.SentenceTransformer(str(tmp_path), device="cpu")
    sentences = ["a few words", "words for a vocabulary, a few more of them"]
    before = model.encode(sentences, convert_to_tensor=True)
    bert_fast.patch(model, impl="triton")
    after = model.encode(sentences, convert_to_tensor=True)
    assert (before - after).abs().max() <= TOL
    bert_fast.unpatch(model)
    assert torch.equal(model.encode(sentences, convert_to_tensor=True), before)
