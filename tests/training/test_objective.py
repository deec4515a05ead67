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
def test_sparse_head_matches_the_model_forward(impl):
    config = BertConfig.preset("tiny", vocab_size=97, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config, impl=impl).eval()
    batch = _batch(97)
    sparse = PretrainingObjective(model, sparse_mlm_head=True)(**batch, return_logits=True)
    dense = PretrainingObjective(model, sparse_mlm_head=False)(**batch, return_logits=True)
    full = model(**batch)
    for key in ("loss", "mlm_loss", "nsp_loss"):
        torch.testing.assert_close(sparse[key], getattr(full, key), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dense[key], getattr(full, key), rtol=0, atol=0)
    torch.testing.assert_close(sparse["mlm_logits"], full.prediction_logits[batch["labels"] != -100],
                               rtol=1e-4, atol=1e-4)
    assert torch.equal(sparse["mlm_labels"], batch["labels"][batch["labels"] != -100])


def test_masked_logits_accepts_full_or_gathered_logits():
    labels = torch.tensor([[-100, 3, -100], [5, -100, 7]])
    full = torch.randn(2, 3, 11)
    gathered = masked_logits(full, labels)
    assert torch.equal(gathered, full[labels != -100]) and gathered.shape == (3, 11)
    assert masked_logits(gathered, labels) is gathered
    with pytest.raises(ValueError, match="fit neither"):
        masked_logits(torch.randn(4, 11), labels)
