"""A small rule-based sentence splitter for raw paragraphs (no model, no network).

A sentence ends at `.`, `!` or `?` (possibly repeated, possibly followed by closing quotes or brackets) when
whitespace follows and the next word starts like a sentence: an upper-case letter, a digit, or an opening
quote/bracket. It does not end after a known abbreviation ("Dr.", "e.g.", "U.S." before a lower-case word), a
single initial ("J. R. R. Tolkien"), or inside a number ("3.14", no whitespace). It is deliberately simple:
pretraining only needs roughly right sentence boundaries for next-sentence prediction.
"""

from __future__ import annotations

import re

# Abbreviations after which a full stop rarely ends a sentence (compared lower-case, without the final dot).
ABBREVIATIONS = frozenset(["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "no", "nos", "vol", "vols", "fig", "figs", "pp", "ed", "eds", "rev", "gen", "col", "lt", "sgt", "capt", "cmdr", "gov", "sen", "rep", "inc", "ltd", "co", "corp", "dept", "univ", "assn", "bros", "est", "approx", "ca", "cf", "al", "vs", "etc", "e.g", "i.e", "viz", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "u.n", "a.m", "p.m", "b.c", "a.d", "op"])

# A candidate boundary: terminal punctuation, optional closers, whitespace, then what the next sentence starts with.
_BOUNDARY = re.compile(r"""([.!?]+)(["'”’)\]]*)\s+(?=["'“‘(\[]?[A-Z0-9À-ÖØ-Þ])""")


def _ends_with_abbreviation(text: str) -> bool:
    """Whether `text` (up to a full stop) ends with an abbreviation or an initial. "in the U.S. The ..." is
    therefore not split: a missed boundary costs less than splitting "U.S. Army"."""
    words = text[-64:].split()
    if not words:
        return False
    word = words[-1].lstrip("\"'“‘([").rstrip(".").lower()
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith"
    return word in ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Split one paragraph into sentences, each stripped; empty input gives []."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        end = match.end(2)
        punct = match.group(1)
        if punct == "." and _ends_with_abbreviation(text[start:match.start(1)]):
            continue
        sentences.append(text[start:end].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]
