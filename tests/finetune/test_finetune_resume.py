"""Fine-tuning checkpoints: a run stopped mid-epoch or at an epoch's end and resumed gives the uninterrupted run's
numbers exactly (dropout on: the random generators come back too); bad resumes are clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

import tests.finetune.finetune_fixtures as fx
from bert_fast import cli
from bert_fast.errors import ResumeError
from bert_fast.finetune import FinetuneConfig, finetune

# 21 sentences in steps of 8: 3 steps an epoch, the last of 5; two epochs
RECIPE = {"epochs": 2, "batch_size": 8, "eval_batch_size": 4, "lr": 1e-3, "warmup": 0.25, "max_length": 32,
          "impl": "reference", "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume_data")
    return fx.write_conll(folder / "train.conll", 21, seed=1), fx.write_conll(folder / "dev.conll", 9, seed=2)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tests (conftest's _one_thread): sums split over threads round otherwise
    try:
        return out, finetune(FinetuneConfig("tag", tiny_model, *data, out=out, **RECIPE))
    finally:
        torch.set_num_threads(threads)


def _same_run(a_dir, a, b_dir, b):
    assert [e["train_loss"] for e in b["epochs"]] == [e["train_loss"] for e in a["epochs"]]  # bitwise
    assert [e["train_tokens"] for e in b["epochs"]] == [e["train_tokens"] for e in a["epochs"]]
    assert [e["dev"]["f1"] for e in b["epochs"]] == [e["dev"]["f1"] for e in a["epochs"]]
    assert b["best_epoch"] == a["best_epoch"]
    ours, theirs = load_file(a_dir / "best" / "model.safetensors"), load_file(b_dir / "best" / "model.safetensors")
    assert all(theirs[k].equal(ours[k]) for k in ours)
    assert (b_dir / "predictions_dev.conll").read_text() == (a_dir / "predictions_dev.conll").read_text()
    logged = [json.loads(line)["epoch"] for line in (b_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2]  # each epoch once, though the stopped run may have logged one already


@pytest.mark.parametrize("stop_at", [4, 3, 6], ids=["mid-epoch", "epoch-end", "last-step"])
def test_stopped_and_resumed_run_matches_the_uninterrupted_one(tiny_model, data, uninterrupted, tmp_path, stop_at):
    out = tmp_path / "run"
    stopped = finetune(FinetuneConfig("tag", tiny_model, *data, out=out, checkpoint_every=2, stop_at=stop_at,
                                      **RECIPE))
    if stop_at < 6:
        assert stopped["stopped_at"] == stop_at and stopped["total_steps"] == 6
    else:  # stopping at the last step ends the run as usual; resuming it evaluates the last epoch again
        _same_run(*uninterrupted, out, stopped)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{stop_at:08d}"]  # keep 1
    assert (out / "checkpoints" / f"step-{stop_at:08d}" / "model" / "config.json").is_file()  # an HF folder
    resumed = finetune(FinetuneConfig("tag", tiny_model, *data, out=out, checkpoint_every=2, resume=True, **RECIPE))
    _same_run(*uninterrupted, out, resumed)


def test_bad_resumes_are_clear_errors(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    finetune(FinetuneConfig("tag", tiny_model, *data, out=out, stop_at=2, **RECIPE))
    with pytest.raises(FileExistsError, match="already holds a run .*: pass --resume to continue it, --overwrite"):
        finetune(FinetuneConfig("tag", tiny_model, *data, out=out, **RECIPE))
    with pytest.raises(ResumeError, match=r"settings that decide each step changed \(lr: 0.001 -> 0.002\)"):
        finetune(FinetuneConfig("tag", tiny_model, *data, out=out, resume=True, **{**RECIPE, "lr": 2e-3}))
    with pytest.raises(ResumeError, match="micro-batches held 8 examples, this run's hold 4; pass --micro-batch-size 8"):
        finetune(FinetuneConfig("tag", tiny_model, *data, out=out, resume=True, micro_batch_size=4, **RECIPE))
    # the same micro-batches, named explicitly: it continues
    finetune(FinetuneConfig("tag", tiny_model, *data, out=out, resume=True, micro_batch_size=8, **RECIPE))


def test_cli_stop_and_resume(tiny_model, data, tmp_path, capsys):
    train, dev = data
    args = ["finetune", "tag", "--model", str(tiny_model), "--train", str(train), "--dev", str(dev), "--out",
            str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--impl", "reference"]
    assert cli.main([*args, "--stop-at", "2"]) == 0
    assert "stopped after step 2 of 3; continue with --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="bert-fast finetune: .* pass --resume"):
        cli.main(args)
    assert cli.main([*args, "--resume"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "tag" and printed["best_epoch"] == 1


def test_cli_resume_reads_the_runs_own_settings(tiny_model, data, tmp_path, caplog):
    """`finetune TASK --out RUN --resume` alone continues the run with the settings it started with; flags given
    again must agree, except the total steps (said out loud) and settings that change no step."""
    train, dev = data
    out = tmp_path / "run"
    args = ["finetune", "tag", "--model", str(tiny_model), "--train", str(train), "--dev", str(dev), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--warmup", "0.25", "--max-length", "32",
            "--eval-batch-size", "4", "--impl", "reference", "--device", "cpu", "--checkpoint-every", "2"]
    assert cli.main([*args, "--stop-at", "4"]) == 0
    with pytest.raises(SystemExit, match=r"cannot resume with other settings: lr \(the run has 0.001, this command "
                                         r"gives 0.01\)"):
        cli.main(["finetune", "tag", "--out", str(out), "--resume", "--lr", "1e-2"])
    with pytest.raises(SystemExit, match=r"task \(the run has 'tag', this command gives 'classify'\)"):
        cli.main(["finetune", "classify", "--out", str(out), "--resume"])
    assert cli.main(["finetune", "tag", "--out", str(out), "--resume", "--eval-batch-size", "8"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    straight_out = tmp_path / "straight"
    assert cli.main([*args[:9], str(straight_out), *args[10:]]) == 0
    straight = json.loads((straight_out / "metrics.json").read_text())
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in straight["epochs"]]
    # one more epoch: the total steps change, and the run says what that means
    caplog.clear()
    assert cli.main([*args, "--resume", "--epochs", "3", "--stop-at", "7"]) == 0
    assert "resuming with epochs: 2 -> 3 (the total steps" in caplog.text
    with pytest.raises(SystemExit, match="--train and --dev required"):
        cli.main(["finetune", "tag", "--out", str(tmp_path / "new")])


def test_finetune_and_predict_refuse_to_overwrite_a_run_without_overwrite(tiny_model, data, tmp_path):
    train, dev = data
    out = tmp_path / "run"
    args = ["finetune", "tag", "--model", str(tiny_model), "--train", str(train), "--dev", str(dev), "--out", str(out),
            "--batch-size", "8", "--max-length", "32", "--impl", "reference"]
    assert cli.main([*args, "--epochs", "2"]) == 0
    best = (out / "best" / "model.safetensors").read_bytes()
    metrics = (out / "metrics.json").read_text()
    with pytest.raises(SystemExit, match="already holds a run .*pass --resume to continue it, --overwrite to replace"):
        cli.main([*args, "--max-steps", "1"])
    assert (out / "best" / "model.safetensors").read_bytes() == best and (out / "metrics.json").read_text() == metrics
    assert cli.main([*args, "--max-steps", "1", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"][0]["steps"] == 1

    predicted = tmp_path / "predicted"
    predict = ["predict", "tag", "--model", str(out / "best"), "--input", str(dev), "--out", str(predicted)]
    assert cli.main(predict) == 0
    with pytest.raises(SystemExit, match=r"already holds a run \(metrics_dev.json, predictions_dev.conll\)"):
        cli.main(predict)
    assert cli.main([*predict, "--overwrite"]) == 0
def test_token_budget_steps_are_drawn_by_length_and_resume_exactly(tiny_model, data, tmp_path, monkeypatch):
    """--batch-tokens: each step one width, its padded tokens within the budget, the step count fixed before the
    run; a run stopped mid-epoch and resumed gives the uninterrupted run's numbers."""
    from bert_fast.finetune import runner

    recipe = {**RECIPE, "batch_tokens": 96}
    seen = []
    collate = runner.TASKS["tag"].collate

    def recording(self, features, training):
        batch = collate(self, features, training)
        if training:
            seen.append(tuple(batch["input_ids"].shape))
        return batch

    monkeypatch.setattr(runner.TASKS["tag"], "collate", recording)
    straight = finetune(FinetuneConfig("tag", tiny_model, *data, out=tmp_path / "a", **recipe))
    assert seen and all(rows * -(-width // 8) * 8 <= 96 for rows, width in seen)
    assert len({rows for rows, _ in seen}) > 1  # a varying number of examples per step
    steps = straight["epochs"][0]["steps"]
    assert len(seen) == 2 * steps and straight["epochs"][1]["steps"] == steps
    assert sum(e["train_tokens"] for e in straight["epochs"]) > 0
    stopped = finetune(FinetuneConfig("tag", tiny_model, *data, out=tmp_path / "b", stop_at=steps + 1, **recipe))
    assert stopped["stopped_at"] == steps + 1
    resumed = finetune(FinetuneConfig("tag", tiny_model, *data, out=tmp_path / "b", resume=True, **recipe))
    _same_run(tmp_path / "a", straight, tmp_path / "b", resumed)
    with pytest.raises(ResumeError, match="batch_tokens: 96 -> 128"):
        finetune(FinetuneConfig("tag", tiny_model, *data, out=tmp_path / "b", resume=True,
                                **{**recipe, "batch_tokens": 128}))


def test_cli_batch_tokens_flag(tiny_model, data):
    import argparse

    from bert_fast.commands.finetune import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["tag", "--model", str(tiny_model), "--train", str(data[0]), "--dev", str(data[1]),
                              "--batch-tokens", "4096"])
    assert config_from_args(args).batch_tokens == 4096
    with pytest.raises(ValueError, match="batch_tokens must be positive"):
        FinetuneConfig("tag", tiny_model, *data, batch_tokens=0)
