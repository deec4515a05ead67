"""Fine-tuning with --capture on a GPU: real CUDA graphs, bf16, against the same run eager."""

import pytest
from safetensors.torch import load_file

import tests.finetune.finetune_fixtures as fx
from bert_fast.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.gpu


def test_captured_fine_tuning_matches_eager_on_the_gpu(tmp_path):
    model = fx.write_tiny_model(tmp_path / "model", dropout=0.0)
    train = fx.write_sst2(tmp_path / "train.tsv", 64, seed=1)
    recipe = {"epochs": 2, "batch_size": 16, "micro_batch_size": 8, "lr": 1e-3, "warmup": 0.0, "max_length": 48,
              "impl": "triton", "device": "cuda", "precision": "bf16"}
    eager = finetune(FinetuneConfig("classify", model, train, train, out=tmp_path / "eager", **recipe))
    captured = finetune(FinetuneConfig("classify", model, train, train, out=tmp_path / "captured", capture=True,
                                       **recipe))
    for a, b in zip(eager["epochs"], captured["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)  # bf16: the same steps, other roundings
    assert captured["dev"]["accuracy"] == pytest.approx(eager["dev"]["accuracy"], abs=0.1)
    a = load_file(tmp_path / "eager" / "best" / "model.safetensors")
    b = load_file(tmp_path / "captured" / "best" / "model.safetensors")
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 5e-2
