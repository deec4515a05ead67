"""Task heads against transformers on the same weights (CPU, fp32, eval), and HF-format checkpoints both ways.

Token-level outputs are compared at real positions only: padded positions are unspecified (our packed path
never computes them). The packed (triton) path runs here under Triton's interpreter, with the references where
no kernel exists yet, so it checks the heads' use of the packed layout.
"""

import pytest
import torch
import transformers

import bert_fast
from bert_fast import heads

ATOL = 1e-5
IMPLS = ["reference", "triton"]


def hf_config(**overrides):
    values = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 37, "max_position_embeddings": 40, "type_vocab_size": 2,
              "attn_implementation": "eager"}
    values.update(overrides)
    return transformers.BertConfig(**values)


def pair(hf_cls, our_cls, impl, **overrides):
    config = hf_config(**overrides)
    hf = getattr(transformers, hf_cls)(config).eval()
    ours = our_cls(bert_fast.BertConfig.from_dict(config.to_dict()), impl=impl)
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours.eval()


def batch(batch_size=3, seq=11, vocab=97, padded=True, lead=()):
    shape = (*lead, batch_size, seq)
    ids = torch.randint(1, vocab, shape)
    types = torch.randint(0, 2, shape)
    mask = torch.ones(shape, dtype=torch.long)
    if padded:  # ragged: one full row, one of length 1, the rest in between
        lengths = torch.randint(1, seq + 1, shape[:-1])
        lengths.view(-1)[0] = seq
        lengths.view(-1)[-1] = 1
        mask = (torch.arange(seq) < lengths.unsqueeze(-1)).long()
        ids = ids.masked_fill(mask == 0, 0)
    return ids, types, mask


def close(a, b, name):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= ATOL, f"{name}: max abs error {err:.2e}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_matches_transformers(impl, num_labels):
    hf, ours = pair("BertForSequenceClassification", heads.BertForSequenceClassification, impl, num_labels=num_labels)
    ids, types, mask = batch()
    labels = torch.randn(3) if num_labels == 1 else torch.randint(0, num_labels, (3,))
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
        got = ours(ids, mask, types, labels=labels)
    close(got.logits, want.logits, "logits")
    close(got.loss, want.loss, "loss")


def test_multi_label_loss_matches_transformers():
    hf, ours = pair("BertForSequenceClassification", heads.BertForSequenceClassification, "reference", num_labels=4)
    ids, types, mask = batch()
    labels = torch.randint(0, 2, (3, 4)).float()
    with torch.no_grad():
        close(ours(ids, mask, types, labels=labels).loss, hf(input_ids=ids, attention_mask=mask,
                                                              token_type_ids=types, labels=labels).loss, "loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_token_classification_matches_transformers(impl):
    hf, ours = pair("BertForTokenClassification", heads.BertForTokenClassification, impl, num_labels=5)
    ids, types, mask = batch()
    labels = torch.randint(0, 5, ids.shape).masked_fill(torch.rand(ids.shape) < 0.3, -100)
    labels = labels.masked_fill(mask == 0, -100)  # the collator's convention
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
        got = ours(ids, mask, types, labels=labels)
    real = mask.bool()
    close(got.logits[real], want.logits[real], "logits at real tokens")
    close(got.loss, want.loss, "loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_token_classification_ignores_labels_at_padding(impl):
    _, ours = pair("BertForTokenClassification", heads.BertForTokenClassification, impl, num_labels=5)
    ids, types, mask = batch()
    labels = torch.randint(0, 5, ids.shape)
    with torch.no_grad():
        loss = ours(ids, mask, types, labels=labels).loss
        masked = ours(ids, mask, types, labels=labels.masked_fill(mask == 0, -100)).loss
    close(loss, masked, "loss with labelled padding")


@pytest.mark.parametrize("impl", IMPLS)
def test_question_answering_matches_transformers(impl):
    hf, ours = pair("BertForQuestionAnswering", heads.BertForQuestionAnswering, impl)
    ids, types, mask = batch(padded=False)
    start, end = torch.tensor([0, 3, 50]), torch.tensor([0, 7, 50])  # 50: outside the sequence, ignored
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, start_positions=start, end_positions=end)
        got = ours(ids, mask, types, start_positions=start, end_positions=end)
    close(got.start_logits, want.start_logits, "start logits")
    close(got.end_logits, want.end_logits, "end logits")
    close(got.loss, want.loss, "loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_question_answering_padded_batch(impl):
    """Real positions match transformers; the loss is the cross-entropy over real positions only."""
    hf, ours = pair("BertForQuestionAnswering", heads.BertForQuestionAnswering, impl)
    ids, types, mask = batch()
    lengths = mask.sum(1)
    start = torch.minimum(torch.tensor([2, 0, 0]), lengths - 1)
    end = torch.minimum(torch.tensor([5, 0, 0]), lengths - 1)
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        got = ours(ids, mask, types, start_positions=start, end_positions=end)
    real = mask.bool()
    close(got.start_logits[real], want.start_logits[real], "start logits at real tokens")
    close(got.end_logits[real], want.end_logits[real], "end logits at real tokens")
    assert (got.start_logits[~real] == torch.finfo(torch.float32).min).all()
    neg = torch.finfo(torch.float32).min
    hf_start = want.start_logits.masked_fill(~real, neg)
    hf_end = want.end_logits.masked_fill(~real, neg)
    expected = (torch.nn.functional.cross_entropy(hf_start, start) + torch.nn.functional.cross_entropy(hf_end, end)) / 2
    close(got.loss, expected, "loss over real positions")


@pytest.mark.parametrize("impl", IMPLS)
def test_multiple_choice_matches_transformers(impl):
    hf, ours = pair("BertForMultipleChoice", heads.BertForMultipleChoice, impl)
    ids, types, mask = batch(batch_size=4, lead=(2,))  # (2 examples, 4 choices, seq), ragged
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
        got = ours(ids, mask, types, labels=labels)
    assert got.logits.shape == (2, 4)
    close(got.logits, want.logits, "logits")
    close(got.loss, want.loss, "loss")


def test_multiple_choice_rejects_2d_input():
    _, ours = pair("BertForMultipleChoice", heads.BertForMultipleChoice, "reference")
    with pytest.raises(bert_fast.InputError, match="num_choices"):
        ours(torch.randint(1, 97, (2, 5)))


def test_hidden_states_returned():
    hf, ours = pair("BertForSequenceClassification", heads.BertForSequenceClassification, "reference")
    ids, types, mask = batch()
    with torch.no_grad():
        got = ours(ids, mask, types, output_hidden_states=True)
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
    assert len(got.hidden_states) == len(want.hidden_states) == 3
    real = mask.bool()
    close(got.hidden_states[-1][real], want.hidden_states[-1][real], "last hidden state at real tokens")


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "BertForTokenClassification",
                                  "BertForQuestionAnswering", "BertForMultipleChoice"])
def test_checkpoints_round_trip_with_transformers(tmp_path, name):
    config = hf_config(num_labels=2 if name != "BertForTokenClassification" else 4)
    hf = getattr(transformers, name)(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = getattr(heads, name).from_pretrained(tmp_path / "hf", impl="reference")
    assert ours.fresh_keys == []
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    want, got = hf.state_dict(), back.state_dict()
    assert set(want) == set(got)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    ids, types, mask = batch(lead=(2,) if name == "BertForMultipleChoice" else ())
    with torch.no_grad():
        a, b = hf(input_ids=ids, token_type_ids=types, attention_mask=mask), ours(ids, mask, types)
    first_a, first_b = a[0], b[0]  # logits / start logits
    if name in ("BertForTokenClassification", "BertForQuestionAnswering"):  # token level: real positions
        first_a, first_b = first_a[mask.bool()], first_b[mask.bool()]
    close(first_b, first_a, "logits after reload")


def test_task_head_from_encoder_checkpoint_starts_fresh(tmp_path):
    """An encoder-only checkpoint (with its pooler) loads into every head; the head itself starts fresh."""
    config = hf_config()
    transformers.BertModel(config).save_pretrained(tmp_path)
    model = heads.BertForTokenClassification.from_pretrained(tmp_path, num_labels=3)
    assert model.fresh_keys == ["classifier.bias", "classifier.weight"]
    qa = heads.BertForQuestionAnswering.from_pretrained(tmp_path)
    assert qa.fresh_keys == ["qa_outputs.bias", "qa_outputs.weight"]


def test_question_answering_needs_two_labels():
    with pytest.raises(bert_fast.InputError, match="num_labels=2"):
        heads.BertForQuestionAnswering(bert_fast.BertConfig.preset("tiny", vocab_size=50, num_labels=3))
