"""Shared pieces for the BERT-family tests: a small random config per family, its transformers twin, and batches
whose padding, pairs and odd sizes exercise what differs between families."""

import pytest
import torch

import bert_fast

FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert")
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


def family_config(model_type: str, **overrides) -> bert_fast.BertConfig:
    """Odd vocabulary and FFN sizes; head_dim 16, the smallest the attention kernel serves, so the fused path runs
    kernels end to end. RoBERTa's family pads with id 1 and has one token type, as its checkpoints do; ELECTRA's
    embeddings are narrower than its hidden states."""
    base = {"vocab_size": 101, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37, "max_position_embeddings": 40, "model_type": model_type,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if model_type in ROBERTA_LIKE:
        base.update(pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)
    if model_type == "electra":
        base.update(embedding_size=24, extra={"summary_last_dropout": 0.0})
    if model_type == "distilbert":  # no dropout anywhere: the gradient tests train with transformers' model
        base.update(type_vocab_size=1, extra={"seq_classif_dropout": 0.0, "qa_dropout": 0.0})
    return bert_fast.BertConfig(**{**base, **overrides})


def hf_config(config: bert_fast.BertConfig, attn_implementation: str = "eager"):
    """The same config as transformers' class for its model_type."""
    import transformers

    data = config.to_dict()
    hf = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    hf._attn_implementation = attn_implementation
    return hf


def family_batch(config, batch=3, seq=11, lengths=None):
    """Random ids with the pad id only at padding, ragged lengths (one full row, one of length 1), and segment ids
    for a pair where the family reads token types."""
    lengths = lengths or [seq, 1, max(2, seq // 2)][:batch] + [seq] * max(0, batch - 3)
    ids = torch.randint(0, config.vocab_size - 1, (batch, seq))
    ids = ids + (ids >= config.pad_token_id).long()  # never the pad id at a real position
    mask = torch.zeros(batch, seq, dtype=torch.long)
    types = torch.zeros(batch, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        if config.type_vocab_size > 1 and n > 2:
            types[i, n // 2:n] = 1
    ids = ids.masked_fill(mask == 0, config.pad_token_id)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(params=FAMILIES)
def model_type(request) -> str:
    return request.param
