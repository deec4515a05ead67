"""Each runner end to end on tiny fixtures in the official layouts: it trains (the fixtures are learnable), keeps
the best checkpoint in Hugging Face format, writes predictions and metrics, and reports bad data clearly."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tests.finetune.finetune_fixtures as fx
from bert_fast import cli
from bert_fast.finetune import DataError, FinetuneConfig, finetune

FAST = {"lr": 1e-3, "batch_size": 16, "warmup": 0.0, "eval_batch_size": 64}


def run(task, model, out, train, dev, test=None, **overrides):
    cfg = FinetuneConfig(task, model, train, dev, test, out=out, **{**FAST, **overrides})
    return finetune(cfg)


def scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def check_run_folder(out, summary):
    assert (out / "best" / "config.json").is_file() and (out / "best" / "model.safetensors").is_file()
    assert (out / "best" / "tokenizer.json").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == summary["best_epoch"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(summary["epochs"])
    best = summary["epochs"][summary["best_epoch"] - 1]
    # the saved best checkpoint, read back, reproduces the best epoch's dev metrics
    assert scalars(summary["dev"]) == pytest.approx(scalars(best["dev"]), rel=1e-9, abs=1e-9)
    primary = summary["primary_metric"]
    assert best["dev"][primary] == max(e["dev"][primary] for e in summary["epochs"])


def test_classify_sentences_learns_and_writes_glue_predictions(tiny_model, tmp_path):
    train = fx.write_sst2(tmp_path / "train.tsv", 128, seed=1)
    dev = fx.write_sst2(tmp_path / "dev.tsv", 48, seed=2)
    test = fx.write_sst2(tmp_path / "test.tsv", 10, seed=3, labelled=False)
    out = tmp_path / "out"
    summary = run("classify", tiny_model, out, train, dev, test, epochs=8)
    check_run_folder(out, summary)
    assert summary["dev"]["accuracy"] >= 0.9, summary["epochs"]
    assert set(summary["dev"]) == {"accuracy", "f1", "f1_macro", "mcc", "f1_positive_label"}
    assert summary["dev"]["f1_positive_label"] == "1"  # binary F1 says which label it counts as positive
    assert "test" in summary and summary["test"] is None  # unlabelled: predictions only
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"} and config["architectures"] == ["BertForSequenceClassification"]
    rows = list(csv.reader((out / "predictions_test.tsv").open(), delimiter="\t"))
    assert rows[0] == ["index", "prediction", "p(0)", "p(1)", "text"] and len(rows) == 11
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
    texts = [line.split("\t")[1] for line in test.read_text().splitlines()[1:]]  # GLUE test: index, sentence
    assert [r[4] for r in rows[1:]] == texts  # each prediction beside its text
    for r in rows[1:]:  # the probabilities sum to one, and the prediction is the likelier label
        p0, p1 = float(r[2]), float(r[3])
        assert abs(p0 + p1 - 1) < 1e-3 and r[1] == ("1" if p1 > p0 else "0")
    dev_rows = list(csv.reader((out / "predictions_dev.tsv").open(), delimiter="\t"))[1:]
    gold = [line.split("\t")[1] for line in dev.read_text().splitlines()[1:]]
    accuracy = sum(p[1] == g for p, g in zip(dev_rows, gold)) / len(gold)
    assert accuracy == pytest.approx(summary["dev"]["accuracy"])


def test_classify_sentence_pairs_mrpc(tiny_model, tmp_path):
    mrpc = fx.write_mrpc(tmp_path / "mrpc.tsv", 40, seed=1)
    summary = run("classify", tiny_model, tmp_path / "pairs", mrpc, mrpc, epochs=1, max_steps=2)
    assert {"accuracy", "f1", "mcc"} <= set(summary["dev"])
    rows = list(csv.reader((tmp_path / "pairs" / "predictions_dev.tsv").open(), delimiter="\t"))
    assert rows[0][-2:] == ["text", "text_b"]  # both texts of each pair beside its prediction


def test_classify_jsonl_and_a_fine_tuned_checkpoint_keeps_its_label_order(tiny_model, tmp_path):
    jsonl = fx.write_jsonl(tmp_path / "d.jsonl", 40, seed=1)
    summary = run("classify", tiny_model, tmp_path / "jsonl", jsonl, jsonl, epochs=1, max_steps=2)
    config = json.loads((tmp_path / "jsonl" / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    # a fine-tuned checkpoint keeps its label order and its classifier (--labels would reorder a fresh one)
    again = run("classify", tmp_path / "jsonl" / "best", tmp_path / "again", jsonl, jsonl, epochs=1, max_steps=1,
                lr=1e-6)
    assert json.loads((tmp_path / "again" / "best" / "config.json").read_text())["id2label"] == config["id2label"]
    before = load_file(tmp_path / "jsonl" / "best" / "model.safetensors")["classifier.weight"]
    after = load_file(tmp_path / "again" / "best" / "model.safetensors")["classifier.weight"]
    assert (after - before).abs().max() < 1e-4  # one step at lr 1e-6 from the same weights
    assert again["dev"]["accuracy"] == pytest.approx(summary["dev"]["accuracy"], abs=0.05)


def test_labels_flag_sets_the_order_of_a_fresh_classifier(tiny_model, tmp_path):
    jsonl = fx.write_jsonl(tmp_path / "d.jsonl", 40, seed=1)
    run("classify", tiny_model, tmp_path / "flip", jsonl, jsonl, epochs=1, max_steps=1, labels=["pos", "neg"])
    assert json.loads((tmp_path / "flip" / "best" / "config.json").read_text())["id2label"] == {"0": "pos", "1": "neg"}


def test_regression_stsb_writes_scores(tiny_model, tmp_path):
    stsb = fx.write_stsb(tmp_path / "sts.tsv", 40, seed=1)
    summary = run("classify", tiny_model, tmp_path / "sts", stsb, stsb, epochs=1, max_steps=2, regression=True,
                  lr=1e-4)
    assert {"pearson", "spearman", "mse"} <= set(summary["dev"])
    config = json.loads((tmp_path / "sts" / "best" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    rows = [r.split("\t") for r in (tmp_path / "sts" / "predictions_dev.tsv").read_text().splitlines()[1:]]
    scores = np.array([float(r[1]) for r in rows])  # numbers, not labels
    gold = np.array([float(line.split("\t")[-1]) for line in stsb.read_text().splitlines()[1:]])
    assert len(scores) == len(gold) == 40 and np.isfinite(scores).all()
    # the written scores are the ones the metrics were computed from
    assert np.corrcoef(scores, gold)[0, 1] == pytest.approx(summary["dev"]["pearson"], abs=1e-4)


def test_tag_learns_and_windows_long_sentences(tiny_model, tmp_path):
    train = fx.write_conll(tmp_path / "train.conll", 120, seed=1, long_every=15)
    dev = fx.write_conll(tmp_path / "dev.conll", 30, seed=2, long_every=10)
    out = tmp_path / "out"
    summary = run("tag", tiny_model, out, train, dev, dev, epochs=4, max_length=32)
    check_run_folder(out, summary)
    assert summary["dev"]["f1"] >= 0.8, summary["epochs"]
    assert summary["test"]["f1"] == summary["dev"]["f1"]
    assert any("split into windows" in k for k in summary["warnings"])
    predicted = (out / "predictions_dev.conll").read_text().split("\n\n")
    gold = dev.read_text().split("\n\n")[1:]
    assert len([p for p in predicted if p.strip()]) == len([g for g in gold if g.strip()])
    first_pred, first_gold = predicted[0].splitlines(), gold[0].splitlines()
    assert len(first_pred) == len(first_gold) > 40  # every word of the long sentence has a prediction
    assert [p.split()[0] for p in first_pred] == [g.split()[0] for g in first_gold]
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and config["architectures"] == ["BertForTokenClassification"]


def test_qa_v1_with_answers_across_windows(tiny_model, tmp_path):
    train = fx.write_squad(tmp_path / "train.json", 80, seed=1, version=1, filler_words=20)
    dev = fx.write_squad(tmp_path / "dev.json", 20, seed=2, version=1, filler_words=20)
    out = tmp_path / "out"
    summary = run("qa", tiny_model, out, train, dev, epochs=2, max_length=32, doc_stride=8)
    check_run_folder(out, summary)
    assert set(summary["dev"]) == {"exact_match", "f1", "total"}
    assert summary["dev"]["exact_match"] >= 80, summary["epochs"]
    predictions = json.loads((out / "predictions_dev.json").read_text())
    assert set(predictions) == {f"q{i}" for i in range(20)}
    nbest = json.loads((out / "nbest_predictions_dev.json").read_text())
    assert nbest["q0"][0]["text"] == predictions["q0"]


def test_qa_v2_tunes_the_null_threshold(tiny_model, tmp_path):
    train = fx.write_squad(tmp_path / "train.json", 60, seed=1, version=2, filler_words=10)
    dev = fx.write_squad(tmp_path / "dev.json", 15, seed=2, version=2, filler_words=10)
    out = tmp_path / "out"
    summary = run("qa", tiny_model, out, train, dev, dev, epochs=2, max_length=32, doc_stride=8)
    check_run_folder(out, summary)
    dev_metrics = summary["dev"]
    assert dev_metrics["HasAns_total"] == dev_metrics["NoAns_total"] == 15
    assert dev_metrics["null_threshold"] == dev_metrics["best_f1_thresh"]
    assert dev_metrics["f1"] == pytest.approx(dev_metrics["best_f1"])
    assert summary["test"]["null_threshold"] == dev_metrics["null_threshold"]  # tuned on dev, used for test
    odds = json.loads((out / "null_odds_test.json").read_text())
    answers = json.loads((out / "predictions_test.json").read_text())
    assert set(answers) == set(odds) == {f"q{i}" for i in range(15)} | {f"q{i}-none" for i in range(15)}
    assert all((answers[q] == "") == (odds[q] > dev_metrics["null_threshold"]) for q in odds)


def test_choice_runs_end_to_end(tiny_model, tmp_path):
    train = fx.write_swag(tmp_path / "train.csv", 48, seed=1)
    dev = fx.write_swag(tmp_path / "dev.csv", 16, seed=2)
    test = fx.write_swag(tmp_path / "test.csv", 8, seed=3, labelled=False)
    out = tmp_path / "out"
    summary = run("choice", tiny_model, out, train, dev, test, epochs=2)
    check_run_folder(out, summary)
    assert set(summary["dev"]) == {"accuracy"}
    rows = (out / "predictions_test.tsv").read_text().splitlines()
    assert len(rows) == 9 and {r.split("\t")[1] for r in rows[1:]} <= {"0", "1", "2", "3"}


@pytest.mark.parametrize("task", ["tag", "qa"])
def test_packed_path_trains_like_the_reference(tmp_path, task):
    """The fast path's layout (packed real tokens; Triton's interpreter on the CPU) gives the reference's run.

    Without dropout (whose random draws depend on the layout) the two runs see the same numbers up to fp32
    rounding: same losses, same predictions.
    """
    model = fx.write_tiny_model(tmp_path / "model", dropout=0.0)
    if task == "tag":
        train, dev = fx.write_conll(tmp_path / "train.conll", 24, seed=1), fx.write_conll(tmp_path / "dev", 8, seed=2)
        settings = {"max_length": 32}
    else:
        train = fx.write_squad(tmp_path / "train.json", 12, seed=1, version=2, filler_words=10)
        dev = fx.write_squad(tmp_path / "dev.json", 4, seed=2, version=2, filler_words=10)
        settings = {"max_length": 32, "doc_stride": 8}
    runs = {impl: run(task, model, tmp_path / impl, train, dev, epochs=1, max_steps=3, impl=impl, lr=1e-4,
                      **settings) for impl in ("reference", "triton")}
    assert runs["triton"]["impl"] == "triton"
    ref, fast = runs["reference"]["epochs"][0], runs["triton"]["epochs"][0]
    assert fast["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    assert scalars(fast["dev"]) == pytest.approx(scalars(ref["dev"]), abs=1e-4)
    predictions = sorted((tmp_path / "reference").glob("predictions_dev.*"))
    for path in predictions:
        assert path.read_text() == (tmp_path / "triton" / path.name).read_text(), path.name


def test_bad_data_is_a_clear_error(tiny_model, tmp_path):
    train = fx.write_sst2(tmp_path / "train.tsv", 20, seed=1)
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\ngood film\t1\nodd film\tneutral\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'neutral' is not one of the training labels"):
        run("classify", tiny_model, tmp_path / "o", train, dev)
    with pytest.raises(DataError, match="regression label '1x'"):
        sts = tmp_path / "sts.tsv"
        sts.write_text("sentence1\tsentence2\tscore\na\tb\t1x\n")
        run("classify", tiny_model, tmp_path / "o", sts, sts, regression=True)
    v1 = fx.write_squad(tmp_path / "v1.json", 4, seed=1, version=1)
    data = json.loads(v1.read_text())
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    with pytest.raises(DataError, match="v1.1 question without an answer"):
        run("qa", tiny_model, tmp_path / "o", v1, empty)


def test_tags_unseen_in_training_are_counted_not_fatal(tiny_model, tmp_path):
    train = tmp_path / "train.conll"
    train.write_text("met O\nalice B-PER\nin O\nparis B-LOC\n\n" * 8)
    dev = tmp_path / "dev.conll"
    dev.write_text("met O\nalice B-PER\nbob I-PER\nin O\nrome B-CITY\n\n")
    out = tmp_path / "out"
    summary = run("tag", tiny_model, out, train, dev, epochs=1, max_steps=1)
    config = json.loads((out / "best" / "config.json").read_text())
    # I-PER and I-LOC were never seen but belong to seen types: predictable; B-CITY is not
    assert sorted(config["id2label"].values()) == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    (kind,) = summary["warnings"]
    assert "B-CITY" in kind and summary["warnings"][kind]["count"] == 1
    assert summary["dev"]["per_type"]["CITY"]["f1"] == 0.0
    with pytest.raises(DataError, match=r"train.conll:1: tags \['B-LOC'\] are not among the labels"):
        run("tag", tiny_model, tmp_path / "other", train, dev, labels=["O", "B-PER", "I-PER"])


def test_cli_finetune_and_its_errors(tiny_model, tmp_path, capsys):
    train = fx.write_sst2(tmp_path / "train.tsv", 32, seed=1)
    out = tmp_path / "out"
    code = cli.main(["finetune", "classify", "--model", str(tiny_model), "--train", str(train), "--dev", str(train),
                     "--out", str(out), "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--seed", "3"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "classify" and "accuracy" in printed["dev"]
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["batch_size"] == 8 and config["seed"] == 3 and config["lr"] == FinetuneConfig.lr
    with pytest.raises(SystemExit, match="bert-fast finetune: .*no column 'nope'"):
        cli.main(["finetune", "classify", "--model", str(tiny_model), "--train", str(train), "--dev", str(train),
                  "--out", str(tmp_path / "other"), "--text-columns", "nope"])
    assert not (tmp_path / "other").exists()  # a run that failed before writing anything leaves no folder


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="task 'ner'"):
        FinetuneConfig("ner", tmp_path, tmp_path, tmp_path)
    with pytest.raises(ValueError, match="--metric 'mse'"):
        from bert_fast.finetune.tasks import ClassifyTask

        ClassifyTask(FinetuneConfig("classify", tmp_path, tmp_path, tmp_path, regression=True, metric="mse"),
                     None, None)
    with pytest.raises(ValueError, match="warmup"):
        FinetuneConfig("tag", tmp_path, tmp_path, tmp_path, warmup=10)
    assert torch.get_num_threads() == 1  # the module fixture is in force
