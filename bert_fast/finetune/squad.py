"""SQuAD v1.1 / v2.0: reading, sliding windows over long contexts, and the span search over the windows.

A context longer than the window is cut into windows of max_seq_length tokens, each [CLS] question [SEP] span
[SEP] (the tokenizer's own pair layout: RoBERTa's is <s> question </s></s> span </s>), the span moving by
doc_stride tokens (Devlin et al.'s run_squad.py). A training window whose span does not hold the whole answer
(and every window of an unanswerable v2 question) is labelled with the [CLS] position.

At prediction, each window proposes its n best starts and ends; a span is valid when it lies in the context,
ends after it starts, is at most max_answer_length tokens long and starts at a token this window sees with the
most context (a token in several windows is judged by the one where it sits most centrally). Its score is
S·T_i + E·T_j = start_logit[i] + end_logit[j]. "No answer" scores s_null = start_logit[CLS] + end_logit[CLS],
the lowest over the windows; v2 answers "" when s_null - s_best exceeds a threshold tuned on the dev set.
Answer texts are cut from the original context by character offsets, so they keep its case and spacing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .issues import Issues


@dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character offset in context); empty for unanswerable questions
    is_impossible: bool
    where: str


def read_squad(path: str | Path) -> tuple[list[SquadExample], int]:
    """The questions of a SQuAD JSON file and its version: 2 when any question carries `is_impossible`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file (expected an object with a 'data' list of articles)")
    examples, seen, version = [], set(), 1
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path.name}: article {a} paragraph {p}"
            if "context" not in paragraph or "qas" not in paragraph:
                raise DataError(f"{where}: needs 'context' and 'qas'")
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                missing = [k for k in ("id", "question") if k not in qa]
                if missing:
                    raise DataError(f"{where}: a question lacks {missing}")
                qid = str(qa["id"])
                if qid in seen:
                    raise DataError(f"{where}: question id {qid} appears twice")
                seen.add(qid)
                if "is_impossible" in qa:
                    version = 2
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                for answer in [] if impossible else qa.get("answers", []):
                    if "text" not in answer or "answer_start" not in answer:
                        raise DataError(f"{where}: question {qid} has an answer without 'text' and 'answer_start'")
                    answers.append((str(answer["text"]), int(answer["answer_start"])))
                examples.append(SquadExample(qid, str(qa["question"]), context, answers, impossible,
                                             f"{where} question {qid}"))
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples, version


@dataclass
class Window:
    example: int  # index of its question
    input_ids: list[int]  # [CLS] question [SEP] context span [SEP], in the tokenizer's pair layout
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # character span in the context of each context token, None elsewhere
    max_context: list[bool]  # whether this window sees the token with the most context around it
    start_position: int = 0  # training labels; 0 ([CLS]) for "not in this window" / unanswerable
    end_position: int = 0


def _spans(doc_len: int, max_doc: int, stride: int) -> list[tuple[int, int]]:
    spans, start = [], 0
    while True:
        length = min(doc_len - start, max_doc)
        spans.append((start, length))
        if start + length >= doc_len:
            return spans
        start += min(length, stride)


def _max_context(spans, span_index: int, position: int) -> bool:
    best, best_index = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if not start <= position <= end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best is None or score > best:
            best, best_index = score, i
    return best_index == span_index


def answer_token_span(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping the characters [start_char, end_char), or None."""
    first = next((i for i, (s, e) in enumerate(offsets) if e > start_char), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end_char), None)
    if first is None or last is None or last < first:
        return None
    return first, last


def make_windows(examples: list[SquadExample], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                 max_query_length: int = 64, training: bool = False, issues: Issues | None = None) -> list[Window]:
    """Windows of every question (training: labelled; questions whose answer cannot be located are dropped)."""
    issues = issues if issues is not None else Issues()
    if doc_stride <= 0 or max_query_length <= 0:
        raise ValueError("doc_stride and max_query_length must be positive")
    contexts = sorted({e.context for e in examples})
    encoded = dict(zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False, truncation=False)))
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False, truncation=False)
    template = tokenizer.pair_template
    windows = []
    for index, (example, question) in enumerate(zip(examples, questions)):
        query = question.ids
        if len(query) > max_query_length:
            issues.add(f"questions longer than {max_query_length} tokens, truncated", example.where)
            query = query[:max_query_length]
        context = encoded[example.context]
        ctx_ids, ctx_offsets = context.ids, context.offsets
        max_doc = max_seq_length - len(query) - template.specials
        if max_doc <= 0:
            raise DataError(f"{example.where}: max_seq_length {max_seq_length} leaves no room for the context "
                            f"after a {len(query)}-token question")

        answer = None  # (first token, last token) in the context
        if training and not example.is_impossible:
            if not example.answers:
                raise DataError(f"{example.where}: an answerable training question without an answer")
            text, start = example.answers[0]
            if example.context[start:start + len(text)] != text:
                issues.add("training answers whose text does not match the context at answer_start (skipped)",
                           f"{example.where}: {text!r} vs {example.context[start:start + len(text)]!r}")
                continue
            answer = answer_token_span(ctx_offsets, start, start + len(text))
            if answer is None:
                issues.add("training answers that cover no context token (skipped)", example.where)
                continue
            if answer[1] - answer[0] + 1 > max_doc:
                issues.add("training answers longer than a window (labelled [CLS] in every window)", example.where)

        spans = _spans(len(ctx_ids), max_doc, doc_stride)
        for span_index, (span_start, span_len) in enumerate(spans):
            ids, types = template.build(query, ctx_ids[span_start:span_start + span_len])
            head = len(template.prefix) + len(query) + len(template.middle)  # where the context span starts
            tail = [None] * len(template.suffix)
            offsets = [None] * head + list(ctx_offsets[span_start:span_start + span_len]) + tail
            max_context = [False] * head + [
                _max_context(spans, span_index, span_start + k) for k in range(span_len)] + [False] * len(tail)
            window = Window(index, ids, types, offsets, max_context)
            if answer is not None and span_start <= answer[0] and answer[1] < span_start + span_len:
                window.start_position = head + answer[0] - span_start
                window.end_position = head + answer[1] - span_start
            windows.append(window)
    return windows


def best_spans(examples: list[SquadExample], windows: list[Window], start_logits: list[np.ndarray],
               end_logits: list[np.ndarray], n_best: int = 20, max_answer_length: int = 30):
    """The span search over each question's windows.

    Returns (answers, null_odds, nbest): each question's best non-null text ("" when no span is valid), the
    no-answer odds s_null - s_best (inf when no span is valid), and its n best distinct spans with scores and
    probabilities (softmax over those n).
    """
    by_example: dict[int, list[int]] = {}
    for w, window in enumerate(windows):
        by_example.setdefault(window.example, []).append(w)
    answers, null_odds, nbest = {}, {}, {}
    for index, example in enumerate(examples):
        candidates, score_null = [], np.inf
        for w in by_example.get(index, []):
            window, starts, ends = windows[w], start_logits[w], end_logits[w]
            score_null = min(score_null, float(starts[0] + ends[0]))
            valid_start = np.array([m for m in window.max_context], dtype=bool)
            valid_end = np.array([o is not None for o in window.offsets], dtype=bool)
            top_starts = [i for i in np.argsort(-np.where(valid_start, starts, -np.inf), kind="stable")[:n_best]
                          if valid_start[i]]
            top_ends = [j for j in np.argsort(-np.where(valid_end, ends, -np.inf), kind="stable")[:n_best]
                        if valid_end[j]]
            for i in top_starts:
                for j in top_ends:
                    if j < i or j - i + 1 > max_answer_length:
                        continue
                    char_start, char_end = window.offsets[i][0], window.offsets[j][1]
                    candidates.append((float(starts[i] + ends[j]), char_start, char_end))
        candidates.sort(key=lambda c: -c[0])
        seen, best = set(), []
        for score, char_start, char_end in candidates:
            text = example.context[char_start:char_end]
            if text in seen:
                continue
            seen.add(text)
            best.append({"text": text, "score": score, "start": char_start})
            if len(best) == n_best:
                break
        if best:
            scores = np.array([b["score"] for b in best])
            probs = np.exp(scores - scores.max())
            for b, p in zip(best, probs / probs.sum()):
                b["probability"] = float(p)
        answers[example.qid] = best[0]["text"] if best else ""
        null_odds[example.qid] = score_null - best[0]["score"] if best else float("inf")
        nbest[example.qid] = best
    return answers, null_odds, nbest
