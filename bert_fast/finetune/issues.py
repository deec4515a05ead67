"""Counted warnings: data problems that do not stop a run (a truncated input, an answer that left its window).

Each kind is logged once with its count and the first few places it happened, and lands in metrics.json, so a
run never hides how much of its data it could not use as given. Problems that would make numbers wrong are
errors instead (DataError).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

logger = logging.getLogger("bert_fast")


class Issues:
    MAX_EXAMPLES = 5

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.MAX_EXAMPLES:
            self.examples[kind].append(where)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> dict[str, dict]:
        return {kind: {"count": n, "examples": self.examples[kind]} for kind, n in sorted(self.counts.items())}

    def log(self) -> None:
        for kind, n in sorted(self.counts.items()):
            logger.warning("bert_fast finetune: %d x %s (e.g. %s)", n, kind, "; ".join(self.examples[kind]))
