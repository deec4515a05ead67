import copy
import json
from pathlib import Path

import pytest
import torch

from bert_fast.cli import main
from bert_fast.errors import DataError, ResumeError
from bert_fast.training.metrics import read_metrics
from bert_fast.training.trainer import pretrain


def _train_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"}


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


def test_resume_is_exact(tiny_config, tmp_path):
    """A run stopped at step 4 and resumed gives bitwise the losses and weights of an uninterrupted run
    (dropout on, so the RNG state must be restored too; the resumed part runs with a DataLoader worker)."""
    straight = copy.deepcopy(tiny_config)
    straight.out = str(tmp_path / "straight")
    pretrain(straight)

    interrupted = copy.deepcopy(tiny_config)
    interrupted.out = str(tmp_path / "interrupted")
    interrupted.train.stop_at = 4
    summary = pretrain(interrupted)
    assert summary["end_step"] == 4 and not summary["finished"] and summary["model_dir"] is None
    interrupted.train.stop_at = 0
    interrupted.data.num_workers = 1
    summary = pretrain(interrupted, resume=True)
    assert summary["start_step"] == 4 and summary["finished"]

    expected, got = _train_losses(straight.out), _train_losses(interrupted.out)
    assert sorted(got) == list(range(1, 9))
    assert got == expected  # bitwise: JSON keeps every digit of a float
    a, b = _weights(straight.out), _weights(interrupted.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evals = [r for r in read_metrics(interrupted.out) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]


@pytest.mark.parametrize("packing, batch_tokens", [("online", 1024), ("offline", 0)])
def test_resume_is_exact_with_packing(tiny_config, tmp_path, packing, batch_tokens, caplog):
    """Packed steps resume exactly too: a packed batch is a function of its index, whatever the epochs before."""
    tiny_config.data.packing = packing
    tiny_config.train.batch_tokens = batch_tokens  # 16 rows of 64 (online); 0: batch_size x seq_len = 8 rows
    tiny_config.train.micro_batch_size = 4  # two micro-batches per step, each half the rows
    straight = copy.deepcopy(tiny_config)
    straight.out = str(tmp_path / "straight")
    with caplog.at_level("INFO", logger="bert_fast"):
        pretrain(straight)
    line = next(r.getMessage() for r in caplog.records if "unpacked ->" in r.getMessage())
    rows = 8 if batch_tokens == 1024 else 4
    assert f"{rows} rows per micro-batch: padding" in line and f"packed ({packing}" in line

    interrupted = copy.deepcopy(tiny_config)
    interrupted.out = str(tmp_path / "interrupted")
    interrupted.train.stop_at = 3
    pretrain(interrupted)
    interrupted.train.stop_at = 0
    interrupted.data.num_workers = 1
    assert pretrain(interrupted, resume=True)["start_step"] == 3

    expected, got = _train_losses(straight.out), _train_losses(interrupted.out)
    assert sorted(got) == list(range(1, 9)) and got == expected
    a, b = _weights(straight.out), _weights(interrupted.out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train = [r for r in read_metrics(straight.out) if r["split"] == "train"]
    assert all(r["tokens_per_s"] > 0 for r in train)
    interrupted.data.packing = "none" if packing == "online" else "online"
    interrupted.train.batch_tokens = 0
    with pytest.raises(ResumeError, match="packing"):
        pretrain(interrupted, resume=True)


def test_a_checkpoint_from_before_the_packing_settings_resumes(tiny_config):
    """A checkpoint as older versions wrote it (trainer_state.pt, a saved config without data.packing,
    max_examples_per_row and batch_tokens) resumes, those settings read as their defaults."""
    tiny_config.train.stop_at = 2
    pretrain(tiny_config)
    folder = Path(tiny_config.out) / "checkpoints" / "step-00000002"
    state = torch.load(folder / "state.pt", weights_only=False)
    for section, key in (("data", "packing"), ("data", "max_examples_per_row"), ("train", "batch_tokens")):
        del state["config"][section][key]
    torch.save(state, folder / "trainer_state.pt")
    (folder / "state.pt").unlink()
    tiny_config.train.stop_at = 3
    assert pretrain(tiny_config, resume=True)["start_step"] == 2


def test_packing_settings_are_checked_before_anything_is_built(tiny_config):
    tiny_config.train.batch_tokens = 1024
    with pytest.raises(ValueError, match="set data.packing to 'online' or 'offline'"):
        pretrain(tiny_config)
    tiny_config.data.packing = "online"
    tiny_config.train.batch_tokens = 1000
    with pytest.raises(ValueError, match="not a whole number of rows of seq_len 64"):
        pretrain(tiny_config)
    tiny_config.train.batch_tokens = 64 * 3  # 3 rows cannot split over 2 micro-batches
    tiny_config.train.micro_batch_size = 4
    with pytest.raises(ValueError, match="make it a multiple of 128"):
        pretrain(tiny_config)
    assert not (Path(tiny_config.out) / "checkpoints").exists()


def test_a_custom_model_size(tiny_config):
    """[model] takes BertConfig's fields beside the preset: here 3 layers of hidden 48 with 3 heads."""
    tiny_config.model.num_hidden_layers = 3
    tiny_config.model.hidden_size = 48
    tiny_config.model.num_attention_heads = 3
    tiny_config.model.vocab_size = 448  # the tokenizer has 400: rows to spare, as a multiple of 64
    tiny_config.train.steps = 2
    summary = pretrain(tiny_config)
    saved = json.loads((Path(tiny_config.out) / "model" / "config.json").read_text())
    assert (saved["num_hidden_layers"], saved["hidden_size"], saved["num_attention_heads"],
            saved["intermediate_size"], saved["vocab_size"]) == (3, 48, 3, 192, 448)
    assert summary["finished"]
    tiny_config.model.num_attention_heads = 5
    tiny_config.out = tiny_config.out + "-bad"
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=5"):
        pretrain(tiny_config)


def test_resume_refuses_a_changed_model(tiny_config):
    tiny_config.train.stop_at = 2
    pretrain(tiny_config)
    tiny_config.train.stop_at = 0
    tiny_config.model.size = "mini"
    with pytest.raises(ResumeError, match="model config changed .*hidden_size: 128 -> 256"):
        pretrain(tiny_config, resume=True)
    tiny_config.model.size = "tiny"
    tiny_config.data.seq_len = 48
    with pytest.raises(ResumeError, match="seq_len: 64 -> 48"):
        pretrain(tiny_config, resume=True)
    checkpoints = sorted(p.name for p in (Path(tiny_config.out) / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002"]  # nothing was overwritten or lost


def test_an_existing_run_is_not_overwritten(tiny_config):
    tiny_config.train.steps = 1
    pretrain(tiny_config)
    before = (Path(tiny_config.out) / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run .*: pass --resume to continue it, --overwrite"):
        pretrain(tiny_config)
    assert (Path(tiny_config.out) / "metrics.jsonl").read_text() == before
    # --overwrite replaces it: the old run's checkpoints do not survive into the new one
    tiny_config.train.steps = 2
    tiny_config.train.checkpoint_every = 0
    assert pretrain(tiny_config, overwrite=True)["end_step"] == 2
    assert sorted(p.name for p in (Path(tiny_config.out) / "checkpoints").iterdir()) == ["step-00000002"]


def test_corpus_too_small_for_a_batch(tiny_config, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("Just one short document.\nWith two sentences.\n\nAnd another one here.\nIt ends.\n")
    tiny_config.data.corpus = [str(small)]
    tiny_config.train.batch_size = 64
    with pytest.raises(DataError, match="fewer than one micro-batch of 64"):
        pretrain(tiny_config)


def test_fp16_skips_an_overflow_step(tiny_config, monkeypatch):
    """fp16 with a GradScaler: a step whose gradients overflow is skipped, the scale halves, the learning-rate
    schedule does not advance, and training goes on."""
    from bert_fast.training import objective

    calls = []
    forward = objective.PretrainingObjective.forward

    def overflow_on_third(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3 and self.training:
            out = {**out, "loss": out["loss"] * float("inf")}
        return out

    monkeypatch.setattr(objective.PretrainingObjective, "forward", overflow_on_third)
    tiny_config.train.precision = "fp16"  # slow on the CPU: keep the run small
    tiny_config.data.seq_len = 32
    tiny_config.train.steps = 5
    tiny_config.train.eval_every = 0
    pretrain(tiny_config)
    train = [r for r in read_metrics(tiny_config.out) if r["split"] == "train"]
    assert [r["skipped_steps"] for r in train] == [0, 0, 1, 0, 0]
    assert train[2]["loss_scale"] == train[1]["loss_scale"] / 2
    assert train[2]["lr"] == train[1]["lr"]  # the schedule stood still
    assert all(r["loss"] is not None for r in train[3:])


def test_precision_fp16_skip_leaves_weights_unchanged():
    from bert_fast.training.precision import Precision

    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    precision = Precision("fp16", "cpu")
    before = [p.detach().clone() for p in layer.parameters()]
    with precision.autocast():
        loss = layer(torch.randn(2, 4)).float().sum() * float("inf")
    precision.backward(loss)
    _, stepped = precision.step(opt, layer.parameters(), 1.0)
    assert not stepped and all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    opt.zero_grad()
    with precision.autocast():
        loss = layer(torch.randn(2, 4)).float().mean()  # a sum would overflow fp16 at scale 2**15
    precision.backward(loss)
    _, stepped = precision.step(opt, layer.parameters(), 1.0)
    assert stepped and not all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


@pytest.fixture(scope="module")
def cli_run(corpus_file, cache_dir, tmp_path_factory):
    """One 16-step run through the command line, shared by the tests that read what it wrote."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["pretrain", "--corpus", str(corpus_file), "--model", "tiny", "--vocab-size", "400", "--seq-len", "64",
                 "--batch-size", "8", "--steps", "16", "--lr", "2e-3", "--out", str(out),
                 "--set", f"data.cache_dir=\"{cache_dir}\"", "--set", "data.num_workers=0", "--set", "train.log_every=2",
                 "--set", "train.eval_every=8", "--set", "train.eval_batches=2", "--set", "train.progress=false"])
    assert code == 0
    return out


def test_cli_run_folder_holds_config_metrics_checkpoints_and_model(cli_run):
    for name in ("config.toml", "metrics.jsonl", "summary.json", "tokenizer/vocab.txt", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json", "checkpoints/step-00000016/state.pt"):
        assert (cli_run / name).exists(), name
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["end_step"] == 16 and summary["finished"] and summary["model_dir"] == str(cli_run / "model")


def test_cli_run_loss_falls_and_is_evaluated_on_schedule(cli_run):
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["last_loss"] < summary["first_loss"] - 0.3  # the MLM+NSP loss falls
    evals = [r for r in read_metrics(cli_run) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [8, 16]
    assert 0 <= evals[-1]["mlm_accuracy"] <= 1 and evals[-1]["perplexity"] > 1


def test_cli_run_config_reads_back_as_the_same_config(cli_run, corpus_file):
    from bert_fast.training.config import PretrainConfig

    resolved = PretrainConfig.from_file(cli_run / "config.toml")
    assert resolved.train.steps == 16 and resolved.model.size == "tiny" and resolved.data.corpus == [str(corpus_file)]


def test_transformers_loads_the_trained_model_and_computes_the_same(cli_run):
    transformers = pytest.importorskip("transformers")
    from bert_fast import BertForPreTraining, BertTokenizer

    hf = transformers.BertForPreTraining.from_pretrained(cli_run / "model").eval()
    ours = BertForPreTraining.from_pretrained(cli_run / "model", impl="reference").eval()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(cli_run / "model")
    texts = ["Kalo mine of the zeru.", "The sati was gilhax."]
    batch = BertTokenizer.from_pretrained(cli_run / "model")(texts)
    assert batch["input_ids"].tolist() == hf_tok(texts, padding=True)["input_ids"]
    with torch.no_grad():
        expected = hf(**batch)
        got = ours(**batch)
    real = batch["attention_mask"].bool()  # logits at padding: transformers' belong to no token, ours are zeros
    assert not real.all()
    torch.testing.assert_close(got.prediction_logits[real], expected.prediction_logits[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.seq_relationship_logits, expected.seq_relationship_logits, rtol=1e-4, atol=1e-4)


def test_cli_plot_renders_the_curves(cli_run):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(cli_run)]) == 0
    png = cli_run / "curves.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--tokenizer", "/nonexistent/tok"], "tokenizer folder /nonexistent/tok does not exist"),
    (["--corpus", "/nonexistent/c.txt"], "corpus file /nonexistent/c.txt does not exist"),
    (["--set", "train.stpes=3"], "unknown setting 'train.stpes'"),
])
def test_cli_bad_input_is_a_clear_error(argv, message, tmp_path, cache_dir):
    with pytest.raises(SystemExit, match=message):
        main(["pretrain", "--out", str(tmp_path / "r"), "--set", f"data.cache_dir=\"{cache_dir}\"", *argv])
    assert not (tmp_path / "r").exists()  # a failed run leaves no empty folder behind


def _cli_run(corpus_file, cache_dir, out, *extra) -> list[str]:
    """A 6-step BERT-tiny run at sequence length 32 with checkpoints every 2 steps: every setting off its default,
    so a resume that fell back to the defaults could not go unnoticed."""
    return ["pretrain", "--corpus", str(corpus_file), "--model", "tiny", "--vocab-size", "400", "--seq-len", "32",
            "--batch-size", "8", "--steps", "6", "--lr", "2e-3", "--out", str(out),
            "--set", f"data.cache_dir=\"{cache_dir}\"", "--set", "data.num_workers=0", "--set", "train.log_every=1",
            "--set", "train.eval_every=0", "--set", "train.checkpoint_every=2", "--set", "train.progress=false",
            "--set", "train.tensorboard=false", *extra]


def test_ctrl_c_says_how_to_resume_and_resume_reads_the_runs_own_settings(corpus_file, cache_dir, tmp_path,
                                                                           monkeypatch, capsys):
    from bert_fast.training.trainer import Pretrainer

    straight = tmp_path / "straight"
    assert main(_cli_run(corpus_file, cache_dir, straight)) == 0

    out = tmp_path / "run"
    step = Pretrainer._train_step

    def ctrl_c_at_step_5(self, *args):
        if self.step == 4:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Pretrainer, "_train_step", ctrl_c_at_step_5)
    with pytest.raises(SystemExit) as stopped:
        main(_cli_run(corpus_file, cache_dir, out))
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert (f"interrupted at step 4; the last checkpoint is {out / 'checkpoints' / 'step-00000004'} (step 4). "
            f"Continue with: bert-fast pretrain --out {out} --resume") in err
    monkeypatch.setattr(Pretrainer, "_train_step", step)

    # The command the message gives: no other flag. The run continues with its own settings, exactly.
    assert main(["pretrain", "--out", str(out), "--resume"]) == 0
    assert _train_losses(out) == _train_losses(straight)
    assert (out / "config.toml").read_text() == (straight / "config.toml").read_text().replace(str(straight), str(out))


def test_cli_resume_refuses_other_settings_but_takes_more_steps_out_loud(corpus_file, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli_run(corpus_file, cache_dir, out, "--set", "train.stop_at=2")) == 0
    config_before = (out / "config.toml").read_text()
    with pytest.raises(SystemExit, match=r"cannot resume with other settings: data.seq_len \(the run has 32, this "
                                         r"command gives 64\); train.lr \(the run has 0.002, this command gives 0.01\)"):
        main(["pretrain", "--out", str(out), "--resume", "--seq-len", "64", "--set", "train.lr=1e-2"])
    assert (out / "config.toml").read_text() == config_before  # refused before anything was written
    capsys.readouterr()
    # the same settings given again are fine; the total steps may change, and the run says what that means
    assert main(["pretrain", "--out", str(out), "--resume", "--seq-len", "32", "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert "resuming with train.steps: 6 -> 8 (the total steps: the learning rate now decays" in err
    train = [r for r in read_metrics(out) if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9)) and train[-1]["lr"] == 0.0
    with pytest.raises(SystemExit, match="--resume needs --out RUN_DIR"):
        main(["pretrain", "--resume"])
    with pytest.raises(SystemExit, match="holds no config.toml: there is no run to resume there"):
        main(["pretrain", "--resume", "--out", str(tmp_path / "nothing")])


def test_print_config_shows_the_embedded_default(capsys):
    assert main(["pretrain", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert 'size = "tiny"' in text and "corpus = []" in text and "seq_len = 128" in text


def test_cli_packing_flags(capsys):
    assert main(["pretrain", "--packing", "offline", "--batch-tokens", "4096", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert 'packing = "offline"' in text and "batch_tokens = 4096" in text
    with pytest.raises(SystemExit, match="data.packing = 'sometimes' is not one of"):
        main(["pretrain", "--set", "data.packing=sometimes", "--print-config"])


def test_tokenizer_train_command(corpus_file, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(corpus_file), "--vocab-size", "300", "--out", str(out)]) == 0
    assert "trained 300 WordPieces" in capsys.readouterr().out
    from bert_fast import BertTokenizer

    tok = BertTokenizer.from_pretrained(out)
    assert tok.vocab_size == 300 and tok.pad_token_id == 0 and tok.mask_token_id == 4
    with pytest.raises(SystemExit, match="is empty"):
        (tmp_path / "empty.txt").write_text("")
        main(["tokenizer", "train", "--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "t2")])


def test_two_phases_each_evaluated_under_one_schedule(tiny_config):
    """Phase 1 at seq len 32, then phase 2 at 64 with a smaller batch; one schedule over both phases."""
    tiny_config.data.seq_len = 32
    tiny_config.train.steps = 3
    tiny_config.train.warmup_steps = 1
    tiny_config.train.eval_every = 0
    tiny_config.train.checkpoint_every = 0
    tiny_config.phase2.steps = 2
    tiny_config.phase2.seq_len = 64
    tiny_config.phase2.batch_size = 4
    summary = pretrain(tiny_config)
    assert summary["end_step"] == 5 and summary["finished"]
    train = [r for r in read_metrics(tiny_config.out) if r["split"] == "train"]
    assert [r["seq_len"] for r in train] == [32, 32, 32, 64, 64]
    lrs = [r["lr"] for r in train]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0  # linear decay to zero across the phases
    evals = [r for r in read_metrics(tiny_config.out) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 5]  # each phase ends with an evaluation on its own held-out split
    assert set(summary["stores"]) == {"32", "64"}


@pytest.mark.parametrize("setting, value, lr", [("train.optimizer", "lamb", 2e-2),  # LAMB's trust ratio: larger lr
                                                ("data.whole_word_masking", True, 5e-3)],
                         ids=["lamb", "whole-word-masking"])
def test_training_option_runs_and_learns(tiny_config, setting, value, lr):
    tiny_config.set(setting, value)
    tiny_config.data.seq_len = 32
    tiny_config.train.steps = 16
    tiny_config.train.lr = lr
    tiny_config.train.eval_every = 0
    tiny_config.train.checkpoint_every = 0
    summary = pretrain(tiny_config)
    losses = [r["mlm_loss"] for r in read_metrics(tiny_config.out) if r["split"] == "train"]
    assert summary["finished"] and len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1  # the MLM loss falls (from ln(400) ~ 6)


def test_full_disk_during_a_checkpoint(tiny_config, monkeypatch, capsys):
    """The disk fills while step 4's checkpoint is written: a clear error, step 2's checkpoint intact, and
    --resume continues from it."""
    import errno

    from bert_fast import checkpoint as ckpt_lib

    tiny_config.train.checkpoint_every = 2
    tiny_config.train.keep_checkpoints = 1
    tiny_config.train.steps = 6
    real_write = ckpt_lib.atomic_write
    writes = []

    def fill_disk_on_step_4(path, write):
        writes.append(path)
        if "step-00000004" in str(path.parent.parent):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, write)

    monkeypatch.setattr(ckpt_lib, "atomic_write", fill_disk_on_step_4)
    config_path = Path(tiny_config.out).parent / "c.toml"
    config_path.write_text(tiny_config.to_toml())
    with pytest.raises(SystemExit, match="could not write checkpoint step 4 .*the disk is full.*step-00000002.* is "
                                         "intact"):
        main(["pretrain", "--config", str(config_path)])
    checkpoints = Path(tiny_config.out) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002"]
    from bert_fast import BertForPreTraining

    BertForPreTraining.from_pretrained(checkpoints / "step-00000002" / "model")  # whole and readable
    monkeypatch.setattr(ckpt_lib, "atomic_write", real_write)
    summary = pretrain(tiny_config, resume=True)
    assert summary["start_step"] == 2 and summary["finished"]


def test_profile_steps_write_the_tables_and_the_timeline(tiny_config, monkeypatch):
    from bert_fast.training import profiling
    from bert_fast.training.trainer import pretrain

    monkeypatch.setattr(profiling, "SKIP", 2)  # the tiny run has 8 steps: profile steps 4-6 after 2 skipped + 1 warm-up
    monkeypatch.setattr(profiling, "WARMUP", 1)
    tiny_config.train.profile_steps = 3
    pretrain(tiny_config)
    ops = (Path(tiny_config.out) / "profile" / "ops.txt").read_text()
    assert "# host time (self CPU)" in ops and "aten::" in ops
    trace = json.loads((Path(tiny_config.out) / "profile" / "trace.json").read_text())
    for part in ("data", "forward", "backward", "optimizer"):  # the step's parts: one range per profiled step
        assert f"{part:10s} host" in ops and "(3 times)" in ops.split(f"{part:10s} host")[1].splitlines()[0], part
        assert len([e for e in trace["traceEvents"] if e.get("name") == part]) == 3, part


def test_profile_steps_off_writes_nothing_and_negative_is_an_error(tiny_config):
    from bert_fast.training.profiling import StepProfiler
    from bert_fast.training.trainer import pretrain

    pretrain(tiny_config)
    assert not (Path(tiny_config.out) / "profile").exists()
    with pytest.raises(ValueError, match="profile_steps"):
        StepProfiler(-1, Path(tiny_config.out) / "profile", torch.device("cpu"))


def test_captured_steps_pretrain_as_the_plain_run(tiny_config, monkeypatch):
    """train.capture: each micro-batch runs as its bucket's step (a CUDA graph on a GPU; on the CPU the same work,
    eagerly), with accumulation: the per-step losses and the final weights are the plain run's (dropout 0, so
    packing the batch cannot move a mask; the fused path, which the captured step needs)."""
    tiny_config.model.impl = "triton"
    tiny_config.model.hidden_dropout_prob = tiny_config.model.attention_probs_dropout_prob = 0.0
    tiny_config.data.seq_len = 32
    tiny_config.train.steps = 3
    tiny_config.train.micro_batch_size = 4  # two micro-batches a step
    tiny_config.train.eval_every = tiny_config.train.checkpoint_every = 0
    tiny_config.train.eval_batches = 1
    plain = copy.deepcopy(tiny_config)
    plain.out = str(Path(tiny_config.out).parent / "plain")
    pretrain(plain)
    tiny_config.train.capture = True
    from bert_fast.training.capture import CapturedStep

    calls = []
    step = CapturedStep.__call__
    monkeypatch.setattr(CapturedStep, "__call__", lambda self, batch, **kw: calls.append(kw) or step(self, batch, **kw))
    pretrain(tiny_config)
    assert [c["step_optimizer"] for c in calls] == [False, True] * 3  # every micro-batch had a bucket
    ours, theirs = read_metrics(tiny_config.out), read_metrics(plain.out)
    for a, b in zip([r for r in ours if r["split"] == "train"], [r for r in theirs if r["split"] == "train"]):
        for key in ("loss", "mlm_loss", "nsp_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    a, b = _weights(tiny_config.out), _weights(plain.out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_capture_refuses_what_a_graph_cannot_hold(tiny_config):
    tiny_config.train.capture = True
    tiny_config.train.precision = "fp16"
    with pytest.raises(ValueError, match="train.capture takes bf16 or fp32"):
        pretrain(tiny_config)
