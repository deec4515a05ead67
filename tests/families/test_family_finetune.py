"""Fine-tuning and prediction (bert-fast finetune / predict) with the other families: their tokenizers' own
special tokens and pair layouts reach every task (RoBERTa's <s> A </s></s> B </s> in SQuAD windows), checkpoints
are written in the family's format, and predicting with them reproduces the run's numbers."""

import json

import pytest
import torch

import bert_fast
import tests.finetune.finetune_fixtures as fx
from bert_fast.finetune import FinetuneConfig, finetune, predict_file
from bert_fast.finetune.squad import make_windows, read_squad
from tests.families.tokenizer_fixtures import roberta_tokenizer, xlmr_tokenizer

FAST = {"lr": 1e-3, "batch_size": 16, "warmup": 0.0, "eval_batch_size": 64}


def write_family_model(folder, model_type: str, seed: int = 0):
    """A random 2-layer model of the family with a tokenizer of its kind trained on the fixture texts."""
    torch.manual_seed(seed)
    if model_type in ("roberta", "xlm-roberta"):
        make = roberta_tokenizer if model_type == "roberta" else xlmr_tokenizer
        make(folder, vocab_size=300, texts=fx.fixture_texts())
        tokenizer = bert_fast.Tokenizer.from_pretrained(folder)
        extra = {"pad_token_id": tokenizer.pad_token_id, "type_vocab_size": 1, "layer_norm_eps": 1e-5}
    else:
        tokenizer = bert_fast.BertTokenizer.train(texts=fx.fixture_texts(), vocab_size=200, min_frequency=1)
        tokenizer.save_pretrained(folder)
        extra = {"embedding_size": 64} if model_type == "electra" else {}
    config = bert_fast.BertConfig.preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=130,
                                         model_type=model_type, **extra)
    bert_fast.BertModel(config, impl="reference").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def roberta_model(tmp_path_factory):
    return write_family_model(tmp_path_factory.mktemp("roberta"), "roberta")


def test_squad_windows_use_the_models_pair_layout(roberta_model, tmp_path):
    tokenizer = bert_fast.Tokenizer.from_pretrained(roberta_model)
    examples, _ = read_squad(fx.write_squad(tmp_path / "train.json", 4, seed=1, version=1, filler_words=10))
    windows = make_windows(examples, tokenizer, max_seq_length=24, doc_stride=6, training=True)
    s, pad, sep = tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id
    assert (s, sep) == (0, 2) and pad == 1
    for w in windows:
        assert w.input_ids[0] == s and w.input_ids[-1] == sep and len(w.input_ids) <= 24
        head = w.offsets.index(next(o for o in w.offsets if o is not None))
        assert w.input_ids[head - 2:head] == [sep, sep]  # <s> question </s></s> context </s>
        assert set(w.token_type_ids) == {0}
        if w.start_position:
            example = examples[w.example]
            text = example.context[w.offsets[w.start_position][0]:w.offsets[w.end_position][1]]
            assert text == example.answers[0][0]


@pytest.mark.parametrize("task", ["classify", "tag", "qa", "choice"])
def test_every_task_fine_tunes_and_predicts_with_roberta(roberta_model, tmp_path, task):
    settings = {"epochs": 1, "max_steps": 3}
    if task == "classify":  # sentence pairs
        train, dev = fx.write_mrpc(tmp_path / "train.tsv", 40, seed=1), fx.write_mrpc(tmp_path / "dev.tsv", 12, 2)
        settings["text_columns"] = ["#1 String", "#2 String"]
        settings["label_column"] = "Quality"
        head = "RobertaForSequenceClassification"
    elif task == "tag":
        train, dev = fx.write_conll(tmp_path / "train.conll", 30, 1), fx.write_conll(tmp_path / "dev.conll", 9, 2)
        settings["max_length"], head = 32, "RobertaForTokenClassification"
    elif task == "qa":
        train = fx.write_squad(tmp_path / "train.json", 20, seed=1, version=2, filler_words=10)
        dev = fx.write_squad(tmp_path / "dev.json", 6, seed=2, version=2, filler_words=10)
        settings.update(max_length=32, doc_stride=8)
        head = "RobertaForQuestionAnswering"
    else:
        train, dev = fx.write_swag(tmp_path / "train.csv", 32, seed=1), fx.write_swag(tmp_path / "dev.csv", 8, seed=2)
        head = "RobertaForMultipleChoice"
    run = finetune(FinetuneConfig(task, roberta_model, train, dev, out=tmp_path / "run", **{**FAST, **settings}))
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["architectures"] == [head]
    reading = {k: v for k, v in settings.items() if k in ("max_length", "doc_stride", "text_columns", "label_column")}
    predicted = predict_file(FinetuneConfig(task, tmp_path / "run" / "best", dev, dev, out=tmp_path / "predicted",
                                            **reading), dev)
    assert predicted["metrics"] == run["dev"]


@pytest.mark.parametrize("model_type", ["electra", "distilbert"])
def test_fine_tunes_and_predicts_with_electra_and_distilbert(model_type, tmp_path):
    model = write_family_model(tmp_path / "model", model_type)
    train, dev = fx.write_mrpc(tmp_path / "train.tsv", 32, seed=1), fx.write_mrpc(tmp_path / "dev.tsv", 12, 2)
    columns = {"text_columns": ["#1 String", "#2 String"], "label_column": "Quality"}
    run = finetune(FinetuneConfig("classify", model, train, dev, out=tmp_path / "run", max_steps=2, **FAST,
                                  **columns))
    saved = bert_fast.BertForSequenceClassification.from_pretrained(tmp_path / "run" / "best")
    assert saved.config.model_type == model_type and saved.fresh_keys == []
    predicted = predict_file(FinetuneConfig("classify", tmp_path / "run" / "best", dev, dev,
                                            out=tmp_path / "predicted", **columns), dev)
    assert predicted["metrics"] == run["dev"]


def test_classification_learns_with_roberta(roberta_model, tmp_path):
    """Byte-level BPE pieces, positions after the pad id and RoBERTa's classification head on <s>: the fixture is
    learnt."""
    model = roberta_model
    train = fx.write_sst2(tmp_path / "train.tsv", 128, seed=1)
    dev = fx.write_sst2(tmp_path / "dev.tsv", 48, seed=2)
    summary = finetune(FinetuneConfig("classify", model, train, dev, out=tmp_path / "run", **{**FAST, "epochs": 8}))
    assert summary["dev"]["accuracy"] >= 0.85, summary["epochs"]
