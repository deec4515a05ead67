"""Fine-tuning under torchrun: 2 processes (gloo, CPU) train the same steps as 1 process accumulating 2
micro-batches per step, evaluate with the batches split over the ranks, and leave one set of files."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import tests.finetune.finetune_fixtures as fx
from bert_fast.finetune import FinetuneConfig, finetune
from bert_fast.finetune.runner import micro_batches, steps_per_epoch


def test_a_steps_examples_are_cut_into_contiguous_micro_batches():
    assert micro_batches(list(range(8)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert micro_batches(list(range(5)), 2) == [[0, 1], [2, 3, 4]]  # the epoch's last, shorter batch
    assert micro_batches(list(range(8)), 1) == [list(range(8))]
    assert steps_per_epoch(21, 8, 2) == 3  # 8, 8, then 5 examples over 2 micro-batches
    assert steps_per_epoch(17, 8, 2) == 2  # a last example alone cannot fill 2 micro-batches: left out
    assert steps_per_epoch(17, 8, 1) == 3  # one process, no accumulation: every example, as always


def test_batch_size_must_split_into_micro_batches(tiny_model, tmp_path):
    train = fx.write_sst2(tmp_path / "train.tsv", 8, seed=1)
    cfg = FinetuneConfig("classify", tiny_model, train, train, out=tmp_path / "o", batch_size=8, micro_batch_size=3)
    with pytest.raises(ValueError, match=r"batch_size=8 is not a multiple of micro_batch_size=3 x 1 rank"):
        finetune(cfg)
    with pytest.raises(ValueError, match="micro_batch_size must be positive"):
        FinetuneConfig("classify", tiny_model, train, train, micro_batch_size=0)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_two_ranks_match_one_rank_accumulating_two_micro_batches(tmp_path):
    model = fx.write_tiny_model(tmp_path / "model", dropout=0.0)  # ranks would draw other dropout masks
    train = fx.write_conll(tmp_path / "train.conll", 21, seed=1)  # 3 steps an epoch, the last one 5 examples
    dev = fx.write_conll(tmp_path / "dev.conll", 11, seed=2)
    args = ["tag", "--model", str(model), "--train", str(train), "--dev", str(dev), "--test", str(dev),
            "--epochs", "2", "--batch-size", "8", "--eval-batch-size", "4", "--lr", "1e-3", "--warmup", "0",
            "--max-length", "32", "--impl", "reference", "--device", "cpu", "--checkpoint-every", "4"]
    single = finetune(FinetuneConfig("tag", model, train, dev, dev, out=tmp_path / "one", epochs=2, batch_size=8,
                                     micro_batch_size=4, eval_batch_size=4, lr=1e-3, warmup=0.0, max_length=32,
                                     impl="reference", device="cpu"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bert_fast.cli", "finetune", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fine-tuning on 2 process(es): 1 micro-batch(es) of 4 examples" in result.stderr
    assert result.stdout.count('"world_size": 2') == 1  # rank 0 alone reports
    state = torch.load(tmp_path / "two" / "checkpoints" / "step-00000004" / "state.pt", weights_only=False)
    assert len(state["rng"]) == 2 and state["position"]["epoch"] == 2  # both ranks' generators, mid-epoch 2

    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (single["world_size"], two["world_size"]) == (1, 2)
    for a, b in zip(single["epochs"], two["epochs"], strict=True):
        assert a["steps"] == b["steps"] == 3 and a["train_tokens"] == b["train_tokens"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6, rel=0)
        assert a["dev"]["f1"] == pytest.approx(b["dev"]["f1"], abs=1e-9)
    assert two["best_epoch"] == single["best_epoch"]
    ours, theirs = load_file(tmp_path / "one" / "best" / "model.safetensors"), load_file(
        tmp_path / "two" / "best" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=1e-5, msg=name)
    # evaluation gathered every sentence from both ranks, in order: the same predictions, written once
    for name in ("predictions_dev.conll", "predictions_test.conll"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
