"""Our reference path against Hugging Face transformers (fp32, eval): same weights, same numbers."""

import pytest
import torch

import bert_fast
from tests.model.conftest import SENTENCES, hf_config, random_batch, tiny_config

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def assert_real_positions_close(ours, theirs, mask, tol=TOL):
    real = mask.bool()
    err = (ours[real] - theirs[real]).abs().max().item()
    assert err <= tol, f"max abs difference {err:.2e} at real positions"


def hf_pair(config, hf_class, our_class):
    theirs = hf_class(hf_config(config)).eval()
    ours = our_class(config, impl="reference").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


CONFIGS = {
    "tiny": tiny_config(),
    "tiny-tanh-gelu": tiny_config(hidden_act="gelu_new", num_attention_heads=4),
    "base-width-2-layers": bert_fast.BertConfig.preset("base", num_hidden_layers=2, vocab_size=300,
                                                       max_position_embeddings=128),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bert_model_matches_transformers(name):
    config = CONFIGS[name]
    ours, theirs = hf_pair(config, transformers.BertModel, bert_fast.BertModel)
    batch = random_batch(config, batch=3, seq=19)
    with torch.no_grad():
        out = ours(**batch, output_hidden_states=True)
        ref = theirs(**batch, output_hidden_states=True)
    assert_real_positions_close(out.last_hidden_state, ref.last_hidden_state, batch["attention_mask"])
    assert (out.pooler_output - ref.pooler_output).abs().max() <= TOL
    assert len(out.hidden_states) == len(ref.hidden_states) == config.num_hidden_layers + 1
    for ours_h, theirs_h in zip(out.hidden_states, ref.hidden_states):
        assert_real_positions_close(ours_h, theirs_h, batch["attention_mask"])


def test_minilm_checkpoint_on_real_sentences(minilm_dir):
    tokenizer = bert_fast.BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(SENTENCES)
    assert batch["attention_mask"].sum(1).unique().numel() == len(SENTENCES)  # lengths all differ
    ours = bert_fast.BertModel.from_pretrained(minilm_dir, impl="reference")
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        out = ours(**batch, output_hidden_states=True)
        ref = theirs(**batch, output_hidden_states=True)
    assert_real_positions_close(out.last_hidden_state, ref.last_hidden_state, batch["attention_mask"])
    assert (out.pooler_output - ref.pooler_output).abs().max() <= TOL
    for ours_h, theirs_h in zip(out.hidden_states, ref.hidden_states):
        assert_real_positions_close(ours_h, theirs_h, batch["attention_mask"])


def test_pretraining_heads_and_losses_match():
    config = tiny_config()
    ours, theirs = hf_pair(config, transformers.BertForPreTraining, bert_fast.BertForPreTraining)
    batch = random_batch(config, batch=3, seq=13)
    labels = torch.where(torch.rand(3, 13) < 0.3, batch["input_ids"], -100).masked_fill(
        batch["attention_mask"] == 0, -100)
    labels[0, 1] = batch["input_ids"][0, 1]  # at least one label
    nsp = torch.tensor([0, 1, 1])
    with torch.no_grad():
        out = ours(**batch, labels=labels, next_sentence_label=nsp)
        ref = theirs(**batch, labels=labels, next_sentence_label=nsp)
        no_labels = ours(**batch)
    # With labels the MLM head runs at labelled positions only, in row-major order.
    assert (out.prediction_logits - ref.prediction_logits[labels != -100]).abs().max() <= TOL
    assert_real_positions_close(no_labels.prediction_logits, ref.prediction_logits, batch["attention_mask"])
    assert (out.seq_relationship_logits - ref.seq_relationship_logits).abs().max() <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    # The decoder is tied to the word embeddings, as in transformers.
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_pretraining_gradients_match():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours, theirs = hf_pair(config, transformers.BertForPreTraining, bert_fast.BertForPreTraining)
    ours.train()
    theirs.train()
    batch = random_batch(config, batch=2, seq=9)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    nsp = torch.tensor([1, 0])
    ours(**batch, labels=labels, next_sentence_label=nsp).loss.backward()
    theirs(**batch, labels=labels, next_sentence_label=nsp).loss.backward()
    grads = {}
    for name, p in theirs.named_parameters():
        grads[name] = p.grad
    ours_grads = {k: v for k, v in _named_grads(ours).items()}
    assert set(ours_grads) == {k for k, g in grads.items() if g is not None}
    for name, g in ours_grads.items():
        err = (g - grads[name]).abs().max().item()
        assert err <= 1e-5, f"{name}: gradient differs by {err:.2e}"


def _named_grads(model):
    """Gradients under Hugging Face names (the fused qkv gradient split back into query/key/value)."""
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if name.endswith(("qkv.weight", "qkv.bias")):
            base, kind = name.rsplit(".qkv.", 1)
            for part, g in zip(("query", "key", "value"), p.grad.chunk(3)):
                grads[f"{base}.{part}.{kind}"] = g
        else:
            grads[name] = p.grad
    return grads


def test_masked_lm_matches():
    config = tiny_config()
    ours, theirs = hf_pair(config, transformers.BertForMaskedLM, bert_fast.BertForMaskedLM)
    batch = random_batch(config)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = ours(**batch, labels=labels)
        ref = theirs(**batch, labels=labels)
        no_labels = ours(**batch)
    assert (out.logits - ref.logits[labels != -100]).abs().max() <= TOL
    assert_real_positions_close(no_labels.logits, ref.logits, batch["attention_mask"])
    assert abs(out.loss.item() - ref.loss.item()) <= TOL


def test_padding_does_not_change_real_tokens():
    """A sequence encoded alone and inside a padded batch gets the same hidden states."""
    config = tiny_config()
    model = bert_fast.BertModel(config, impl="reference").eval()
    batch = random_batch(config, batch=3, seq=15)
    with torch.no_grad():
        together = model(**batch).last_hidden_state
        for i in range(3):
            n = int(batch["attention_mask"][i].sum())
            alone = model(**{k: v[i:i + 1, :n] for k, v in batch.items()}).last_hidden_state
            assert (alone[0] - together[i, :n]).abs().max() <= 1e-5


def test_outputs_unpack_like_tuples():
    config = tiny_config()
    model = bert_fast.BertModel(config).eval()
    batch = random_batch(config)
    out = model(**batch)
    hidden, pooled = out
    assert hidden is out.last_hidden_state and pooled is out[1] and out["pooler_output"] is pooled
    assert len(out) == 2
    no_pooler = bert_fast.BertModel(config, add_pooling_layer=False)(**batch)
    assert len(no_pooler) == 1 and no_pooler.pooler_output is None
