"""bert_fast.warmup: running a model's shapes once ahead of time (compiles and tunes on a GPU)."""

import json

import pytest
import torch

from bert_fast import cli
from bert_fast.warmup import warm_up
from tests.model.conftest import tiny_config


def test_warm_up_runs_each_length_and_mode():
    """On the CPU the kernels run in the interpreter: nothing to compile, but the same forwards and backward run."""
    rows = warm_up(tiny_config(num_hidden_layers=1), seq_lens=(8, 20), dtype=torch.float32, device="cpu",
                   log=lambda line: None)
    assert [(r["seq"], r["mode"]) for r in rows] == [(8, "inference"), (8, "train"), (20, "inference"),
                                                     (20, "train")]
    with pytest.raises(ValueError, match="longer than the model's 64 positions"):
        warm_up(tiny_config(), seq_lens=(65,), dtype=torch.float32, device="cpu", log=lambda line: None)


def test_warmup_command_needs_cuda_and_a_config(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        cli.main(["warmup", "--model", str(tmp_path)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the folder is checked before any GPU work
    with pytest.raises(SystemExit, match="no config.json"):
        cli.main(["warmup", "--model", str(tmp_path)])
    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    calls = []
    monkeypatch.setattr("bert_fast.commands.warmup.warm_up", lambda *a, **k: calls.append((a, k)) or [])
    assert cli.main(["warmup", "--model", str(tmp_path), "--seq-lens", "64,128", "--no-train"]) == 0
    (config, seq_lens, dtype), options = calls[0]
    assert config.hidden_size == 32 and seq_lens == [64, 128] and dtype == torch.bfloat16
    assert options == {"train": False, "inference": True}
