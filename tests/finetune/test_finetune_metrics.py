"""Metric functions against cases computed by hand from the official definitions."""

import math

import pytest

from bert_fast.finetune import metrics as M


def test_classification_metrics_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]
    # tp=3 fn=1 fp=1 tn=3
    out = M.classification_metrics(preds, labels, num_labels=2)
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    mcc = (3 * 3 - 1 * 1) / math.sqrt((3 + 1) * (3 + 1) * (3 + 1) * (3 + 1))
    assert out["mcc"] == pytest.approx(mcc)
    # class 0 has the same counts mirrored: macro F1 = F1
    assert out["f1_macro"] == pytest.approx(0.75)


def test_multiclass_has_no_binary_f1_and_mcc_is_zero_for_constant_predictions():
    out = M.classification_metrics([0, 0, 0, 0], [0, 1, 2, 1], num_labels=3)
    assert "f1" not in out
    assert out["accuracy"] == 0.25
    assert out["mcc"] == 0.0
    assert out["f1_macro"] == pytest.approx((2 * 0.25 / 1.25) / 3)  # class 0: P=1/4, R=1


def test_regression_metrics_by_hand():
    labels = [1.0, 2.0, 3.0, 4.0]
    out = M.regression_metrics([2.0, 4.0, 6.0, 8.0], labels)
    assert out["pearson"] == pytest.approx(1.0)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["mse"] == pytest.approx((1 + 4 + 9 + 16) / 4)
    squares = [1.0, 4.0, 9.0, 16.0]  # monotone: Spearman 1; Pearson by the formula
    mx, my = 2.5, 7.5
    cov = sum((x - mx) * (y - my) for x, y in zip(labels, squares))
    pearson = cov / math.sqrt(sum((x - mx) ** 2 for x in labels) * sum((y - my) ** 2 for y in squares))
    out = M.regression_metrics(squares, labels)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["pearson"] == pytest.approx(pearson)
    assert out["corr"] == pytest.approx((pearson + 1) / 2)
    # one swapped pair out of four: rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert M.regression_metrics([1.0, 3.0, 2.0, 4.0], labels)["spearman"] == pytest.approx(0.8)


def test_regression_metrics_constant_prediction_is_nan():
    assert math.isnan(M.regression_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["pearson"])


def test_entity_metrics_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "O"]]
    # gold entities: PER(0-1), LOC(3), ORG(1); predicted: PER(0-1), ORG(3), ORG(1): 2 of 3 right
    out = M.entity_metrics(gold, pred)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(6 / 7)
    assert out["per_type"]["LOC"] == {"f1": 0.0, "support": 1}
    assert out["per_type"]["PER"]["f1"] == 1.0


def test_entity_metrics_follow_conlleval_for_a_leading_inside_tag():
    # conlleval (seqeval's default): an I- tag after O opens an entity, so I-PER I-PER == B-PER I-PER
    out = M.entity_metrics([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])
    assert out["f1"] == 1.0
    # a partial span is wrong, not half right
    out = M.entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert out["f1"] == 0.0


def test_entity_metrics_reject_misaligned_sentences():
    with pytest.raises(ValueError, match="sentence 0"):
        M.entity_metrics([["O", "O"]], [["O"]])


def test_squad_normalisation_and_scores_by_hand():
    assert M.normalize_answer("The  Cat's hat!") == "cats hat"
    assert M.normalize_answer("an apple, a pear") == "apple pear"
    assert M.exact_match("the Eiffel Tower.", "Eiffel tower") == 1
    # "cat sat" vs "cat sat down": P = 2/2, R = 2/3
    assert M.token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert M.token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # counts clip: one common token
    assert M.token_f1("dog", "cat") == 0.0
    # v2.0 scores an empty prediction for an empty gold 1; v1.1 has no such case and scores it 0
    assert M.token_f1("", "", version=2) == 1.0
    assert M.token_f1("", "", version=1) == 0.0
    assert M.token_f1("the", "a", version=2) == 1.0  # both normalise to nothing


def test_squad_v1_takes_the_best_gold_answer():
    golds = {"a": ["Denver Broncos", "The Broncos"], "b": ["1990"]}
    preds = {"a": "Broncos", "b": "in 1990"}
    out = M.squad_v1_metrics(golds, preds)
    f1_a = max(2 * 1 * 0.5 / 1.5, 1.0)  # "broncos" vs "broncos": exact
    f1_b = 2 * 0.5 * 1 / 1.5
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (f1_a + f1_b) / 2)
    with pytest.raises(KeyError, match="b"):
        M.squad_v1_metrics(golds, {"a": "x"})


def test_squad_v2_splits_and_best_threshold_by_hand():
    golds = {"h1": ["Paris"], "h2": ["blue whale"], "n1": [], "n2": []}
    answers = {"h1": "Paris", "h2": "whale", "n1": "London", "n2": "Rome"}
    odds = {"h1": -3.0, "h2": -2.0, "n1": 2.0, "n2": -1.0}
    out = M.squad_v2_metrics(golds, answers, odds, threshold=0.0)
    # threshold 0: answers h1 (exact), h2 ("whale" vs "blue whale": exact 0, F1 2/3), n2 (wrong); n1 null (right)
    assert out["HasAns_exact"] == 50.0 and out["HasAns_total"] == 2
    assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == 50.0 and out["NoAns_f1"] == 50.0 and out["NoAns_total"] == 2
    assert out["exact"] == 50.0
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    # the sweep starts from "all null" (2 right) and answers in odds order h1 (+1), h2 (+0 exact, +2/3 F1), n2 (-1),
    # n1 (-1): best exact 3/4 at h1's odds, best F1 (3 + 2/3)/4 at h2's
    assert out["best_exact"] == pytest.approx(75.0)
    assert out["best_exact_thresh"] == -3.0
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert out["best_f1_thresh"] == -2.0
    at_best = M.squad_v2_metrics(golds, answers, odds, threshold=out["best_f1_thresh"])
    assert at_best["f1"] == pytest.approx(out["best_f1"])
