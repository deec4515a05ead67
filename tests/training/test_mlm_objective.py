"""Pretraining with masked LM alone (`--objective mlm`, as RoBERTa pretrains): B always continues A, no NSP head or
metrics, any family's masked LM (a RoBERTa here), the same exact resume, and a model transformers loads."""

import copy
import random

import pytest
import torch

from bert_fast.data.corpus import read_documents
from bert_fast.data.examples import create_examples_from_document, tokenize_documents
from bert_fast.training.metrics import read_metrics
from bert_fast.training.trainer import pretrain
from tests.training.test_trainer import _train_losses, _weights


def test_examples_without_random_next_are_stretches_of_one_document(corpus_file, tiny_config):
    from bert_fast.data.prepare import train_tokenizer

    docs, _ = read_documents([corpus_file])
    tokenizer, _ = train_tokenizer([corpus_file], 300)
    corpus = tokenize_documents(docs, tokenizer)
    rng = random.Random(0)
    examples = [ex for d in range(corpus.n_docs)
                for ex in create_examples_from_document(corpus, d, list(range(corpus.n_docs)), 48, 0.1, rng,
                                                        random_next=False)]
    assert examples and not any(ex.is_random_next for ex in examples)
    for ex in examples[:200]:
        assert ex.tokens_a and ex.tokens_b
        assert len(ex.tokens_a) + len(ex.tokens_b) <= 45


@pytest.fixture
def mlm_config(tiny_config):
    config = copy.deepcopy(tiny_config)
    config.train.objective = "mlm"
    config.model.model_type = "roberta"
    return config


def test_roberta_pretrains_with_mlm_alone_and_resumes_exactly(mlm_config, tmp_path):
    transformers = pytest.importorskip("transformers")
    straight = copy.deepcopy(mlm_config)
    straight.out = str(tmp_path / "straight")
    summary = pretrain(straight)
    assert summary["finished"] and summary["first_nsp_loss"] is None
    records = read_metrics(straight.out)
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert train and all("nsp_loss" not in r and r["loss"] == r["mlm_loss"] for r in train)
    assert evals and all("nsp_accuracy" not in r and 0 <= r["mlm_accuracy"] <= 1 for r in evals)

    interrupted = copy.deepcopy(mlm_config)
    interrupted.out = str(tmp_path / "interrupted")
    interrupted.train.stop_at = 4
    pretrain(interrupted)
    interrupted.train.stop_at = 0
    pretrain(interrupted, resume=True)
    assert _train_losses(interrupted.out) == _train_losses(straight.out)
    a, b = _weights(straight.out), _weights(interrupted.out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "lm_head.bias" in a and not any(k.startswith("cls.") for k in a)

    _, info = transformers.RobertaForMaskedLM.from_pretrained(f"{straight.out}/model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_nsp_needs_bert_and_a_changed_objective_cannot_resume(mlm_config, tiny_config):
    wrong = copy.deepcopy(mlm_config)
    wrong.train.objective = "mlm_nsp"
    with pytest.raises(ValueError, match="next sentence prediction is BERT's"):
        pretrain(wrong)
