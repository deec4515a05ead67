"""The end-to-end benchmark's plumbing on the CPU: every provider builds with the shared weights and agrees."""

import pytest
import torch

from bert_fast import benchmark
from tests.model.conftest import tiny_config

pytest.importorskip("transformers")


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_providers_share_weights_and_agree(mode):
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    state = benchmark.BertForPreTraining(config, impl="reference").state_dict()
    workload = benchmark.Workload("t", mode, 3, 16, ragged=True)
    batch = benchmark.make_batch(workload, config.vocab_size, "cpu", torch.Generator().manual_seed(0))
    results = {}
    for provider in ("bert_fast", "bert_fast-reference", "hf-eager", "hf-sdpa"):
        model = benchmark.build(provider, config, mode, state, "cpu").float()
        if mode == "train":
            with torch.no_grad():
                results[provider] = model(**batch).loss
        else:
            out = benchmark.step_fn(model, batch, mode)()
            results[provider] = out[0][batch["attention_mask"].bool()]
    assert torch.allclose(results["bert_fast"], results["hf-eager"], atol=1e-4)
    assert torch.allclose(results["bert_fast-reference"], results["hf-eager"], atol=1e-4)
    assert torch.allclose(results["hf-sdpa"], results["hf-eager"], atol=1e-4)


def test_ratio_table():
    rows = [{"model": "base", "workload": "w", "provider": p, "ms": ms, "tokens_per_s": t, "peak_mem_gib": 1.0}
            for p, ms, t in (("bert_fast", 1.0, 300.0), ("hf-sdpa", 2.0, 100.0))]
    table = {r["provider"]: r for r in benchmark.ratio_table(rows)}
    assert table["bert_fast"]["x hf-sdpa"] == 3.0 and table["hf-sdpa"]["x hf-sdpa"] == 1.0


def test_reference_path_and_fused_ffn_are_opt_in():
    assert "bert_fast-reference" in benchmark.PROVIDERS and "bert_fast-reference" not in benchmark.DEFAULT_PROVIDERS
    assert not set(benchmark.FUSED_FFN) & set(benchmark.DEFAULT_PROVIDERS)


def test_fine_tuning_workload_and_captured_steps_on_the_cpu():
    """The classification workload builds for every provider with one set of weights, and the graphs provider's
    training step (a CapturedStep, run eagerly on the CPU) packs its host batch into a bucket and steps."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_hidden_layers=1)
    state = benchmark.shared_state(config, "classification")
    workload = benchmark.Workload("t", "train", 3, 16, ragged=True, task="classification")
    batch = benchmark.make_batch(workload, config.vocab_size, "cpu", torch.Generator().manual_seed(0))
    losses = {}
    for provider in ("bert_fast", "hf-sdpa"):
        model = benchmark.build(provider, config, "train", state, "cpu", "classification").float()
        with torch.no_grad():
            losses[provider] = model(**batch).loss
    assert torch.allclose(losses["bert_fast"], losses["hf-sdpa"], atol=1e-4)
    model = benchmark.build("bert_fast+graphs", config, "train", state, "cpu", "classification").float()
    step, _ = benchmark.captured_step_fn(model, batch, config, "classification")
    before = model.classifier.weight.detach().clone()
    assert torch.allclose(step(), losses["bert_fast"], atol=1e-4)  # the loss of the weights it started from
    assert not torch.equal(model.classifier.weight, before)
    assert "minilm-l6" in benchmark.SIZES and benchmark.size_config("minilm-l6").hidden_size == 384
