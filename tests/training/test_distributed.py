"""The pretrain command under torchrun: 2 processes (gloo, CPU) match 1 process with 2x gradient accumulation,
with DDP, and with FSDP across a stop and --resume."""

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


def _config(tiny_config, out):
    config = copy.deepcopy(tiny_config)
    config.model.hidden_dropout_prob = config.model.attention_probs_dropout_prob = 0.0  # ranks draw other masks
    config.train.steps = 4
    config.train.eval_every = 0
    config.train.checkpoint_every = 2
    config.train.eval_batches = 4
    config.train.batch_size = 8
    config.train.micro_batch_size = 4  # 1 process: 2 accumulation steps; 2 processes: 1 each
    config.out = str(out)
    return config


def _torchrun(config, tmp_path, *extra):
    toml = tmp_path / f"{os.path.basename(config.out)}.toml"
    toml.write_text(config.to_toml())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bert_fast.cli", "pretrain", "--config", str(toml), *extra]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    return result


def _assert_same_run(single_dir, multi_dir):
    one, two = _losses(single_dir), _losses(multi_dir)
    assert [r[0] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert a[1:] == pytest.approx(b[1:], abs=1e-6, rel=0)
    eval_one = [r for r in read_metrics(single_dir) if r["split"] == "eval"][-1]
    eval_two = [r for r in read_metrics(multi_dir) if r["split"] == "eval"][-1]
    assert eval_one["examples"] == eval_two["examples"]  # the ranks split the held-out batches, none twice
    assert eval_one["mlm_accuracy"] == pytest.approx(eval_two["mlm_accuracy"], abs=1e-6)
    assert (multi_dir / "model" / "model.safetensors").is_file()  # rank 0 wrote the final model


@pytest.fixture
def single(tiny_config, tmp_path):
    summary = pretrain(_config(tiny_config, tmp_path / "single"))  # also builds the cached tokenizer and examples
    assert summary["world_size"] == 1
    return tmp_path / "single"


def test_ddp_two_ranks_match_one_rank_with_accumulation(single, tiny_config, tmp_path):
    _torchrun(_config(tiny_config, tmp_path / "ddp"), tmp_path)
    _assert_same_run(single, tmp_path / "ddp")
    assert _losses(single)[0] == _losses(tmp_path / "ddp")[0]  # same weights, same batches: bitwise at step 1


def test_fsdp_two_ranks_match_and_resume(single, tiny_config, tmp_path):
    config = _config(tiny_config, tmp_path / "fsdp")
    config.train.distributed = "fsdp"
    config.train.stop_at = 2
    _torchrun(config, tmp_path)
    config.train.stop_at = 0
    result = _torchrun(config, tmp_path, "--resume")
    assert "resumed from" in result.stderr
    _assert_same_run(single, tmp_path / "fsdp")
    # The saved model is whole (gathered from the shards) and loads like any other.
    from bert_fast import BertForPreTraining

    model = BertForPreTraining.from_pretrained(tmp_path / "fsdp" / "model")
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
