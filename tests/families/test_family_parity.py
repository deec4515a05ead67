"""Every family against transformers (fp32, random configs): the reference path within 1e-5 (outputs, heads,
losses, gradients), strict-key loading both ways and checkpoints that round-trip through transformers."""

import copy

import pytest
import torch

import bert_fast
from bert_fast.families import packed_position_ids
from bert_fast.families import position_ids as family_position_ids
from tests.families.conftest import FAMILIES, ROBERTA_LIKE, family_batch, family_config, hf_config

transformers = pytest.importorskip("transformers")

TOL = 1e-5

HEADS = {  # our class -> transformers' class name after the family's prefix
    bert_fast.BertModel: "Model",
    bert_fast.BertForMaskedLM: "ForMaskedLM",
    bert_fast.BertForSequenceClassification: "ForSequenceClassification",
    bert_fast.BertForTokenClassification: "ForTokenClassification",
    bert_fast.BertForQuestionAnswering: "ForQuestionAnswering",
    bert_fast.BertForMultipleChoice: "ForMultipleChoice",
}


def hf_class(config, ours):
    return getattr(transformers, config.family.class_prefix + HEADS[ours])


def twins(config, ours_class, impl="reference"):
    """transformers' model and ours with its weights, loaded with strict keys."""
    theirs = hf_class(config, ours_class)(hf_config(config)).eval()
    kwargs = {"add_pooling_layer": getattr(theirs, "pooler", None) is not None} if ours_class is bert_fast.BertModel \
        else {}
    ours = ours_class(config, impl=impl, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def hf_inputs(config, batch):
    """transformers' DistilBERT takes no token_type_ids."""
    return {k: v for k, v in batch.items() if config.family.token_types or k != "token_type_ids"}


def close_at_real(a, b, mask, tol=TOL, name="output"):
    real = mask.bool()
    err = (a[real] - b[real]).abs().max().item()
    assert err <= tol, f"{name}: max abs difference {err:.2e} at real positions"


def test_encoder_matches_transformers(model_type):
    config = family_config(model_type)
    ours, theirs = twins(config, bert_fast.BertModel)
    batch = family_batch(config, batch=3, seq=13)
    with torch.no_grad():
        out = ours(**batch, output_hidden_states=True)
        ref = theirs(**hf_inputs(config, batch), output_hidden_states=True)
    close_at_real(out.last_hidden_state, ref.last_hidden_state, batch["attention_mask"])
    assert len(out.hidden_states) == len(ref.hidden_states) == config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        close_at_real(a, b, batch["attention_mask"], name=f"hidden state {i}")
    if model_type in ("electra", "distilbert"):
        assert out.pooler_output is None and not hasattr(theirs, "pooler")
    else:
        assert (out.pooler_output - ref.pooler_output).abs().max() <= TOL


@pytest.mark.parametrize("head", [c for c in HEADS if c is not bert_fast.BertModel], ids=lambda c: c.__name__)
def test_heads_and_losses_match_transformers(model_type, head):
    config = family_config(model_type, num_labels=3 if head is bert_fast.BertForSequenceClassification else 2)
    ours, theirs = twins(config, head)
    # Our QA loss never sees padding (heads.py): compare it with transformers' on a batch without any.
    lengths = [9, 9, 9] if head is bert_fast.BertForQuestionAnswering else None
    batch = family_batch(config, batch=3, seq=9, lengths=lengths)
    labels = _labels(head, config, batch)
    if head is bert_fast.BertForMultipleChoice:  # (batch 2, choices 3, seq)
        batch = {k: v.unsqueeze(0).expand(2, -1, -1).flip(0).contiguous() for k, v in batch.items()}
    with torch.no_grad():
        out = ours(**batch, **labels)
        ref = theirs(**hf_inputs(config, batch), **labels)
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    if head is bert_fast.BertForQuestionAnswering:
        for name in ("start_logits", "end_logits"):
            close_at_real(getattr(out, name), getattr(ref, name), batch["attention_mask"], name=name)
    elif head is bert_fast.BertForTokenClassification:
        close_at_real(out.logits, ref.logits, batch["attention_mask"])
    elif head is bert_fast.BertForMaskedLM:  # with labels, logits at the labelled positions only
        assert (out.logits - ref.logits[labels["labels"] != -100]).abs().max() <= TOL
    else:
        assert (out.logits - ref.logits).abs().max() <= TOL


def _labels(head, config, batch):
    mask = batch["attention_mask"]
    if head is bert_fast.BertForMaskedLM:
        labels = batch["input_ids"].masked_fill(mask == 0, -100)
        return {"labels": labels}
    if head is bert_fast.BertForTokenClassification:
        return {"labels": torch.randint(0, 2, mask.shape).masked_fill(mask == 0, -100)}
    if head is bert_fast.BertForQuestionAnswering:
        return {"start_positions": torch.tensor([3, 0, 2]), "end_positions": torch.tensor([5, 0, 3])}
    if head is bert_fast.BertForMultipleChoice:
        return {"labels": torch.tensor([2, 0])}
    return {"labels": torch.tensor([0, 2, 1])}


def hf_named_grads(model) -> dict[str, torch.Tensor]:
    """Our gradients under transformers' names: a copy of the model holding its gradients as weights, read
    through its state dict (whose hooks split the fused QKV and rename to the family's keys)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, q in zip(model.parameters(), twin.parameters()):
            q.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    return twin.state_dict()


@pytest.mark.parametrize("head", [bert_fast.BertForSequenceClassification, bert_fast.BertForMaskedLM],
                         ids=lambda c: c.__name__)
def test_gradients_match_transformers(model_type, head):
    config = family_config(model_type, num_labels=3)
    ours, theirs = twins(config, head)
    ours.train()
    theirs.train()
    batch = family_batch(config, batch=3, seq=10)
    labels = _labels(head, config, batch)
    ours(**batch, **labels).loss.backward()
    theirs(**hf_inputs(config, batch), **labels).loss.backward()
    grads = hf_named_grads(ours)
    checked = 0
    for name, p in theirs.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        err = (grads[name] - expected).abs().max().item()
        assert err <= TOL, f"{name}: gradient differs by {err:.2e}"
        checked += 1
    assert checked == len(list(theirs.parameters()))


@pytest.mark.parametrize("head", list(HEADS), ids=lambda c: c.__name__)
def test_checkpoints_round_trip_through_transformers(model_type, head, tmp_path):
    """Ours saved -> transformers loads it with no missing or unexpected key, and back."""
    config = family_config(model_type, num_labels=2)
    ours = head(config, impl="reference").eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs, info = hf_class(config, head).from_pretrained(tmp_path / "ours", output_loading_info=True,
                                                          attn_implementation="eager")
    theirs.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    saved = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert saved.model_type == model_type and saved.architectures == [type(theirs).__name__]
    theirs.save_pretrained(tmp_path / "theirs")
    back = head.from_pretrained(tmp_path / "theirs", impl="reference")
    assert back.fresh_keys == []
    assert back.config.model_type == model_type
    batch = family_batch(config, batch=2, seq=7)
    if head is bert_fast.BertForMultipleChoice:
        batch = {k: v.unsqueeze(1).expand(-1, 2, -1).contiguous() for k, v in batch.items()}
    with torch.no_grad():
        a, b, c = ours(**batch), back(**batch), theirs(**hf_inputs(config, batch))
    for x, y in ((a, b), (a, c)):
        x, y = x[0], y[0]
        per_token = x.dim() >= 2 and x.shape[:2] == batch["attention_mask"].shape[-2:]
        if per_token and head is not bert_fast.BertForMultipleChoice:
            close_at_real(x, y, batch["attention_mask"])
        else:
            assert (x - y).abs().max() <= TOL


@pytest.mark.parametrize("model_type", ROBERTA_LIKE)
def test_roberta_positions_count_real_tokens_only(model_type):
    """Positions start after the pad id and skip padding anywhere (left padding included), as transformers'
    create_position_ids_from_input_ids does; packed sequences get the same positions."""
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    config = family_config(model_type)
    ids = torch.tensor([[5, 6, 7, 8, 9], [1, 1, 5, 6, 7], [5, 6, 1, 1, 1]])
    expected = RobertaEmbeddings.create_position_ids_from_input_ids(ids, config.pad_token_id)
    assert torch.equal(family_position_ids(config.family, ids, config.pad_token_id), expected)
    assert expected[0].tolist() == [2, 3, 4, 5, 6] and expected[1].tolist() == [1, 1, 2, 3, 4]
    packed = torch.tensor([5, 6, 7, 1, 8, 9, 4])
    cu = torch.tensor([0, 3, 3, 7], dtype=torch.int32)  # an empty sequence in the middle
    assert packed_position_ids(config.family, packed, cu, 1).tolist() == [2, 3, 4, 1, 2, 3, 4]


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_left_padding_and_packed_inputs_give_the_same_states(model_type, impl):
    """With RoBERTa's positions a left-padded sequence encodes like the unpadded one; forward_packed agrees."""
    config = family_config(model_type)
    model = bert_fast.BertModel(config, impl=impl).eval()
    batch = family_batch(config, batch=3, seq=9, lengths=[9, 4, 6])
    with torch.no_grad():
        padded = model(**batch).last_hidden_state
        real = batch["attention_mask"].bool()
        lengths = real.sum(1)
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        packed = model.forward_packed(batch["input_ids"][real], cu, 9, token_type_ids=batch["token_type_ids"][real])
        assert (packed.last_hidden_state - padded[real]).abs().max() <= 1e-4
        if model_type == "roberta":
            n = int(lengths[1])
            left = torch.full((1, 9), config.pad_token_id)
            left[0, 9 - n:] = batch["input_ids"][1, :n]
            mask = (left != config.pad_token_id).long()
            out = model(left, attention_mask=mask).last_hidden_state
            assert (out[0, 9 - n:] - padded[1, :n]).abs().max() <= 1e-4


def test_distilbert_ignores_token_types_and_electra_projects():
    config = family_config("distilbert")
    model = bert_fast.BertModel(config, impl="reference").eval()
    batch = family_batch(config)
    with torch.no_grad():
        a = model(**batch).last_hidden_state
        b = model(**{**batch, "token_type_ids": torch.ones_like(batch["input_ids"])}).last_hidden_state
    assert torch.equal(a, b)
    assert "embeddings.token_type_embeddings.weight" not in model.state_dict()
    assert any(k.startswith("transformer.layer.0.attention.q_lin") for k in model.state_dict())
    electra = bert_fast.BertModel(family_config("electra"))
    assert electra.embeddings.word_embeddings.weight.shape[1] == 24
    assert electra.embeddings_project.weight.shape == (32, 24)


@pytest.mark.parametrize("model_type", ["deberta-v2", "mpnet", "modernbert", "gpt2"])
def test_unserved_architectures_are_refused_clearly(model_type, tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 32}))
    with pytest.raises(bert_fast.ConfigError) as raised:
        bert_fast.BertModel.from_pretrained(tmp_path)
    message = str(raised.value)
    assert model_type in message
    for served in FAMILIES:
        assert served in message


def test_next_sentence_prediction_is_bert_only():
    with pytest.raises(bert_fast.ConfigError, match="masked LM"):
        bert_fast.BertForPreTraining(family_config("roberta"))
