"""Readers for the official file layouts: GLUE-style tables (TSV/CSV/JSONL), CoNLL tagging files, SWAG CSV.

Each returns plain examples that remember where they came from (file:line), so every error names its record.
Compressed files (.gz, .bz2) are read transparently. SQuAD JSON lives in squad.py with its windowing.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

# Column names of the GLUE / SuperGLUE layouts, tried in order when the caller names none.
TEXT_COLUMNS = [
    ("sentence1", "sentence2"),  # STS-B, RTE, WNLI, MNLI's dev/test renames
    ("#1 String", "#2 String"),  # MRPC
    ("question1", "question2"),  # QQP
    ("question", "sentence"),  # QNLI
    ("premise", "hypothesis"),  # MNLI, SNLI
    ("sentence",),  # SST-2, CoLA with a header
    ("text",),
    ("review",),
]
LABEL_COLUMNS = ["label", "gold_label", "Quality", "is_duplicate", "score"]


def open_text(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2")]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".tsv", ".txt"):
        return "tsv"
    if ext == ".csv":
        return "csv"
    if ext in (".jsonl", ".json"):
        return "jsonl"
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; use .tsv, .csv or .jsonl")


# --- tables: one example per row ---------------------------------------------------------------------------


@dataclass
class TextExample:
    texts: tuple[str, ...]  # one text, or a pair
    label: str | None  # None when the file has no label column (a GLUE test file)
    where: str  # file:line


def read_records(path: str | Path, header: bool = True) -> tuple[list[str], list[tuple[str, dict]]]:
    """(column names, [(where, record)]) of a TSV/CSV/JSONL file. Without a header, columns are named 0, 1, ..."""
    path = Path(path)
    fmt = _format(path)
    with open_text(path) as f:
        if fmt == "jsonl":
            records = []
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON object: {e}") from e
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(record).__name__}")
                records.append((f"{path.name}:{n}", {k: v for k, v in record.items()}))
            columns = list(records[0][1]) if records else []
            return columns, records
        # GLUE's TSVs hold unbalanced quotes inside sentences: read them without quoting, as its loaders do.
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(f)
        rows = [(n, row) for n, row in enumerate(reader, 1) if row and any(cell.strip() for cell in row)]
    if not rows:
        return [], []
    if header:
        columns, rows = rows[0][1], rows[1:]
    else:
        columns = [str(i) for i in range(len(rows[0][1]))]
    records = []
    for n, row in rows:
        if len(row) != len(columns):
            raise DataError(f"{path}:{n}: {len(row)} fields, the {'header' if header else 'first row'} has "
                            f"{len(columns)}")
        records.append((f"{path.name}:{n}", dict(zip(columns, row))))
    return columns, records


def _no_header_hint(columns: list[str], header: bool) -> str:
    """A hint when the row read as the header looks like data (a number, or a sentence): a file without a header
    row (CoLA's) loses its first example as column names and then finds none of the columns asked for."""
    looks_like_data = any(c.strip().lstrip("-").replace(".", "", 1).isdigit() or len(c.split()) > 3 for c in columns)
    if header and looks_like_data:
        return ("; its first row looks like data, not a header: if the file has no header row, pass --no-header "
                "and name the columns by index (--text-columns 0 --label-column 1)")
    return ""


def _resolve_column(name: str, columns: list[str], path, header: bool = True) -> str:
    if name in columns:
        return name
    if name.isdigit() and int(name) < len(columns):
        return columns[int(name)]
    raise DataError(f"{path}: no column {name!r}; its columns are {columns}{_no_header_hint(columns, header)}")


def read_table(path: str | Path, text_columns: list[str] | None = None, label_column: str | None = None,
               header: bool = True, require_label: bool = True) -> list[TextExample]:
    """Sentence (pair) classification / regression examples from a GLUE-style table.

    Columns are named (or 0-based indices); unnamed, the GLUE layouts are recognised by their headers. A file
    without the label column is accepted only with require_label=False (a test file); its labels are None.
    """
    columns, records = read_records(path, header)
    if not records:
        raise DataError(f"{path}: no examples")
    if text_columns:
        texts = [_resolve_column(c, columns, path, header) for c in text_columns]
    else:
        found = next((names for names in TEXT_COLUMNS if all(c in columns for c in names)), None)
        if found is None:
            raise DataError(f"{path}: cannot tell the text column(s) among {columns}; name them (--text-columns)"
                            f"{_no_header_hint(columns, header)}")
        texts = list(found)
    if label_column:
        present = label_column in columns or (label_column.isdigit() and int(label_column) < len(columns))
        label = _resolve_column(label_column, columns, path, header) if present or require_label else None
    else:
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None and require_label:
        raise DataError(f"{path}: no label column among {columns}; name it (--label-column)"
                        f"{_no_header_hint(columns, header)}")
    out = []
    for where, record in records:
        values = []
        for c in texts:
            value = record.get(c)
            if value is None:
                raise DataError(f"{where}: missing text field {c!r}")
            values.append(str(value))
        value = record.get(label) if label is not None else None
        if value is None and label is not None and require_label:
            raise DataError(f"{where}: missing label field {label!r}")
        out.append(TextExample(tuple(values), None if value is None else str(value).strip(), where))
    return out


# --- CoNLL tagging -----------------------------------------------------------------------------------------


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None  # None for an untagged file (one column)
    where: str  # file:line of the first word


def read_conll(path: str | Path) -> list[TaggedSentence]:
    """CoNLL-style: one `word ... tag` per line (tab or space separated; the tag is the last field), a blank
    line between sentences, -DOCSTART- lines skipped. A file with a single column per line is untagged."""
    path = Path(path)
    sentences, words, tags, start = [], [], [], None
    columns_seen = set()

    def flush():
        nonlocal words, tags, start
        if words:
            sentences.append(TaggedSentence(words, tags, f"{path.name}:{start}"))
        words, tags, start = [], [], None

    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                flush()
                continue
            if fields[0] == "-DOCSTART-":
                flush()
                continue
            columns_seen.add(len(fields) > 1)
            if len(columns_seen) > 1:
                raise DataError(f"{path}:{n}: some lines have a tag and some do not")
            start = start or n
            words.append(fields[0])
            tags.append(fields[-1])
        flush()
    if not sentences:
        raise DataError(f"{path}: no sentences")
    if columns_seen == {False}:
        for s in sentences:
            s.tags = None
    return sentences


def write_conll(path: str | Path, sentences: list[TaggedSentence], predictions: list[list[str]]) -> None:
    """`word gold predicted` (conlleval's input) or `word predicted` for untagged sentences."""
    buf = io.StringIO()
    for sentence, pred in zip(sentences, predictions):
        gold = sentence.tags or [None] * len(sentence.words)
        for word, g, p in zip(sentence.words, gold, pred):
            buf.write(f"{word} {g} {p}\n" if g is not None else f"{word} {p}\n")
        buf.write("\n")
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


# --- SWAG multiple choice ----------------------------------------------------------------------------------


@dataclass
class ChoiceExample:
    context: str  # sentence A
    endings: list[str]  # sentence B of each choice (the start of the second sentence + the ending)
    label: int | None
    where: str


def read_swag(path: str | Path, require_label: bool = True) -> list[ChoiceExample]:
    """SWAG's CSV layout: sent1 (context), sent2 (start of the next sentence), ending0..ending3, label.

    Each choice is [CLS] sent1 [SEP] sent2 + ending_i [SEP], as in the paper and transformers' run_swag.
    """
    columns, records = read_records(path, header=True)
    if not records:
        raise DataError(f"{path}: no examples")
    endings = sorted((c for c in columns if c.startswith("ending") and c[6:].isdigit()), key=lambda c: int(c[6:]))
    missing = [c for c in ("sent1", "sent2") if c not in columns]
    if missing or len(endings) < 2:
        raise DataError(f"{path}: SWAG needs columns sent1, sent2, ending0, ending1, ...; missing "
                        f"{missing + ([] if len(endings) >= 2 else ['ending0..N'])} among {columns}")
    has_label = "label" in columns
    if require_label and not has_label:
        raise DataError(f"{path}: no label column")
    out = []
    for where, r in records:
        label = None
        if has_label and str(r["label"]).strip() != "":
            text = str(r["label"]).strip()
            if not text.lstrip("-").isdigit() or not 0 <= int(text) < len(endings):
                raise DataError(f"{where}: label {text!r} is not a choice index in 0..{len(endings) - 1}")
            label = int(text)
        elif require_label:
            raise DataError(f"{where}: empty label")
        start = str(r["sent2"]).strip()
        out.append(ChoiceExample(str(r["sent1"]), [f"{start} {r[c]}".strip() for c in endings], label, where))
    return out
