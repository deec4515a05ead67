"""Corpus readers: documents made of sentences, the input of the tokenizer trainer and of example creation.

Formats:
- Plain text in the original BERT format: one sentence per line, a blank line between documents. Lines holding
  a whole paragraph are split into sentences by `split_sentences` (a line that is one sentence stays one).
  A path may be a file (optionally .gz, .bz2 or .xz) or a folder, read recursively for *.txt files.
- A Wikipedia XML dump (`*pages-articles*.xml[.bz2]`), read with gensim: article text without markup, headings,
  lists and tables; redirects skipped. The sample that ships inside gensim's wheel (106 articles, ~3 MB of text)
  is the embedded default when no corpus is given.

Non-UTF-8 input: a line that is not valid UTF-8 is skipped and counted (CorpusStats.skipped_lines, and one
warning per file); a file where no line could be read is an error. Empty or unreadable files are errors.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorpusError
from .sentences import split_sentences

logger = logging.getLogger("bert_fast")

Document = list[str]  # the sentences of one document, in order

WIKI_SAMPLE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_SAMPLE = "wikipedia-sample"  # the name the embedded default goes by in configs and fingerprints


@dataclass
class CorpusStats:
    files: int = 0
    documents: int = 0
    sentences: int = 0
    skipped_lines: int = 0  # lines that were not valid UTF-8
    skipped_by_file: dict[str, int] = field(default_factory=dict)


# --- plain text ------------------------------------------------------------------------------------------


def _open_binary(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _is_wikipedia_dump(path: Path) -> bool:
    name = path.name.lower()
    return "pages-articles" in name and (name.endswith(".xml") or ".xml" in name)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files named, and *.txt files under folders named (sorted, so the order is reproducible)."""
    if not paths:
        raise CorpusError("no corpus files given")
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.is_file())
            if not found:
                raise CorpusError(f"corpus folder {p} holds no *.txt files")
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise CorpusError(f"corpus path {p} is not a regular file or folder")
        else:
            raise CorpusError(f"corpus file {p} does not exist")
    return files


def read_text_file(path: str | Path, split: bool = True, stats: CorpusStats | None = None) -> Iterator[Document]:
    """Documents of a BERT-format text file: one sentence (or paragraph, with split) per line, blank line between."""
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    skipped = lines = 0
    doc: Document = []
    try:
        with _open_binary(path) as f:
            for raw in f:
                lines += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    skipped += 1
                    continue
                line = line.strip()
                if not line:
                    if doc:
                        yield doc
                        doc = []
                    continue
                doc.extend(split_sentences(line) if split else [" ".join(line.split())])
    except OSError as e:  # permissions, a truncated archive, a folder given as a file
        raise CorpusError(f"cannot read corpus file {path}: {e}") from e
    if doc:
        yield doc
    if lines == 0:
        raise CorpusError(f"corpus file {path} is empty")
    if skipped:
        if skipped == lines:
            raise CorpusError(f"corpus file {path} is not UTF-8 text: none of its {lines} lines decode")
        logger.warning("bert_fast: skipped %d of %d lines of %s that are not valid UTF-8", skipped, lines, path)
        stats.skipped_lines += skipped
        stats.skipped_by_file[str(path)] = skipped


# --- Wikipedia -------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^\s*=+.*=+\s*$")
_LIST_ITEM = re.compile(r"^\s*[*#:;|!{}]")
_BOLD_ITALIC = re.compile(r"'{2,}")
_MIN_WORDS = 5  # shorter lines are captions, table cells, list remnants


def wiki_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of an article's markup (after gensim's filter_wiki): no headings, lists or tables."""
    paragraphs = []
    for line in text.split("\n"):
        if _HEADING.match(line) or _LIST_ITEM.match(line):
            continue
        line = " ".join(_BOLD_ITALIC.sub("", line).split())  # also turns no-break spaces into spaces
        if len(line.split()) >= _MIN_WORDS:
            paragraphs.append(line)
    return paragraphs


def read_wikipedia_dump(path: str | Path, stats: CorpusStats | None = None) -> Iterator[Document]:
    """Articles of a Wikipedia pages-articles XML dump, one document each, split into sentences."""
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    except ImportError as e:
        raise CorpusError("reading a Wikipedia dump needs gensim: pip install 'bert-fast[wiki]'") from e
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    try:
        with _open_binary(path) as f:
            for _title, text, _pageid in extract_pages(f, filter_namespaces=("0",)):
                if text.lstrip().lower().startswith("#redirect"):
                    continue
                doc = [s for p in wiki_paragraphs(filter_wiki(text)) for s in split_sentences(p)]
                if doc:
                    yield doc
    except (OSError, EOFError) as e:
        raise CorpusError(f"cannot read Wikipedia dump {path}: {e}") from e


def wikipedia_sample_path() -> Path:
    """The Wikipedia sample inside gensim's wheel (CC BY-SA). Found without importing gensim (seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the default corpus is the Wikipedia sample inside gensim's wheel: pip install 'bert-fast[wiki]' "
            "(or give --corpus FILE)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / WIKI_SAMPLE_NAME
    if not path.is_file():
        raise CorpusError(f"the installed gensim does not ship {WIKI_SAMPLE_NAME}; give --corpus FILE")
    return path


# --- the corpus as a whole -------------------------------------------------------------------------------


def resolve_corpus(paths: Sequence[str | Path] | None) -> list[Path]:
    """Corpus files to read; no paths means the embedded Wikipedia sample."""
    if not paths or list(paths) == [WIKI_SAMPLE]:
        return [wikipedia_sample_path()]
    return expand_paths(paths)


def iter_documents(paths: Sequence[str | Path] | None, split: bool = True,
                   stats: CorpusStats | None = None) -> Iterator[Document]:
    stats = stats if stats is not None else CorpusStats()
    for path in resolve_corpus(paths):
        stats.files += 1
        docs = read_wikipedia_dump(path, stats) if _is_wikipedia_dump(path) else read_text_file(path, split, stats)
        for doc in docs:
            stats.documents += 1
            stats.sentences += len(doc)
            yield doc


def read_documents(paths: Sequence[str | Path] | None, split: bool = True) -> tuple[list[Document], CorpusStats]:
    """Every document of the corpus in memory. Raises CorpusError when there is no text at all."""
    stats = CorpusStats()
    docs = list(iter_documents(paths, split, stats))
    if not docs:
        raise CorpusError(f"the corpus {[str(p) for p in resolve_corpus(paths)]} holds no text")
    return docs, stats


def corpus_fingerprint(paths: Sequence[str | Path] | None, split: bool = True) -> str:
    """Identifies a corpus by each file's absolute path, size and modification time (not by content: corpora
    can be large), so caches built from it are rebuilt when a file changes."""
    h = hashlib.sha256(f"split={split}".encode())
    for path in resolve_corpus(paths):
        st = os.stat(path)
        h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
