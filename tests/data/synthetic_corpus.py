"""A small synthetic corpus in BERT's format, the same on every run (its own seeded generator).

Documents draw their words from a topic of their own plus common words, so next-sentence prediction and
masked-LM both have something to learn; words are made of syllables, so WordPiece splits some into pieces.
"""

from __future__ import annotations

import random
from pathlib import Path

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dor", "fen", "gil", "hax"]
COMMON = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))


def documents(n_docs: int = 60, seed: int = 7, sentences: tuple[int, int] = (6, 16)) -> list[list[str]]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        topic = [_word(rng) for _ in range(25)]
        doc = []
        for _ in range(rng.randint(*sentences)):
            words = [rng.choice(topic) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(rng.randint(4, 14))]
            doc.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
        docs.append(doc)
    return docs


def write_corpus(path: Path, docs: list[list[str]]) -> Path:
    """One sentence per line, a blank line between documents."""
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return path
