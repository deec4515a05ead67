"""The run scaffolding pretraining and fine-tuning share: the run folder, micro-batches, settings on resume."""

import pytest

from bert_fast.errors import ResumeError, RunFolderError, SettingError
from bert_fast.training.runs import accumulation_steps, run_folder, settings_for_resume

OUTPUTS = ("metrics.jsonl", "checkpoints", "predictions_*")


def test_a_used_run_folder_is_refused_unless_resumed_or_overwritten(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "predictions_dev.tsv").write_text("index\tprediction\n")
    (folder / "notes.txt").write_text("mine")  # not a run output: never touched
    refused = r"run already holds a run \(checkpoints, predictions_dev.tsv\): pass --resume to continue it, --overwrite"
    with pytest.raises(RunFolderError, match=refused), run_folder(folder, OUTPUTS, resume=False, overwrite=False):
        pass
    assert (folder / "checkpoints").is_dir()
    with run_folder(folder, OUTPUTS, resume=True, overwrite=False):
        assert (folder / "checkpoints").is_dir()  # resuming keeps the run
    with run_folder(folder, OUTPUTS, resume=False, overwrite=True):
        assert not (folder / "checkpoints").exists() and not (folder / "predictions_dev.tsv").exists()
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_failed_run_leaves_no_empty_folder(tmp_path):
    folder = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="bad corpus"), run_folder(folder, OUTPUTS, resume=False, overwrite=False):
        (folder / "tokenizer").mkdir()  # folders without files are nothing lost
        raise ValueError("bad corpus")
    assert not folder.exists()
    with pytest.raises(KeyboardInterrupt), run_folder(folder, OUTPUTS, resume=False, overwrite=False):
        (folder / "metrics.jsonl").write_text("{}\n")  # a file written: the folder stays
        raise KeyboardInterrupt
    assert (folder / "metrics.jsonl").is_file()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError), run_folder(existing, OUTPUTS, resume=False, overwrite=False):
        raise ValueError("fails")
    assert existing.is_dir()  # a folder the user made stays, empty or not


def test_accumulation_steps():
    assert accumulation_steps(32, None, 1) == 1
    assert accumulation_steps(32, 8, 2) == 2
    with pytest.raises(SettingError, match=r"batch_size=32 is not a multiple of micro_batch_size=6 x 2 rank\(s\)"):
        accumulation_steps(32, 6, 2)


def test_settings_on_resume_must_agree_except_the_few_that_may_change():
    saved = {"train.steps": 300, "train.lr": 1e-3, "data.seq_len": 128, "train.log_every": 10}
    loud = {"train.steps": "the total steps"}
    assert settings_for_resume(saved, {"train.lr": 1e-3, "data.seq_len": 128}, (), loud) == []  # given again, same
    assert settings_for_resume(saved, {"train.log_every": 1}, ("train.log_every",), loud) == []
    notes = settings_for_resume(saved, {"train.steps": 600}, (), loud)
    assert notes == ["train.steps: 300 -> 600 (the total steps)"]
    with pytest.raises(ResumeError, match=r"data.seq_len \(the run has 128, this command gives 64\); train.lr "
                                          r"\(the run has 0.001, this command gives 0.002\)\. Resuming reads"):
        settings_for_resume(saved, {"data.seq_len": 64, "train.lr": 2e-3, "train.steps": 600}, (), loud)
