"""Fine-tuning with --capture: each micro-batch with a bucket runs as its bucket's step (a CUDA graph on a GPU; on
the CPU the same sequence of work, eagerly), the others eagerly into the same gradients. The numbers must be those
of the plain run."""

import json

import pytest
from safetensors.torch import load_file

import tests.finetune.finetune_fixtures as fx
from bert_fast.errors import SettingError
from bert_fast.finetune import FinetuneConfig, finetune

RECIPE = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-3, "warmup": 0.0, "max_length": 24,
          "impl": "triton", "device": "cpu", "eval_batch_size": 16}


def test_captured_steps_train_as_the_plain_run(tmp_path, monkeypatch):
    from bert_fast.training.capture import CapturedStep

    model = fx.write_tiny_model(tmp_path / "model", dropout=0.0)  # packed filler must not move dropout masks
    train = fx.write_sst2(tmp_path / "train.tsv", 16, seed=1)  # 2 steps of 2 micro-batches
    plain = finetune(FinetuneConfig("classify", model, train, train, out=tmp_path / "plain", **RECIPE))
    calls = []
    step = CapturedStep.__call__
    monkeypatch.setattr(CapturedStep, "__call__", lambda self, batch, **kw: calls.append(kw) or step(self, batch, **kw))
    captured = finetune(FinetuneConfig("classify", model, train, train, out=tmp_path / "captured", capture=True,
                                       **RECIPE))
    # every micro-batch had a bucket; the second of each step took the optimizer step inside it
    assert [c["step_optimizer"] for c in calls] == [False, True, False, True]
    assert captured["epochs"][0]["train_loss"] == pytest.approx(plain["epochs"][0]["train_loss"], rel=1e-5)
    a = load_file(tmp_path / "plain" / "best" / "model.safetensors")
    b = load_file(tmp_path / "captured" / "best" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert json.loads((tmp_path / "captured" / "config.json").read_text())["capture"] is True


def test_capture_refuses_fp16(tmp_path):
    model = fx.write_tiny_model(tmp_path / "model", dropout=0.0)
    train = fx.write_sst2(tmp_path / "train.tsv", 8, seed=1)
    with pytest.raises(SettingError, match="--capture takes bf16 or fp32"):
        finetune(FinetuneConfig("classify", model, train, train, out=tmp_path / "o", capture=True, precision="fp16",
                                **RECIPE))
