"""Bucketed packing for CUDA-graph inference: the static layout gives the same numbers as a plain forward."""

import pytest
import torch

import bert_fast
from bert_fast.buckets import inference_bucket, pack_batch
from bert_fast.inference import GraphedEncoder, _cut
from tests.model.conftest import random_batch, tiny_config


def test_buckets():
    assert inference_bucket([16]) == inference_bucket([64])  # one graph serves every length up to the width
    b = inference_bucket([100, 3, 64])
    assert (b.batch, b.width, b.tokens, b.slots) == (4, 128, 256, 6)
    assert inference_bucket([1]).tokens == 64
    # a position table of 100 caps the width (filler runs use positions 0 .. width - 1)
    assert inference_bucket([90, 3], max_width=100).width == 100
    assert inference_bucket([30], max_width=100).width == 64
    assert inference_bucket([5] * 6, choices=2).batch == 8  # 3 examples of 2 choices: 4 examples' slots


def test_filler_positions_stay_inside_a_short_position_table():
    config = tiny_config(max_position_embeddings=40)
    model = bert_fast.BertModel(config, impl="reference").eval()
    lengths = [37, 5]
    batch = random_batch(config, batch=2, seq=37, lengths=lengths)
    bucket = inference_bucket(lengths, max_width=config.max_position_embeddings)
    packed = pack_batch(batch, bucket, config.pad_token_id, config=config)
    assert bucket.width == 40 and int(packed.position_ids.max()) < 40
    with torch.no_grad():
        out = _cut(model(**packed.model_inputs()), bucket, packed.real_batch, packed.real_width)
        ref = model(**batch)
    real = batch["attention_mask"].bool()
    assert (out.last_hidden_state[real] - ref.last_hidden_state[real]).abs().max() <= 1e-5
    assert not out.last_hidden_state[~real].any()  # zeros at padding


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("lengths", [[11], [23, 1, 7], [40, 40, 40]])
def test_packed_bucket_matches_forward(impl, lengths):
    config = tiny_config(max_position_embeddings=128)
    model = bert_fast.BertModel(config, impl=impl).eval()
    batch = random_batch(config, batch=len(lengths), seq=max(lengths), lengths=lengths)
    bucket = inference_bucket(lengths, width_multiple=16, min_tokens=32)
    packed = pack_batch(batch, bucket, config.pad_token_id)
    assert packed.input_ids.shape == (bucket.tokens,) and packed.cu_seqlens.shape == (bucket.slots + 1,)
    assert int(packed.cu_seqlens[-1]) == bucket.tokens and (packed.cu_seqlens.diff() <= bucket.width).all()
    with torch.no_grad():
        out = model(**packed.model_inputs())
        ref = model(**batch)
    assert out.last_hidden_state.shape == (bucket.batch, bucket.width, config.hidden_size)
    cut = _cut(out, bucket, packed.real_batch, packed.real_width)
    real = batch["attention_mask"].bool()
    assert (cut.last_hidden_state[real] - ref.last_hidden_state[real]).abs().max() <= 1e-5
    assert (cut.pooler_output - ref.pooler_output).abs().max() <= 1e-5


def test_forward_packed_validates():
    model = bert_fast.BertModel(tiny_config())
    ids = torch.randint(0, 97, (10,))
    with pytest.raises(bert_fast.InputError, match="cu_seqlens must be int32"):
        model.forward_packed(ids, torch.tensor([0, 10]), 10)
    with pytest.raises(bert_fast.InputError, match="rise from 0 to the 10 tokens"):
        model.forward_packed(ids, torch.tensor([0, 4, 9], dtype=torch.int32), 10)
    with pytest.raises(bert_fast.InputError, match="more than max_seqlen=5"):
        model.forward_packed(ids, torch.tensor([0, 4, 10], dtype=torch.int32), 5)


def test_graphs_need_cuda():
    with pytest.raises(ValueError, match="CUDA graphs"):
        GraphedEncoder(bert_fast.BertModel(tiny_config()))


def test_graphs_refuse_the_reference_path():
    with pytest.raises(ValueError, match="captures the fused path"):
        GraphedEncoder(bert_fast.BertModel(tiny_config(), impl="reference"))
