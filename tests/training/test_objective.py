import pytest
import torch

from bert_fast import BertConfig, BertForPreTraining
from bert_fast.training.objective import PretrainingObjective, masked_logits


def _batch(vocab, batch=4, seq=24):
    ids = torch.randint(5, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 10:] = 0
    mask[3, 3:] = 0
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 2:] = 1
    types = types * mask
    labels = torch.where((torch.rand(batch, seq) < 0.3) & (mask == 1), ids, torch.full_like(ids, -100))
    labels[:, 0] = ids[:, 0]  # at least one label per row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "next_sentence_label": torch.randint(0, 2, (batch,))}


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_objective_matches_the_model(impl):
    config = BertConfig.preset("tiny", vocab_size=97, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config, impl=impl).eval()
    batch = _batch(97)
    result = PretrainingObjective(model)(**batch, return_logits=True)
    full = model(**batch)
    no_labels = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    for key in ("loss", "mlm_loss", "nsp_loss"):
        torch.testing.assert_close(result[key], getattr(full, key), rtol=0, atol=0)
    chosen = batch["labels"] != -100
    torch.testing.assert_close(result["mlm_logits"], no_labels.prediction_logits[chosen], rtol=1e-4, atol=1e-4)
    assert torch.equal(result["mlm_labels"], batch["labels"][chosen])


def test_fused_mlm_loss_trains_like_the_plain_loss():
    config = BertConfig.preset("tiny", vocab_size=97, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = BertForPreTraining(config, impl="reference").train()
    fused = BertForPreTraining(config, impl="reference", fused_mlm_loss=True).train()
    fused.load_state_dict(plain.state_dict())
    batch = _batch(97)
    a, b = PretrainingObjective(plain)(**batch), PretrainingObjective(fused)(**batch)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-5)
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), (_, q) in zip(plain.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():  # evaluation still gets the masked logits
        assert PretrainingObjective(fused.eval())(**batch, return_logits=True)["mlm_logits"].shape[1] == 97


def test_masked_logits_accepts_full_or_gathered_logits():
    labels = torch.tensor([[-100, 3, -100], [5, -100, 7]])
    full = torch.randn(2, 3, 11)
    gathered = masked_logits(full, labels)
    assert torch.equal(gathered, full[labels != -100]) and gathered.shape == (3, 11)
    assert masked_logits(gathered, labels) is gathered
    with pytest.raises(ValueError, match="fit neither"):
        masked_logits(torch.randn(4, 11), labels)
