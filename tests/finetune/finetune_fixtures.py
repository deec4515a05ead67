"""Tiny data sets in the official file layouts, written by the tests themselves (no third-party data).

The texts follow simple rules a 2-layer model learns in a few dozen steps, so end-to-end runs can check that
training works, not only that it runs.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import bert_fast

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible"]
FILLER = ["the", "movie", "was", "really", "quite", "plot", "acting", "and", "it", "a", "story", "film", "very"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "london", "berlin", "rome", "madrid"]


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)] + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), "1" if positive else "0"))
    return rows


def write_sst2(path: Path, n: int, seed: int, labelled: bool = True) -> Path:
    """GLUE SST-2 layout: header `sentence<TAB>label` (test: `index<TAB>sentence`)."""
    lines = ["sentence\tlabel"] if labelled else ["index\tsentence"]
    for i, (text, label) in enumerate(sentiment_rows(n, seed)):
        lines.append(f"{text}\t{label}" if labelled else f"{i}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mrpc(path: Path, n: int, seed: int) -> Path:
    """GLUE MRPC layout: Quality, #1 ID, #2 ID, #1 String, #2 String; label 1 when both share the sentiment."""
    rows = sentiment_rows(2 * n, seed)
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i in range(n):
        (a, la), (b, lb) = rows[2 * i], rows[2 * i + 1 + (i % 2) * 0]
        if i % 3 == 0:
            b, lb = rows[(2 * i + 2) % len(rows)]
        lines.append(f"{int(la == lb)}\t{i}\t{i + 1000}\t{a}\t{b}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_stsb(path: Path, n: int, seed: int) -> Path:
    """GLUE STS-B layout (score column, two sentences); the score counts positive words, 0..5."""
    rng = random.Random(seed)
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    lines = ["\t".join(header)]
    for i in range(n):
        k = rng.randint(0, 5)
        s1 = " ".join(rng.sample(FILLER, 3) + POSITIVE[:k])
        s2 = " ".join(rng.sample(FILLER, 3))
        lines.append("\t".join([str(i), "main-news", "x", "2012", str(i), "none", "none", s1, s2, f"{k:.3f}"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, n: int, seed: int) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": "pos" if y == "1" else "neg"}) + "\n"
                            for t, y in sentiment_rows(n, seed)), encoding="utf-8")
    return path


def tagged_sentences(n: int, seed: int, long_every: int = 0) -> list[list[tuple[str, str]]]:
    """Names after 'met' are B-PER (first name) I-PER (second); places after 'in' are B-LOC."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [(w, "O") for w in rng.sample(FILLER, 2)]
        words += [("met", "O"), (rng.choice(PEOPLE), "B-PER")]
        if rng.random() < 0.5:
            words.append((rng.choice(PEOPLE), "I-PER"))
        words += [("in", "O"), (rng.choice(PLACES), "B-LOC"), (".", "O")]
        if long_every and i % long_every == 0:  # longer than the window: split at word boundaries
            words = words + [(w, "O") for w in rng.choices(FILLER, k=40)] + words
        out.append(words)
    return out


def write_conll(path: Path, n: int, seed: int, long_every: int = 0) -> Path:
    """CoNLL-2003 layout: `word POS chunk tag`, -DOCSTART- header, blank line between sentences."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in tagged_sentences(n, seed, long_every):
        lines += [f"{w} NN I-NP {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def squad_articles(n: int, seed: int, version: int, filler_words: int = 0):
    """Each paragraph: '<person> lives in <place> .' hidden in filler; questions ask where the person lives.

    With filler_words the context is longer than a window, so answers sit in different windows; v2 adds an
    unanswerable question about a person the paragraph does not name.
    """
    rng = random.Random(seed)
    data = []
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        before = " ".join(rng.choices(FILLER, k=rng.randint(0, filler_words))) if filler_words else "so"
        after = " ".join(rng.choices(FILLER, k=rng.randint(0, filler_words))) if filler_words else "now"
        context = f"{before.capitalize()} . {person.capitalize()} lives in {place.capitalize()} . {after} ."
        start = context.index(place.capitalize())
        qas = [{"id": f"q{i}", "question": f"Where does {person} live?",
                "answers": [{"text": place.capitalize(), "answer_start": start}]}]
        if version == 2:
            qas[0]["is_impossible"] = False
            other = next(p for p in PEOPLE if p != person)
            qas.append({"id": f"q{i}-none", "question": f"Where does {other} live?", "answers": [],
                        "plausible_answers": [{"text": place.capitalize(), "answer_start": start}],
                        "is_impossible": True})
        data.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0" if version == 2 else "1.1", "data": data}


def write_squad(path: Path, n: int, seed: int, version: int = 1, filler_words: int = 0) -> Path:
    path.write_text(json.dumps(squad_articles(n, seed, version, filler_words)), encoding="utf-8")
    return path


def write_swag(path: Path, n: int, seed: int, labelled: bool = True) -> Path:
    """SWAG layout: video-id, fold-ind, startphrase, sent1, sent2, gold-source, ending0..3, label.
    The right ending repeats the context's sentiment word."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        header = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                  "ending0", "ending1", "ending2", "ending3"] + (["label"] if labelled else [])
        writer.writerow(header)
        for i in range(n):
            word = rng.choice(POSITIVE + NEGATIVE)
            label = rng.randrange(4)
            others = rng.sample([w for w in POSITIVE + NEGATIVE if w != word], 3)
            endings = others[:label] + [word] + others[label:]
            sent1, sent2 = f"the film was {word} .", "it was"
            row = [i, f"v{i}", i, f"{sent1} {sent2}", sent1, sent2, "gold"] + [f"{e} indeed ." for e in endings]
            writer.writerow(row + ([label] if labelled else []))
    return path


def fixture_texts() -> list[str]:
    texts = [t for t, _ in sentiment_rows(200, 0)]
    texts += [" ".join(w for w, _ in s) for s in tagged_sentences(50, 0)]
    texts += [" ".join(PEOPLE + PLACES + ["lives", "where", "does", "live", "?", "indeed", "it", "so", "now"])] * 5
    texts += [" ".join(w.capitalize() for w in PEOPLE + PLACES)] * 5
    return texts


def write_tiny_model(folder: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random 2-layer BERT with a WordPiece vocabulary trained on the fixture texts, saved as an HF folder."""
    import torch

    torch.manual_seed(seed)
    tokenizer = bert_fast.BertTokenizer.train(texts=fixture_texts(), vocab_size=200, min_frequency=1)
    config = bert_fast.BertConfig.preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    bert_fast.BertModel(config, impl="reference").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
