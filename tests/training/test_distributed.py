"""The pretrain command under torchrun: 2 processes (gloo, CPU) match 1 process with 2x gradient accumulation."""

import copy
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from bert_fast.training.metrics import read_metrics
from bert_fast.training.trainer import pretrain

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _losses(run_dir):
    return [(r["step"], r["loss"], r["mlm_loss"], r["nsp_loss"]) for r in read_metrics(run_dir)
            if r["split"] == "train"]


def test_two_ranks_match_one_rank_with_accumulation(tiny_config, tmp_path):
    config = copy.deepcopy(tiny_config)
    config.model.hidden_dropout_prob = config.model.attention_probs_dropout_prob = 0.0  # ranks draw other masks
    config.train.steps = 4
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.train.eval_batches = 4
    config.train.batch_size = 8
    config.train.micro_batch_size = 4  # 1 process: 2 accumulation steps; 2 processes: 1 each
    config.out = str(tmp_path / "single")
    single = pretrain(copy.deepcopy(config))  # also builds the cached tokenizer and examples
    assert single["world_size"] == 1

    toml = tmp_path / "config.toml"
    config.out = str(tmp_path / "ddp")
    toml.write_text(config.to_toml())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bert_fast.cli", "pretrain", "--config", str(toml)]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout

    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert [r[0] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert a[1:] == pytest.approx(b[1:], abs=1e-6, rel=0)
    assert one[0][1:] == two[0][1:]  # the first step (same weights, same batches) is bitwise equal
    eval_one = [r for r in read_metrics(tmp_path / "single") if r["split"] == "eval"][-1]
    eval_two = [r for r in read_metrics(tmp_path / "ddp") if r["split"] == "eval"][-1]
    assert eval_one["examples"] == eval_two["examples"]  # the ranks split the held-out batches, none twice
    assert eval_one["mlm_accuracy"] == pytest.approx(eval_two["mlm_accuracy"], abs=1e-6)
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()  # rank 0 wrote the final model
