import torch

from bert_fast import BertConfig, BertForPreTraining
from bert_fast.training.flops import non_embedding_params, peak_flops, train_flops_per_token


def test_flops_per_token_count():
    config = BertConfig.preset("mini", vocab_size=30522)
    model = BertForPreTraining(config, impl="reference")
    n = non_embedding_params(model)
    # Per layer: QKV + output projection (4 H^2 + 4 H), FFN (8 H^2 + 5 H), two LayerNorms (4 H). Then the
    # embeddings' LayerNorm, the pooler, the MLM transform (+ LayerNorm), NSP, and the MLM output bias.
    H, L = 256, 4
    layer = 4 * H * H + 4 * H + 8 * H * H + 5 * H + 4 * H
    expected = L * layer + 2 * H + (H * H + H) + (H * H + H + 2 * H) + (2 * H + 2) + 30522
    assert n == expected
    assert train_flops_per_token(model, L, H, 128) == 6 * n + 12 * L * H * 128


def test_peak_flops():
    assert peak_flops(torch.device("cpu"), "fp32") is None  # no MFU on the CPU
    assert peak_flops(torch.device("cpu"), "fp32", override_tflops=1.5) == 1.5e12
