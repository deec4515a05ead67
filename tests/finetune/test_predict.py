"""`bert-fast predict`: a fine-tuned checkpoint applied to a file gives the predictions and metrics its fine-tuning
run wrote for the same file (labels, a regression head and SQuAD v2's tuned threshold all come from the
checkpoint); unlabelled files get predictions only; a model without the task's head is an error."""

import json

import pytest

import tests.finetune.finetune_fixtures as fx
from bert_fast import cli
from bert_fast.finetune import DataError, FinetuneConfig, finetune, predict_file

FAST = {"lr": 1e-3, "batch_size": 16, "warmup": 0.0, "eval_batch_size": 64}


def _finetune_then_predict(task, model, tmp_path, train, dev, **settings):
    run = finetune(FinetuneConfig(task, model, train, dev, out=tmp_path / "run", **{**FAST, **settings}))
    reading = {k: v for k, v in settings.items() if k in ("max_length", "doc_stride")}
    cfg = FinetuneConfig(task, tmp_path / "run" / "best", dev, dev, out=tmp_path / "predicted", **reading)
    return run, predict_file(cfg, dev)


@pytest.mark.parametrize("task", ["classify", "regression", "tag", "qa-v2", "choice"])
def test_predictions_and_metrics_match_the_fine_tuning_runs(tiny_model, tmp_path, task):
    settings = {"epochs": 1, "max_steps": 3}
    if task == "classify":
        train, dev = fx.write_jsonl(tmp_path / "train.jsonl", 40, seed=1), fx.write_jsonl(tmp_path / "dev.jsonl", 20, 2)
        name, files = "classify", ["predictions_dev.tsv"]
    elif task == "regression":
        train, dev = fx.write_stsb(tmp_path / "train.tsv", 40, seed=1), fx.write_stsb(tmp_path / "dev.tsv", 20, 2)
        name, files, settings = "classify", ["predictions_dev.tsv"], {**settings, "regression": True}
    elif task == "tag":
        train, dev = fx.write_conll(tmp_path / "train.conll", 30, seed=1), fx.write_conll(tmp_path / "dev.conll", 9, 2)
        name, files, settings = "tag", ["predictions_dev.conll"], {"epochs": 4, "max_length": 32}
    elif task == "qa-v2":
        train = fx.write_squad(tmp_path / "train.json", 20, seed=1, version=2, filler_words=10)
        dev = fx.write_squad(tmp_path / "dev.json", 6, seed=2, version=2, filler_words=10)
        name, files = "qa", ["predictions_dev.json", "nbest_predictions_dev.json", "null_odds_dev.json"]
        settings = {**settings, "max_length": 32, "doc_stride": 8}
    else:
        train, dev = fx.write_swag(tmp_path / "train.csv", 32, seed=1), fx.write_swag(tmp_path / "dev.csv", 8, seed=2)
        name, files = "choice", ["predictions_dev.tsv"]
    run, predicted = _finetune_then_predict(name, tiny_model, tmp_path, train, dev, **settings)
    assert predicted["metrics"] == run["dev"]  # the same model on the same inputs: the same numbers
    assert sorted(predicted["files"]) == sorted(str(tmp_path / "predicted" / f) for f in files)
    for f in files:
        assert (tmp_path / "predicted" / f).read_text() == (tmp_path / "run" / f).read_text(), f
    saved = json.loads((tmp_path / "predicted" / "metrics_dev.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(run["dev"])) and saved["examples"] > 0


def test_unlabelled_input_and_missing_heads(tiny_model, tmp_path):
    train = fx.write_sst2(tmp_path / "train.tsv", 32, seed=1)
    finetune(FinetuneConfig("classify", tiny_model, train, train, out=tmp_path / "run", epochs=1, max_steps=1,
                            **{k: v for k, v in FAST.items() if k != "batch_size"}))
    new = fx.write_sst2(tmp_path / "new.tsv", 7, seed=3, labelled=False)
    out = tmp_path / "predicted"
    summary = predict_file(FinetuneConfig("classify", tmp_path / "run" / "best", new, new, out=out), new)
    assert summary["metrics"] is None and summary["examples"] == 7
    rows = (out / "predictions_new.tsv").read_text().splitlines()
    assert rows[0].startswith("index\tprediction\t") and len(rows) == 8
    assert {r.split("\t")[1] for r in rows[1:]} <= {"0", "1"}
    assert not (out / "metrics_new.json").exists()
    with pytest.raises(DataError, match="names no labels"):  # a pretrained model: no fine-tuned label set
        predict_file(FinetuneConfig("classify", tiny_model, new, new, out=out), new, overwrite=True)
    with pytest.raises(DataError, match="has no trained qa head"):  # the classifier checkpoint has no qa_outputs
        squad = fx.write_squad(tmp_path / "q.json", 2, seed=1, version=1)
        predict_file(FinetuneConfig("qa", tmp_path / "run" / "best", squad, squad, out=out), squad, overwrite=True)


def test_cli_predict(tiny_model, tmp_path, capsys):
    train = fx.write_conll(tmp_path / "train.conll", 20, seed=1)
    finetune(FinetuneConfig("tag", tiny_model, train, train, out=tmp_path / "run", epochs=1, max_steps=1,
                            max_length=32, **FAST))
    assert cli.main(["predict", "tag", "--model", str(tmp_path / "run" / "best"), "--input", str(train),
                     "--out", str(tmp_path / "p"), "--max-length", "32", "--batch-size", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 20 and "f1" in printed["metrics"]
    assert printed["files"] == [str(tmp_path / "p" / "predictions_train.conll")]
    with pytest.raises(SystemExit, match="bert-fast predict: no such data file"):
        cli.main(["predict", "tag", "--model", str(tmp_path / "run" / "best"), "--input", str(tmp_path / "nope")])
