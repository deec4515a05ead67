"""Packed micro-batches against the same examples unpacked: the same losses, per example, and the same gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bert_fast import BertConfig, BertForPreTraining
from bert_fast.data.packing import PackedBudgets, pack_examples, pack_online
from bert_fast.packed import encode_packed_rows
from bert_fast.training.objective import PretrainingObjective

VOCAB, ROW_LEN = 97, 32


def _config(**overrides):
    # head_dim 16: the smallest the attention kernel serves, so the fused path runs kernels end to end
    base = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}
    return BertConfig(**{**base, **overrides})


def _examples(lengths):
    """An unpacked pretraining batch as loader.collate makes it: [CLS] A [SEP] B [SEP], masks, NSP labels."""
    n, width = len(lengths), max(lengths)
    ids = torch.randint(5, VOCAB, (n, width))
    mask = torch.zeros(n, width, dtype=torch.long)
    types = torch.zeros(n, width, dtype=torch.long)
    labels = torch.full((n, width), -100)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
        sep_a = max(1, length // 2 - 1)
        ids[i, 0], ids[i, sep_a], ids[i, length - 1] = 2, 3, 3
        types[i, sep_a + 1:length] = 1
        chosen = torch.rand(length) < 0.3
        chosen[[0, sep_a, length - 1]] = False
        chosen[1] = True  # at least one masked token per example
        labels[i, :length] = torch.where(chosen, ids[i, :length], torch.full((length,), -100))
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "next_sentence_label": torch.randint(0, 2, (n,))}


def _packed(unpacked, rows=4, max_per_row=3):
    """The same examples packed best-fit into rows of ROW_LEN (in one micro-batch, in their order)."""
    lengths = unpacked["attention_mask"].sum(1).numpy()
    plan = pack_online(lengths, ROW_LEN, rows, max_per_row, lookahead=len(lengths))
    assert len(plan) == 1, "the examples must fit one micro-batch"
    slots = plan[0]
    filled = slots >= 0
    order = torch.as_tensor(slots[filled])  # the examples in packing order
    reordered = {k: v[order] for k, v in unpacked.items()}
    budgets = PackedBudgets(rows, ROW_LEN, max_per_row, masked=rows * ROW_LEN // 2)
    return reordered, pack_examples(reordered, np.nonzero(filled)[0], budgets, pad_id=0)


def _per_example_losses(out):
    return (F.cross_entropy(out["mlm_logits"].float(), out["mlm_labels"], reduction="none"),
            F.cross_entropy(out["nsp_logits"].float(), out["next_sentence_label"], reduction="none"))


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_packed_and_unpacked_batches_give_the_same_losses_and_gradients(impl):
    model = BertForPreTraining(_config(), impl=impl).train()  # dropout 0: train mode with nothing random
    lengths = [32, 20, 12, 25, 7, 14, 9, 5, 18]  # a full row, rows of two and three examples, a tail
    unpacked, packed = _packed(_examples(lengths), rows=5)
    assert packed["input_ids"].shape == (5, ROW_LEN)
    objective = PretrainingObjective(model)

    results, grads = [], []
    for batch in (unpacked, packed):
        model.zero_grad()
        out = objective(**batch, return_logits=True)
        out["loss"].backward()
        out["next_sentence_label"] = batch["next_sentence_label"][batch["next_sentence_label"] != -100]
        results.append(out)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    a, b = results
    for key in ("loss", "mlm_loss", "nsp_loss"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    assert torch.equal(a["mlm_labels"], b["mlm_labels"])  # masked tokens in the same order
    for got, expected in zip(_per_example_losses(b), _per_example_losses(a)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_no_attention_crosses_an_example_boundary(impl):
    """Changing one example of a packed row changes its own outputs and nothing else's."""
    model = BertForPreTraining(_config(), impl=impl).eval()
    lengths = [12, 9, 11, 20, 7, 30]
    _, packed = _packed(_examples(lengths), rows=3)
    cu = packed["cu_seqlens"].tolist()
    starts = packed["cls_positions"][:len(lengths)].tolist()
    victim = next(i for i, s in enumerate(starts) if s % ROW_LEN == 0 and cu[cu.index(s) + 1] < s + ROW_LEN)
    span = slice(starts[victim], cu[cu.index(starts[victim]) + 1])  # shares its row with another example

    def encode(batch):
        with torch.no_grad():
            return encode_packed_rows(model.bert, batch["input_ids"], batch["token_type_ids"], batch["position_ids"],
                                      batch["cu_seqlens"])

    before = encode(packed)
    changed = dict(packed)
    ids = packed["input_ids"].clone().view(-1)
    ids[span] = torch.randint(5, VOCAB, (span.stop - span.start,))
    changed["input_ids"] = ids.view_as(packed["input_ids"])
    after = encode(changed)
    real = packed["attention_mask"].view(-1).bool()
    others = real.clone()
    others[span] = False
    assert torch.equal(after[others], before[others])
    assert not torch.allclose(after[span], before[span])


def test_positions_restart_and_each_example_encodes_as_alone():
    """The hidden states of a packed example equal those of the example encoded on its own."""
    model = BertForPreTraining(_config(), impl="reference").eval()
    lengths = [10, 6, 14, 8]
    reordered, packed = _packed(_examples(lengths), rows=2)
    hidden = encode_packed_rows(model.bert, packed["input_ids"], packed["token_type_ids"], packed["position_ids"],
                                packed["cu_seqlens"])
    positions = packed["position_ids"].view(-1)
    for e, start in enumerate(packed["cls_positions"][:len(lengths)].tolist()):
        n = int(reordered["attention_mask"][e].sum())
        assert positions[start:start + n].tolist() == list(range(n))
        alone = model.bert(reordered["input_ids"][e:e + 1, :n], token_type_ids=reordered["token_type_ids"][e:e + 1, :n])
        torch.testing.assert_close(hidden[start:start + n], alone.last_hidden_state[0], rtol=1e-5, atol=1e-5)


def test_packed_fused_mlm_loss_matches_the_plain_one():
    plain = BertForPreTraining(_config(), impl="reference").train()
    fused = BertForPreTraining(_config(), impl="reference", fused_mlm_loss=True).train()
    fused.load_state_dict(plain.state_dict())
    _, packed = _packed(_examples([20, 9, 31, 5, 12]), rows=3)
    a, b = PretrainingObjective(plain)(**packed), PretrainingObjective(fused)(**packed)
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-5, atol=1e-6)
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), (_, q) in zip(plain.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
