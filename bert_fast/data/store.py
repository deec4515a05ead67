"""Pretraining examples preprocessed once into sharded, memory-mapped .npy files.

Layout of a store folder (one per corpus + tokenizer + settings, named by their fingerprint):

    manifest.json                 settings, fingerprints, shards per split; written last ("complete": true)
    train-00000.ids.npy           (n, S) uint16 (int32 for vocabularies over 65535): [CLS] A [SEP] B [SEP] pad
    train-00000.meta.npy          (n, 3) int32: length, len(A), is_random_next
    train-00000.words.npy         (n, ceil(S / 8)) uint8: word-start flags, bit-packed (np.packbits)
    train-00000.json              shard marker: example count and sha256 of the three files (written last)
    eval-00000....                the held-out split, from documents the training split never sees

Deterministic for a seed: held-out documents, the document partition into shards and each shard's random
generator depend only on the seed and the corpus, so two builds are byte-identical. Resumable: each shard is
written atomically (temp files, then rename) and marked done; a rebuild after an interruption keeps every
shard whose marker and files agree and makes only the rest. Readers map the files (np.load mmap_mode="r") and
touch only the rows they ask for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import atomic_write, atomic_write_text, read_json
from .examples import TokenizedCorpus, assemble, create_examples_from_document

logger = logging.getLogger("bert_fast")

FORMAT_VERSION = 1
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class ExampleSettings:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 2  # passes over the corpus, each cutting it into different pairs
    eval_fraction: float = 0.05  # documents held out for evaluation (at least 2 when there are 4+)
    shard_examples: int = 65536  # target examples per shard
    seed: int = 12345
    random_next: bool = True  # B is a random other document's text half of the time (NSP); False: B follows A

    def validate(self) -> None:
        if not 8 <= self.max_seq_len <= 4096:
            raise DataError(f"max_seq_len must be in [8, 4096], got {self.max_seq_len}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise DataError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.dupe_factor < 1:
            raise DataError(f"dupe_factor must be at least 1, got {self.dupe_factor}")
        if not 0.0 <= self.eval_fraction < 0.5:
            raise DataError(f"eval_fraction must be in [0, 0.5), got {self.eval_fraction}")
        if self.shard_examples < 1:
            raise DataError(f"shard_examples must be positive, got {self.shard_examples}")


def store_key(settings: ExampleSettings, corpus_fingerprint: str, tokenizer_fingerprint: str) -> str:
    fields = asdict(settings)
    if fields["random_next"]:  # the default keeps the keys of stores built before the setting existed
        del fields["random_next"]
    blob = json.dumps({"format": FORMAT_VERSION, **fields, "corpus": corpus_fingerprint,
                       "tokenizer": tokenizer_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- writing ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


_PARTS = ("ids", "meta", "words")


def _shard_done(folder: Path, name: str) -> dict | None:
    """The shard's marker if it and its files are intact (sizes match), else None."""
    marker = folder / f"{name}.json"
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        for part in _PARTS:
            if (folder / f"{name}.{part}.npy").stat().st_size != info["bytes"][part]:
                return None
    except (OSError, ValueError, KeyError):
        return None
    return info


def split_documents(n_docs: int, settings: ExampleSettings) -> tuple[list[int], list[int]]:
    """(train, eval) document indices: a seeded random eval_fraction of documents is held out."""
    n_eval = round(n_docs * settings.eval_fraction)
    if settings.eval_fraction > 0 and n_docs >= 4:
        n_eval = max(n_eval, 2)  # a random next segment needs another document
    n_eval = min(n_eval, n_docs - 1)
    order = list(range(n_docs))
    random.Random(settings.seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def partition(corpus: TokenizedCorpus, docs: list[int], settings: ExampleSettings) -> list[list[int]]:
    """Consecutive runs of documents holding about shard_examples examples' worth of tokens each."""
    budget = settings.shard_examples * (settings.max_seq_len - 3) / settings.dupe_factor
    shards, current, tokens = [], [], 0
    for d in docs:
        current.append(d)
        tokens += corpus.doc_tokens(d)
        if tokens >= budget:
            shards.append(current)
            current, tokens = [], 0
    if current:
        shards.append(current)
    return shards


def _make_shard(corpus, shard_docs, candidates, settings, shard_seed, special_ids, dtype):
    rng = random.Random(shard_seed)
    examples = []
    for _ in range(settings.dupe_factor):
        for d in shard_docs:
            examples += create_examples_from_document(corpus, d, candidates, settings.max_seq_len,
                                                      settings.short_seq_prob, rng, settings.random_next)
    rng.shuffle(examples)
    cls_id, sep_id, pad_id = special_ids
    return assemble(examples, settings.max_seq_len, cls_id, sep_id, pad_id, dtype=dtype)


def write_store(folder: str | Path, corpus: TokenizedCorpus, settings: ExampleSettings, special_ids, vocab_size: int,
                fingerprints: dict | None = None) -> Path:
    """Create (or finish) the store in `folder`. special_ids = (cls, sep, pad)."""
    settings.validate()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if corpus.n_docs == 0:
        raise DataError("the corpus has no documents with any tokens")
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    train_docs, eval_docs = split_documents(corpus.n_docs, settings)
    manifest = {"format": FORMAT_VERSION, "settings": asdict(settings), "vocab_size": vocab_size,
                "special_ids": dict(zip(("cls", "sep", "pad"), map(int, special_ids))), "dtype": np.dtype(dtype).name,
                "fingerprints": fingerprints or {}, "documents": {"train": len(train_docs), "eval": len(eval_docs)},
                "splits": {}, "complete": False}
    started = time.perf_counter()
    for split_index, (split, docs) in enumerate((("train", train_docs), ("eval", eval_docs))):
        shards = partition(corpus, docs, settings) if docs else []
        entries = []
        for i, shard_docs in enumerate(shards):
            name = f"{split}-{i:05d}"
            info = _shard_done(folder, name)
            if info is None:
                seed = (settings.seed * 1_000_003 + split_index) * 1_000_003 + i
                ids, meta, words = _make_shard(corpus, shard_docs, docs, settings, seed, special_ids, dtype)
                arrays = {"ids": ids, "meta": meta, "words": np.packbits(words, axis=1)}
                for part, array in arrays.items():
                    atomic_write(folder / f"{name}.{part}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
                info = {"examples": len(ids),
                        "bytes": {p: (folder / f"{name}.{p}.npy").stat().st_size for p in _PARTS},
                        "sha256": {p: _sha256(folder / f"{name}.{p}.npy") for p in _PARTS}}
                _write_json(folder / f"{name}.json", info)  # the shard counts as done from here on
            entries.append({"name": name, "examples": info["examples"], "sha256": info["sha256"]})
        manifest["splits"][split] = entries
    manifest["complete"] = True
    _write_json(folder / "manifest.json", manifest)
    n_train = sum(e["examples"] for e in manifest["splits"]["train"])
    logger.info("bert_fast: wrote %d training examples in %d shards to %s (%.1f s)", n_train,
                len(manifest["splits"]["train"]), folder, time.perf_counter() - started)
    return folder


# --- reading ---------------------------------------------------------------------------------------------


class ExampleStore:
    """One split of a store, read through memory maps. Rows are addressed by a global index over all shards."""

    def __init__(self, folder: str | Path, split: str = "train"):
        folder = Path(folder)
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {SPLITS}")
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise DataError(f"{folder} is not a finished example store (no manifest.json)")
        manifest = read_json(manifest_path, DataError)
        if manifest.get("format") != FORMAT_VERSION or not manifest.get("complete"):
            raise DataError(f"{folder} holds an unfinished store or one of another format version")
        self.folder = folder
        self.split = split
        self.manifest = manifest
        self.settings = ExampleSettings(**manifest["settings"])
        self.max_seq_len = self.settings.max_seq_len
        self.vocab_size = manifest["vocab_size"]
        self._shards = []
        for entry in manifest["splits"][split]:
            name = entry["name"]
            try:
                parts = {p: np.load(folder / f"{name}.{p}.npy", mmap_mode="r") for p in _PARTS}
            except (OSError, ValueError) as e:
                raise DataError(f"shard {name} of {folder} is missing or damaged: {e}") from e
            if len(parts["ids"]) != entry["examples"]:
                raise DataError(f"shard {name} of {folder} holds {len(parts['ids'])} examples, expected "
                                f"{entry['examples']}")
            self._shards.append(parts)
        counts = [len(s["ids"]) for s in self._shards]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def lengths(self) -> np.ndarray:
        """(n,) int64: every example's length in tokens, [CLS] and [SEP]s included."""
        if not self._shards:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.asarray(s["meta"][:, 0], dtype=np.int64) for s in self._shards])

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (n, S) int64, meta (n, 3) int64, word_start (n, S) bool) for global row indices."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range for a store of {len(self)} examples")
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        n, s = len(indices), self.max_seq_len
        ids = np.empty((n, s), dtype=np.int64)
        meta = np.empty((n, 3), dtype=np.int64)
        words = np.empty((n, s), dtype=bool)
        for k in np.unique(shard_of):
            sel = np.nonzero(shard_of == k)[0]
            local = indices[sel] - self._offsets[k]
            shard = self._shards[k]
            ids[sel] = shard["ids"][local]
            meta[sel] = shard["meta"][local]
            words[sel] = np.unpackbits(shard["words"][local], axis=1, count=s).astype(bool)
        return ids, meta, words
