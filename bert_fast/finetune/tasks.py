"""The four task shapes as the runner sees them: read a split, encode it, batch it, turn outputs into predictions
and metrics, write the predictions.

A Task holds only what a run learns from its training data (the label set, SQuAD's tuned null threshold); the
runner's loop is the same for all four. Encoded examples ("features") are plain dicts of lists, one per model
input row: a sentence, a CoNLL chunk, a SQuAD window, or a SWAG example with its choices.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..heads import (
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from . import metrics as M
from .issues import Issues
from .readers import TaggedSentence, read_conll, read_swag, read_table, write_conll
from .squad import best_spans, make_windows, read_squad


@dataclass
class Split:
    name: str  # train, dev, test
    path: Path
    examples: list
    labelled: bool
    features: list[dict] = field(default_factory=list)


def pad(rows: list[list], value, dtype=torch.long) -> torch.Tensor:
    """Right-pad lists to the longest: (len(rows), longest)."""
    longest = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [value] * (longest - len(r)) for r in rows], dtype=dtype)


def encoder_inputs(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    ids = pad([f["input_ids"] for f in features], pad_id)
    return {"input_ids": ids, "token_type_ids": pad([f["token_type_ids"] for f in features], 0),
            "attention_mask": pad([[1] * len(f["input_ids"]) for f in features], 0)}


def _count_truncated(issues: Issues, encodings, examples, max_length: int) -> None:
    for enc, example in zip(encodings, examples):
        if enc.overflowing:
            issues.add(f"inputs longer than {max_length} tokens, truncated", example.where)


def _label_order(train_labels: list[str], given: list[str] | None, model_labels: dict[int, str] | None) -> list[str]:
    """The label set: as given, else the checkpoint's named labels (a fine-tuned model), else the training
    labels sorted (numerically when they are all integers, so GLUE's 0/1 keep their ids)."""
    seen = sorted(set(train_labels))
    if given:
        labels = list(given)
    elif model_labels and not all(v == f"LABEL_{k}" for k, v in model_labels.items()) \
            and set(seen) <= set(model_labels.values()):
        labels = [model_labels[i] for i in sorted(model_labels)]
    elif all(x.lstrip("-").isdigit() for x in seen):
        labels = sorted(seen, key=int)
    else:
        labels = seen
    if len(set(labels)) != len(labels):
        raise DataError(f"the label set {labels} repeats a label")
    return labels


def _checkpoint_labels(model_config, kind: str) -> list[str]:
    """A fine-tuned checkpoint's labels in id order, from its config.json's id2label."""
    names = model_config.id2label if model_config is not None else None
    if not names or all(v == f"LABEL_{k}" for k, v in names.items()):
        raise DataError(f"the checkpoint's config.json names no labels (id2label): predicting needs a model "
                        f"fine-tuned as {kind}")
    return [names[i] for i in sorted(names)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


class Task:
    name: str
    model_class: type
    primary_metric: str
    default_max_length = 128

    def __init__(self, cfg, tokenizer, issues: Issues, model_config=None):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.issues = issues
        self.model_config = model_config  # the checkpoint's BertConfig (for its label names)
        self.max_length = cfg.max_length or self.default_max_length

    def model_overrides(self) -> dict:
        return {}

    def use_checkpoint_labels(self) -> None:
        """Take the label set (and settings tuned in fine-tuning) from the checkpoint's config: predicting with a
        fine-tuned model, no training file to read them from."""

    def checkpoint_settings(self) -> dict:
        """Settings tuned while fine-tuning that predicting needs, saved in the best checkpoint's config.json."""
        return {}

    def load(self, path: Path, name: str) -> Split:
        raise NotImplementedError

    def encode(self, split: Split, training: bool) -> list[dict]:
        raise NotImplementedError

    def collate(self, features: list[dict], training: bool) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def outputs(self, output, batch: dict[str, torch.Tensor], features: list[dict]) -> list:
        """Per-feature results (numpy, on the host) from one batch's model output."""
        raise NotImplementedError

    def score(self, split: Split, results: list) -> tuple[dict | None, object]:
        """(metrics or None for an unlabelled split, predictions) from every feature's result."""
        raise NotImplementedError

    def write_predictions(self, split: Split, predictions, folder: Path) -> list[Path]:
        raise NotImplementedError


# --- sentence (pair) classification and regression ---------------------------------------------------------


class ClassifyTask(Task):
    name = "classify"
    model_class = BertForSequenceClassification

    def __init__(self, cfg, tokenizer, issues, model_config=None):
        super().__init__(cfg, tokenizer, issues, model_config)
        self.regression = cfg.regression
        self.labels: list[str] | None = None
        self.primary_metric = cfg.metric or ("pearson" if self.regression else "accuracy")
        allowed = ("pearson", "spearman", "corr") if self.regression else ("accuracy", "f1", "f1_macro", "mcc")
        if self.primary_metric not in allowed:  # each of these is better when higher
            raise ValueError(f"--metric {self.primary_metric!r} is not one of {allowed}")

    def model_overrides(self) -> dict:
        if self.regression:
            return {"num_labels": 1, "id2label": {0: "score"}, "problem_type": "regression"}
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                "problem_type": "single_label_classification"}

    def use_checkpoint_labels(self):
        if not self.regression:  # (a regression checkpoint sets cfg.regression: predict_file)
            self.labels = _checkpoint_labels(self.model_config, "a classifier")

    def load(self, path, name):
        examples = read_table(path, self.cfg.text_columns, self.cfg.label_column, header=not self.cfg.no_header,
                              require_label=name != "test")
        widths = {len(e.texts) for e in examples}
        if max(widths) > 2:
            raise DataError(f"{path}: {max(widths)} text columns; BERT takes one text or a pair")
        labelled = all(e.label is not None for e in examples)
        if name == "train" and not self.regression:
            model_labels = self.model_config.id2label if self.model_config is not None else None
            self.labels = _label_order([e.label for e in examples], self.cfg.labels, model_labels)
            if len(self.labels) < 2:
                raise DataError(f"{path}: a classifier needs at least two labels, found {self.labels}")
            if self.primary_metric == "f1" and len(self.labels) != 2:
                raise ValueError(f"--metric f1 is binary; with {len(self.labels)} labels use f1_macro")
        if labelled:
            for e in examples:
                self._label_value(e.label, e.where)  # every error before any training
        return Split(name, Path(path), examples, labelled)

    def _label_value(self, label: str, where: str):
        if self.regression:
            try:
                return float(label)
            except ValueError:
                raise DataError(f"{where}: regression label {label!r} is not a number") from None
        if label not in self.labels:
            raise DataError(f"{where}: label {label!r} is not one of the training labels {self.labels}")
        return self.labels.index(label)

    def encode(self, split, training):
        texts = [e.texts[0] for e in split.examples]
        pairs = [e.texts[1] for e in split.examples] if len(split.examples[0].texts) == 2 else None
        encodings = self.tokenizer.encode_batch(texts, pairs, max_length=self.max_length, truncation=True)
        _count_truncated(self.issues, encodings, split.examples, self.max_length)
        features = []
        for i, (enc, example) in enumerate(zip(encodings, split.examples)):
            feature = {"index": i, "input_ids": enc.ids, "token_type_ids": enc.type_ids}
            if split.labelled:
                feature["label"] = self._label_value(example.label, example.where)
            features.append(feature)
        return features

    def collate(self, features, training):
        batch = encoder_inputs(features, self.tokenizer.pad_token_id)
        if training:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=dtype)
        return batch

    def outputs(self, output, batch, features):
        return list(output.logits.float().cpu().numpy())

    def score(self, split, results):
        """Predictions are the scores (regression) or the (examples, labels) logits."""
        logits = np.stack(results)
        predictions = logits[:, 0] if self.regression else logits
        if not split.labelled:
            return None, predictions
        gold = [f["label"] for f in split.features]
        if self.regression:
            return M.regression_metrics(predictions, gold), predictions
        metrics = M.classification_metrics(logits.argmax(-1), gold, len(self.labels))
        if "f1" in metrics:  # binary F1 counts one label as the positive class: say which
            metrics["f1_positive_label"] = self.labels[1]
        return metrics, predictions

    def write_predictions(self, split, predictions, folder):
        """GLUE's submission columns (index, prediction) first, then each label's probability and the text."""
        path = folder / f"predictions_{split.name}.tsv"
        pair = len(split.examples[0].texts) == 2
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            scores = [] if self.regression else [f"p({label})" for label in self.labels]
            writer.writerow(["index", "prediction", *scores, "text", *(["text_b"] if pair else [])])
            if self.regression:
                rows = [[f"{float(p):.6g}"] for p in predictions]
            else:
                probabilities = _softmax(predictions)
                rows = [[self.labels[int(p.argmax())], *(f"{x:.4f}" for x in p)] for p in probabilities]
            for i, (row, example) in enumerate(zip(rows, split.examples)):
                writer.writerow([i, *row, *example.texts])
        return [path]


# --- token classification (tagging) ------------------------------------------------------------------------


class TagTask(Task):
    """One label per word on its first word piece (-100 on the others). A sentence longer than the window is
    cut at word boundaries into several inputs, never dropped; predictions are joined back per sentence."""

    name = "tag"
    model_class = BertForTokenClassification
    primary_metric = "f1"

    def __init__(self, cfg, tokenizer, issues, model_config=None):
        super().__init__(cfg, tokenizer, issues, model_config)
        self.labels: list[str] | None = None
        self._pieces: dict[str, list[int]] = {}

    def model_overrides(self):
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels))}

    def use_checkpoint_labels(self):
        self.labels = _checkpoint_labels(self.model_config, "a tagger")

    def load(self, path, name):
        sentences = read_conll(path)
        labelled = all(s.tags is not None for s in sentences)
        if name == "train":
            if not labelled:
                raise DataError(f"{path}: the training file has no tags")
            model_labels = self.model_config.id2label if self.model_config is not None else None
            tags = [t for s in sentences for t in s.tags]
            # BIO: an entity type seen in training can be predicted with both its tags, even if one is rare
            types = {t[2:] for t in tags if t[:2] in ("B-", "I-")}
            tags += [f"{prefix}{t}" for t in types for prefix in ("B-", "I-")]
            self.labels = _label_order(tags, self.cfg.labels, model_labels)
            if "O" in self.labels and not self.cfg.labels:  # O first: the usual id 0
                self.labels.remove("O")
                self.labels.insert(0, "O")
        elif name != "test" and not labelled:
            raise DataError(f"{path}: the {name} file has no tags")
        if labelled:
            for s in sentences:
                unknown = sorted(set(s.tags) - set(self.labels))
                if unknown and name == "train":  # only with --labels that leave some out
                    raise DataError(f"{s.where}: tags {unknown} are not among the labels {self.labels}")
                if unknown:  # gold tags still score; the model can never predict them
                    self.issues.add(f"{name} sentences with tags never seen in training {unknown}", s.where)
        return Split(name, Path(path), sentences, labelled)

    def _word_pieces(self, sentences: list[TaggedSentence]) -> None:
        new = sorted({w for s in sentences for w in s.words} - set(self._pieces))
        self._pieces.update(zip(new, self.tokenizer.word_pieces(new)))

    def encode(self, split, training):
        self._word_pieces(split.examples)
        template = self.tokenizer.single_template  # [CLS] words [SEP], or the model's own specials
        budget = self.max_length - template.specials
        label_ids = {label: i for i, label in enumerate(self.labels)}
        features = []
        for index, sentence in enumerate(split.examples):
            pieces = []
            for w, word in enumerate(sentence.words):
                ids = self._pieces[word]
                if not ids:  # only characters the normaliser drops: the word still needs a position
                    self.issues.add("words with no word piece (encoded as [UNK])", f"{sentence.where} word {w}")
                    ids = [self.tokenizer.unk_token_id]
                if len(ids) > budget:
                    self.issues.add(f"words longer than {budget} word pieces, cut", f"{sentence.where} word {w}")
                    ids = ids[:budget]
                pieces.append(ids)
            chunks, start, used = [], 0, 0
            for w, ids in enumerate(pieces):
                if used + len(ids) > budget:
                    chunks.append((start, w))
                    start, used = w, 0
                used += len(ids)
            chunks.append((start, len(pieces)))
            if len(chunks) > 1:
                self.issues.add(f"sentences longer than {self.max_length} tokens, split into windows",
                                sentence.where)
            for first, last in chunks:
                starts, labels, position = [], [-100] * len(template.prefix), len(template.prefix)
                for w in range(first, last):
                    starts.append(position)
                    position += len(pieces[w])
                    tag = label_ids[sentence.tags[w]] if training else -100
                    labels += [tag] + [-100] * (len(pieces[w]) - 1)
                labels += [-100] * len(template.suffix)
                input_ids, token_type_ids = template.build([p for w in range(first, last) for p in pieces[w]])
                features.append({"sentence": index, "first_word": first, "input_ids": input_ids,
                                 "token_type_ids": token_type_ids, "word_starts": starts, "labels": labels})
        return features

    def collate(self, features, training):
        batch = encoder_inputs(features, self.tokenizer.pad_token_id)
        if training:
            batch["labels"] = pad([f["labels"] for f in features], -100)
        return batch

    def outputs(self, output, batch, features):
        ids = output.logits.argmax(-1).cpu().numpy()  # (batch, seq)
        return [ids[b, f["word_starts"]] for b, f in enumerate(features)]

    def score(self, split, results):
        predicted = [[None] * len(s.words) for s in split.examples]
        for feature, ids in zip(split.features, results):
            words = predicted[feature["sentence"]]
            for k, label_id in enumerate(ids):
                words[feature["first_word"] + k] = self.labels[int(label_id)]
        if not split.labelled:
            return None, predicted
        return M.entity_metrics([s.tags for s in split.examples], predicted), predicted

    def write_predictions(self, split, predictions, folder):
        path = folder / f"predictions_{split.name}.conll"
        write_conll(path, split.examples, predictions)
        return [path]


# --- SQuAD question answering ------------------------------------------------------------------------------


NULL_THRESHOLD_KEY = "squad_v2_null_threshold"  # in a fine-tuned QA model's config.json


class QATask(Task):
    name = "qa"
    model_class = BertForQuestionAnswering
    primary_metric = "f1"
    default_max_length = 384

    def __init__(self, cfg, tokenizer, issues, model_config=None):
        super().__init__(cfg, tokenizer, issues, model_config)
        self.version = cfg.squad_version
        # A fixed threshold if given; else tuned on the dev set (v2) and then used for the test set.
        self.null_threshold = cfg.null_threshold if cfg.null_threshold is not None else 0.0
        self.tune_threshold = cfg.null_threshold is None

    def use_checkpoint_labels(self):
        tuned = (self.model_config.extra if self.model_config is not None else {}).get(NULL_THRESHOLD_KEY)
        if self.tune_threshold and tuned is not None:
            self.null_threshold = float(tuned)
        self.tune_threshold = False  # no dev set to tune it on

    def checkpoint_settings(self):
        return {NULL_THRESHOLD_KEY: self.null_threshold} if self.version == 2 else {}

    def load(self, path, name):
        examples, version = read_squad(path)
        if self.version is None:
            self.version = version
        labelled = name != "test" or any(e.answers or e.is_impossible for e in examples)
        if labelled and self.version == 1:
            missing = [e.where for e in examples if not e.answers]
            if missing:
                raise DataError(f"{missing[0]}: a SQuAD v1.1 question without an answer ({len(missing)} in all); "
                                "v2.0 files mark unanswerable questions with is_impossible")
        return Split(name, Path(path), examples, labelled)

    def encode(self, split, training):
        windows = make_windows(split.examples, self.tokenizer, self.max_length, self.cfg.doc_stride,
                               self.cfg.max_query_length, training=training, issues=self.issues)
        return [{"window": w, "input_ids": w.input_ids, "token_type_ids": w.token_type_ids} for w in windows]

    def collate(self, features, training):
        batch = encoder_inputs(features, self.tokenizer.pad_token_id)
        if training:
            batch["start_positions"] = torch.tensor([f["window"].start_position for f in features])
            batch["end_positions"] = torch.tensor([f["window"].end_position for f in features])
        return batch

    def outputs(self, output, batch, features):
        start = output.start_logits.float().cpu().numpy()
        end = output.end_logits.float().cpu().numpy()
        return [(start[b, :len(f["input_ids"])], end[b, :len(f["input_ids"])]) for b, f in enumerate(features)]

    def score(self, split, results):
        windows = [f["window"] for f in split.features]
        answers, null_odds, nbest = best_spans(split.examples, windows, [r[0] for r in results],
                                               [r[1] for r in results], self.cfg.n_best, self.cfg.max_answer_length)
        metrics = None
        if split.labelled:
            golds = {e.qid: [a for a, _ in e.answers] for e in split.examples}
            if self.version == 1:
                metrics = M.squad_v1_metrics(golds, answers)
            else:
                if self.tune_threshold and split.name == "dev":
                    tuned = M.squad_v2_metrics(golds, answers, null_odds, 0.0)
                    self.null_threshold = tuned["best_f1_thresh"]
                metrics = M.squad_v2_metrics(golds, answers, null_odds, self.null_threshold)
                metrics["null_threshold"] = self.null_threshold
        final = answers
        if self.version == 2:
            final = {q: ("" if null_odds[q] > self.null_threshold else a) for q, a in answers.items()}
        return metrics, {"answers": final, "null_odds": null_odds, "nbest": nbest}

    def write_predictions(self, split, predictions, folder):
        paths = [folder / f"predictions_{split.name}.json", folder / f"nbest_predictions_{split.name}.json"]
        paths[0].write_text(json.dumps(predictions["answers"], indent=2, ensure_ascii=False), encoding="utf-8")
        paths[1].write_text(json.dumps(predictions["nbest"], indent=2, ensure_ascii=False), encoding="utf-8")
        if self.version == 2:  # the official script's --na-prob-file
            paths.append(folder / f"null_odds_{split.name}.json")
            paths[2].write_text(json.dumps(predictions["null_odds"], indent=2), encoding="utf-8")
        return paths


# --- SWAG multiple choice ----------------------------------------------------------------------------------


class ChoiceTask(Task):
    name = "choice"
    model_class = BertForMultipleChoice
    primary_metric = "accuracy"

    def load(self, path, name):
        examples = read_swag(path, require_label=name != "test")
        counts = {len(e.endings) for e in examples}
        if len(counts) > 1:
            raise DataError(f"{path}: examples have different numbers of choices {sorted(counts)}")
        return Split(name, Path(path), examples, all(e.label is not None for e in examples))

    def encode(self, split, training):
        n = len(split.examples[0].endings)
        contexts = [e.context for e in split.examples for _ in range(n)]
        endings = [ending for e in split.examples for ending in e.endings]
        encodings = self.tokenizer.encode_batch(contexts, endings, max_length=self.max_length, truncation=True)
        features = []
        for i, example in enumerate(split.examples):
            choices = encodings[i * n:(i + 1) * n]
            if any(c.overflowing for c in choices):
                self.issues.add(f"choices longer than {self.max_length} tokens, truncated", example.where)
            features.append({"index": i, "input_ids": [c.ids for c in choices],
                             "token_type_ids": [c.type_ids for c in choices], "label": example.label})
        return features

    def collate(self, features, training):
        n = len(features[0]["input_ids"])
        rows = [{"input_ids": ids, "token_type_ids": types} for f in features
                for ids, types in zip(f["input_ids"], f["token_type_ids"])]
        batch = {k: v.view(len(features), n, -1) for k, v in encoder_inputs(rows, self.tokenizer.pad_token_id).items()}
        if training:
            batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    def outputs(self, output, batch, features):
        return list(output.logits.float().cpu().numpy())

    def score(self, split, results):
        """Predictions are the (examples, choices) logits."""
        logits = np.stack(results)
        if not split.labelled:
            return None, logits
        from sklearn.metrics import accuracy_score

        gold = [e.label for e in split.examples]
        return {"accuracy": float(accuracy_score(gold, logits.argmax(-1)))}, logits

    def write_predictions(self, split, predictions, folder):
        """The chosen ending's index, each ending's probability, the context and the chosen ending."""
        path = folder / f"predictions_{split.name}.tsv"
        probabilities = _softmax(predictions)
        n = probabilities.shape[1]
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["index", "prediction", *(f"p({j})" for j in range(n)), "context", "ending"])
            for i, (p, example) in enumerate(zip(probabilities, split.examples)):
                choice = int(p.argmax())
                writer.writerow([i, choice, *(f"{x:.4f}" for x in p), example.context, example.endings[choice]])
        return [path]


TASKS = {t.name: t for t in (ClassifyTask, TagTask, QATask, ChoiceTask)}


def sequence_length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(len(r) for r in ids) if ids and isinstance(ids[0], list) else len(ids)
