"""Evaluation metrics with their official definitions.

Classification and regression metrics come from scikit-learn and scipy, entity-level F1 from seqeval (the
CoNLL-2000 conlleval semantics: an I- tag after O or another type opens an entity), SQuAD from the official
evaluation scripts v1.1 and v2.0 (answer normalisation, token F1, exact match, HasAns/NoAns splits and the best
no-answer threshold), written out here because no library ships them.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

# --- classification and regression -------------------------------------------------------------------------


def classification_metrics(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, Matthews correlation (CoLA), macro F1, and for two labels the F1 of label 1 (MRPC, QQP)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    out = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", labels=list(range(num_labels)),
                                   zero_division=0)),
    }
    if num_labels == 2:
        out["f1"] = float(f1_score(labels, predictions, average="binary", pos_label=1, zero_division=0))
    return out


def regression_metrics(predictions: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlations (STS-B) and their mean, plus the mean squared error."""
    from scipy.stats import pearsonr, spearmanr

    predictions, labels = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(labels) < 2 or np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        pearson = spearman = float("nan")  # undefined for constant inputs; scipy would warn and return nan
    else:
        pearson = float(pearsonr(predictions, labels)[0])
        spearman = float(spearmanr(predictions, labels)[0])
    return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2,
            "mse": float(np.mean((predictions - labels) ** 2)) if len(labels) else float("nan")}


# --- tagging -----------------------------------------------------------------------------------------------


def entity_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall and F1 (seqeval's default mode), token accuracy, and F1 per entity type."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
    true_tags, pred_tags = [list(t) for t in true_tags], [list(p) for p in pred_tags]
    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    per_type = {k: {"f1": float(v["f1-score"]), "support": int(v["support"])}
                for k, v in report.items() if not k.endswith(" avg")}
    return {
        "f1": float(f1_score(true_tags, pred_tags, zero_division=0)),
        "precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
        "recall": float(recall_score(true_tags, pred_tags, zero_division=0)),
        "accuracy": float(accuracy_score(true_tags, pred_tags)),
        "per_type": per_type,
    }


# --- SQuAD (official evaluate-v1.1.py / evaluate-v2.0.py) --------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the, and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version: int = 2) -> float:
    """Bag-of-tokens F1 of normalised answers. v2.0 scores two empty answers 1 (a correct "no answer")."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == 2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _raw_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str], version: int):
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        if qid not in predictions:
            raise KeyError(f"no prediction for question {qid}")
        if version == 2:
            answers = [a for a in answers if normalize_answer(a)] or [""]
        elif not answers:
            raise ValueError(f"question {qid} has no gold answer; SQuAD v1.1 questions all have one")
        pred = predictions[qid]
        exact[qid] = max(exact_match(pred, a) for a in answers)
        f1[qid] = max(token_f1(pred, a, version) for a in answers)
    return exact, f1


def _mean(scores: Mapping[str, float], qids) -> float:
    qids = list(qids)
    return 100.0 * sum(scores[q] for q in qids) / len(qids) if qids else 0.0


def squad_v1_metrics(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """evaluate-v1.1.py: exact_match and f1 (percent), max over each question's gold answers."""
    exact, f1 = _raw_scores(golds, predictions, version=1)
    return {"exact_match": _mean(exact, golds), "f1": _mean(f1, golds), "total": len(golds)}


def _find_best_thresh(preds, scores, na_probs, has_ans):
    """evaluate-v2.0.py's sweep: answer the questions with na_prob <= thresh, leave the rest empty."""
    num_no_ans = sum(1 for q in has_ans if not has_ans[q])
    cur = best = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_metrics(golds: Mapping[str, Sequence[str]], answers: Mapping[str, str], null_odds: Mapping[str, float],
                     threshold: float = 0.0) -> dict[str, float]:
    """evaluate-v2.0.py on span predictions with their no-answer odds.

    answers: each question's best non-null span text ("" when no span was possible); null_odds: the score of
    "no answer" minus that span's (s_null - s_best, the na_prob file). A question is answered "" when its odds
    exceed `threshold`. Besides exact/f1 with HasAns and NoAns splits at that threshold, returns the best
    threshold for each metric, swept over the odds on these answers (the official best_f1 / best_f1_thresh).
    """
    has_ans = {qid: any(normalize_answer(a) for a in golds[qid]) for qid in golds}
    final = {qid: ("" if null_odds[qid] > threshold else answers[qid]) for qid in golds}
    exact, f1 = _raw_scores(golds, final, version=2)
    out = {"exact": _mean(exact, golds), "f1": _mean(f1, golds), "total": len(golds)}
    for name, keep in (("HasAns", True), ("NoAns", False)):
        qids = [q for q in golds if has_ans[q] == keep]
        if qids:
            out.update({f"{name}_exact": _mean(exact, qids), f"{name}_f1": _mean(f1, qids),
                        f"{name}_total": len(qids)})
    raw_exact, raw_f1 = _raw_scores(golds, {q: answers[q] for q in golds}, version=2)
    out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(answers, raw_exact, null_odds, has_ans)
    out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(answers, raw_f1, null_odds, has_ans)
    return out
