"""BERT's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm, tied MLM decoder,
and a head model draws its encoder exactly once (the encoder a bare BertModel draws from the same seed)."""

import pytest
import torch
from torch import nn

import bert_fast
from tests.model.conftest import tiny_config

HEAD_MODELS = [
    bert_fast.BertForPreTraining,
    bert_fast.BertForMaskedLM,
    bert_fast.BertForSequenceClassification,
    bert_fast.BertForTokenClassification,
    bert_fast.BertForQuestionAnswering,
    bert_fast.BertForMultipleChoice,
]


def config():
    return tiny_config(hidden_size=64, intermediate_size=256, initializer_range=0.05)


@pytest.mark.parametrize("model_class", [bert_fast.BertModel, *HEAD_MODELS], ids=lambda c: c.__name__)
def test_every_module_gets_berts_initialisation(model_class):
    torch.manual_seed(0)
    cfg = config()
    model = model_class(cfg)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears
    for module in linears:
        # nn.Linear's own default (kaiming uniform) would give std 1/sqrt(3 * fan_in) = 0.072 at fan_in 64
        std = module.weight.std().item()
        assert abs(std - cfg.initializer_range) < 0.25 * cfg.initializer_range, (module, std)
        if module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0, module
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            assert torch.count_nonzero(module.weight[module.padding_idx]) == 0


@pytest.mark.parametrize("model_class", HEAD_MODELS, ids=lambda c: c.__name__)
def test_head_model_draws_its_encoder_once(model_class):
    torch.manual_seed(0)
    model = model_class(config())
    torch.manual_seed(0)
    encoder = bert_fast.BertModel(config(), add_pooling_layer=model.bert.pooler is not None)
    inner = model.bert.state_dict()
    for key, value in inner.items():
        torch.testing.assert_close(value, encoder.state_dict()[key], rtol=0, atol=0, msg=key)


def test_mlm_decoder_is_tied_to_the_word_embeddings():
    model = bert_fast.BertForPreTraining(config())
    decoder = model.cls.predictions.decoder
    assert decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert torch.count_nonzero(model.cls.predictions.bias) == 0
