"""From a corpus to what training reads: a WordPiece tokenizer and a store of examples, both cached.

Both are kept under a cache folder (default $BERT_FAST_CACHE, else $XDG_CACHE_HOME/bert_fast, else
~/.cache/bert_fast) in folders named by the fingerprint of what they were built from, so a second run on the
same corpus and settings starts training at once, and a changed corpus file or setting builds afresh. Each is
built in a temporary folder and renamed into place (the store resumes shard by shard if interrupted).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..tokenizer import BertTokenizer, TokenizerError
from .corpus import CorpusStats, corpus_fingerprint, iter_documents, read_documents
from .examples import tokenize_documents
from .store import ExampleSettings, ExampleStore, store_key, write_store

logger = logging.getLogger("bert_fast")


def default_cache_dir() -> Path:
    if os.environ.get("BERT_FAST_CACHE"):
        return Path(os.environ["BERT_FAST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bert_fast"


def tokenizer_fingerprint(tokenizer: BertTokenizer) -> str:
    return hashlib.sha256(tokenizer._tokenizer.to_str().encode()).hexdigest()[:16]


# The documents read for a tokenizer, kept for the example store built right after it (reading and cleaning a
# corpus twice is most of the first run's preparation); taken, and so released, by cached_store.
_last_read: dict = {}


def train_tokenizer(corpus: Sequence[str | Path] | None, vocab_size: int, lowercase: bool = True,
                    min_frequency: int = 2, split: bool = True, keep_documents: bool = False,
                    ) -> tuple[BertTokenizer, CorpusStats]:
    """A WordPiece vocabulary learnt from the corpus sentences (specials first: [PAD]=0 ... [MASK]=4)."""
    stats = CorpusStats()
    if keep_documents:
        docs, stats = read_documents(corpus, split)
        _last_read.clear()
        _last_read[corpus_fingerprint(corpus, split)] = (docs, stats)
        sentences = (s for doc in docs for s in doc)
    else:
        sentences = (s for doc in iter_documents(corpus, split, stats) for s in doc)
    try:
        tokenizer = BertTokenizer.train(texts=sentences, vocab_size=vocab_size, lowercase=lowercase,
                                        min_frequency=min_frequency)
    except TokenizerError as e:
        raise TokenizerError(f"cannot train a tokenizer: {e}") from e
    return tokenizer, stats


def _replace_dir(tmp: Path, final: Path) -> None:
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished the same folder first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def cached_tokenizer(corpus, vocab_size: int, lowercase: bool = True, cache_dir: str | Path | None = None,
                     split: bool = True) -> tuple[BertTokenizer, Path]:
    """The tokenizer trained on `corpus`, from the cache when it was trained before."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = hashlib.sha256(f"{corpus_fingerprint(corpus, split)}|{vocab_size}|{lowercase}".encode()).hexdigest()[:16]
    folder = cache / "tokenizers" / f"wordpiece-{vocab_size}-{key}"
    if (folder / "tokenizer.json").is_file():
        return BertTokenizer.from_pretrained(folder), folder
    started = time.perf_counter()
    tokenizer, _ = train_tokenizer(corpus, vocab_size, lowercase, split=split, keep_documents=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, folder)
    logger.info("bert_fast: trained a %d-piece WordPiece vocabulary in %.1f s -> %s", tokenizer.vocab_size,
                time.perf_counter() - started, folder)
    return tokenizer, folder


def cached_store(corpus, tokenizer: BertTokenizer, settings: ExampleSettings, cache_dir: str | Path | None = None,
                 split: bool = True) -> Path:
    """The example store for (corpus, tokenizer, settings), built (or finished) when missing."""
    settings.validate()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprints = {"corpus": corpus_fingerprint(corpus, split), "tokenizer": tokenizer_fingerprint(tokenizer)}
    key = store_key(settings, fingerprints["corpus"], fingerprints["tokenizer"])
    folder = cache / "examples" / f"s{settings.max_seq_len}-{key}"
    if (folder / "manifest.json").is_file():
        ExampleStore(folder, "train")  # checks it is complete and readable
        _last_read.clear()
        return folder
    started = time.perf_counter()
    kept = _last_read.pop(fingerprints["corpus"], None)
    _last_read.clear()
    docs, stats = kept if kept is not None else read_documents(corpus, split)
    tokenized = tokenize_documents(docs, tokenizer)
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    write_store(folder, tokenized, settings, special, tokenizer.vocab_size,
                {**fingerprints, "skipped_non_utf8_lines": stats.skipped_lines})
    logger.info("bert_fast: %d documents, %d sentences, %d tokens -> %s (%.1f s)", stats.documents, stats.sentences,
                len(tokenized.tokens), folder, time.perf_counter() - started)
    return folder
