"""Inference through captured CUDA graphs on a GPU: every head, embed, a patched model, a thousand replays."""

import pytest
import torch

import bert_fast
from bert_fast.inference import GraphedEncoder
from tests.model.conftest import random_batch, tiny_config

pytestmark = pytest.mark.gpu


def assert_graphs_replay_the_model(config, model, lengths_list, atol=0.0, rtol=0.0):
    """GraphedEncoder against the model's own forward on ragged batches: the real tokens and the pooled output,
    within atol + rtol x the largest hidden value."""
    graphed = GraphedEncoder(model)
    for lengths in lengths_list:
        batch = random_batch(config, batch=len(lengths), seq=max(lengths), lengths=lengths)
        batch = {k: v.cuda() for k, v in batch.items()}
        out = graphed(**batch)
        with torch.no_grad():
            ref = model(**batch)
        real = batch["attention_mask"].bool()
        bound = atol + rtol * ref.last_hidden_state[real].abs().max().item()
        assert (out.last_hidden_state[real] - ref.last_hidden_state[real]).abs().max() <= bound
        assert (out.pooler_output - ref.pooler_output).abs().max() <= atol + rtol
    return graphed


GRAPH_HEADS = [bert_fast.BertForPreTraining, bert_fast.BertForMaskedLM, bert_fast.BertForSequenceClassification,
               bert_fast.BertForTokenClassification, bert_fast.BertForQuestionAnswering]


def test_graph_replay_matches_forward():
    config = tiny_config(max_position_embeddings=128)
    model = bert_fast.BertModel(config, impl="triton").cuda().eval()
    graphed = assert_graphs_replay_the_model(config, model, ([16], [5, 60, 33], [16]), atol=1e-4)
    assert len(graphed.graphs) == 2

def test_graph_replay_with_the_fused_ffn_gemm(ffn_gemm):
    """bf16 (where the fused FFN GEMM runs when enabled): its autotuning happens in the warm-up, not the capture."""
    config = tiny_config(max_position_embeddings=128, hidden_size=64, intermediate_size=256, num_attention_heads=2)
    model = bert_fast.BertModel(config, impl="triton").cuda().to(torch.bfloat16).eval()
    assert_graphs_replay_the_model(config, model, ([16], [5, 60, 33]), rtol=1e-2)

@pytest.mark.parametrize("model_class", GRAPH_HEADS, ids=lambda c: c.__name__)
def test_graphs_serve_every_head(model_class):
    """Every head's outputs through graph replay (several buckets, a bucket replayed) equal its eager outputs."""
    config = tiny_config(max_position_embeddings=128, num_labels=2)
    model = model_class(config, impl="triton").cuda().eval()
    graphed = GraphedEncoder(model)
    for lengths in ([16], [5, 60, 33], [9]):
        batch = random_batch(config, batch=len(lengths), seq=max(lengths), lengths=lengths)
        out = graphed(**batch)  # host tensors, as a tokenizer hands them over
        with torch.no_grad():
            ref = model(**{k: v.cuda() for k, v in batch.items()})
        real = batch["attention_mask"].bool().cuda()
        for name, value in vars(ref).items():
            if not isinstance(value, torch.Tensor):
                continue
            got = getattr(out, name)
            assert got.shape == value.shape, name
            if value.dim() >= 2 and value.shape[:2] == real.shape:
                got, value = got[real], value[real]
            torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-4, msg=name)

def test_graphs_serve_multiple_choice():
    config = tiny_config(max_position_embeddings=128)
    model = bert_fast.BertForMultipleChoice(config, impl="triton").cuda().eval()
    batch = {k: v.view(2, 3, -1) for k, v in random_batch(config, batch=6, seq=20,
                                                          lengths=[20, 3, 9, 14, 1, 17]).items()}
    out = GraphedEncoder(model)(**batch)
    with torch.no_grad():
        ref = model(**{k: v.cuda() for k, v in batch.items()})
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)

def test_a_thousand_inference_replays_hold_memory_steady():
    config = tiny_config(max_position_embeddings=128)
    model = bert_fast.BertModel(config, impl="triton").cuda().eval()
    graphed = GraphedEncoder(model)
    batches = [random_batch(config, batch=len(lengths), seq=max(lengths), lengths=lengths)
               for lengths in ([16], [5, 60, 33])]
    for batch in batches:
        graphed(**batch)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for i in range(1000):
        out = graphed(**batches[i % 2])
    del out
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before and len(graphed.graphs) == 2

def test_patched_transformers_model_through_graphs():
    """A transformers model patched with graphs=True gives its own eager numbers, replayed from host tensors."""
    transformers = pytest.importorskip("transformers")
    from tests.model.conftest import hf_config

    config = tiny_config(max_position_embeddings=128, num_labels=2)
    hf = transformers.BertForSequenceClassification(hf_config(config, "sdpa")).cuda().eval()
    batch = random_batch(config, batch=3, seq=20, lengths=[20, 2, 11])
    with torch.no_grad():
        before = hf(**{k: v.cuda() for k, v in batch.items()}).logits
        bert_fast.patch(hf, impl="triton", graphs=True)
        after = hf(**batch).logits
        again = hf(**batch).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert torch.equal(after, again)
    bert_fast.unpatch(hf)

def test_graphed_embeddings(minilm_dir):
    from tests.model.conftest import SENTENCES

    model = bert_fast.BertModel.from_pretrained(minilm_dir, impl="triton", device="cuda")
    tokenizer = bert_fast.BertTokenizer.from_pretrained(minilm_dir)
    eager = bert_fast.embed(model, tokenizer, SENTENCES * 3, batch_size=4)
    graphed = bert_fast.embed(model, tokenizer, SENTENCES * 3, batch_size=4, graphs=True)
    assert abs(graphed - eager).max() <= 1e-4
