import json

import numpy as np
import pytest

from bert_fast.data import store as store_lib
from bert_fast.data.corpus import read_documents
from bert_fast.data.examples import tokenize_documents
from bert_fast.data.store import ExampleSettings, ExampleStore, write_store
from bert_fast.errors import DataError

SETTINGS = ExampleSettings(max_seq_len=48, dupe_factor=2, eval_fraction=0.1, shard_examples=150, seed=3)


@pytest.fixture(scope="module")
def corpus(corpus_file, tokenizer):
    docs, _ = read_documents([corpus_file])
    return tokenize_documents(docs, tokenizer)


def _special(tok):
    return tok.cls_token_id, tok.sep_token_id, tok.pad_token_id


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_store_round_trip_and_determinism(tmp_path, corpus, tokenizer):
    a = write_store(tmp_path / "a", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    b = write_store(tmp_path / "b", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    assert _files(a) == _files(b)  # byte-identical for the same seed
    manifest = json.loads((a / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]) >= 3  # several shards, to exercise the shard index
    train = ExampleStore(a, "train")
    assert len(train) == sum(s["examples"] for s in manifest["splits"]["train"])
    ids, meta, words = train.rows(np.array([len(train) - 1, 0, 5]))
    assert ids.shape == (3, 48) and ids.dtype == np.int64 and words.dtype == bool
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    assert ((meta[:, 0] <= 48) & (meta[:, 1] >= 1)).all()
    c = write_store(tmp_path / "c", corpus, ExampleSettings(**{**SETTINGS.__dict__, "seed": 4}), _special(tokenizer),
                    tokenizer.vocab_size)
    assert _files(c)["train-00000.ids.npy"] != _files(a)["train-00000.ids.npy"]  # another seed, other examples


def test_eval_documents_are_held_out(tmp_path, corpus, tokenizer):
    train_docs, eval_docs = store_lib.split_documents(corpus.n_docs, SETTINGS)
    assert eval_docs and not set(train_docs) & set(eval_docs)
    assert sorted(train_docs + eval_docs) == list(range(corpus.n_docs))
    folder = write_store(tmp_path / "s", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    train, held_out = ExampleStore(folder, "train"), ExampleStore(folder, "eval")
    assert len(held_out) > 0
    # Held-out sequences never appear in training (documents are disjoint; compare A segments).
    train_rows = {tuple(r) for r in train.rows(np.arange(len(train)))[0][:, :12].tolist()}
    eval_rows = [tuple(r) for r in held_out.rows(np.arange(len(held_out)))[0][:, :12].tolist()]
    assert sum(r in train_rows for r in eval_rows) == 0


def test_interrupted_build_resumes_shard_by_shard(tmp_path, corpus, tokenizer, monkeypatch):
    reference = _files(write_store(tmp_path / "ref", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size))
    made = []
    real_make = store_lib._make_shard

    def crash_on_second(*args, **kwargs):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt("killed")
        return real_make(*args, **kwargs)

    monkeypatch.setattr(store_lib, "_make_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "r", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    folder = tmp_path / "r"
    assert (folder / "train-00000.json").is_file() and not (folder / "manifest.json").exists()
    assert not list(folder.glob(".*.tmp"))  # no temporary file left behind
    with pytest.raises(DataError, match="not a finished"):
        ExampleStore(folder)
    first_shard_time = (folder / "train-00000.ids.npy").stat().st_mtime_ns
    made.clear()
    monkeypatch.setattr(store_lib, "_make_shard", lambda *a, **k: (made.append(1), real_make(*a, **k))[1])
    write_store(folder, corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    n_shards = len(json.loads((folder / "manifest.json").read_text())["splits"]["train"]) + \
        len(json.loads((folder / "manifest.json").read_text())["splits"]["eval"])
    assert len(made) == n_shards - 1  # the finished shard was kept
    assert (folder / "train-00000.ids.npy").stat().st_mtime_ns == first_shard_time
    assert _files(folder) == reference


def test_damaged_shard_is_rebuilt_or_reported(tmp_path, corpus, tokenizer):
    folder = write_store(tmp_path / "d", corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)
    (folder / "train-00001.ids.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="train-00001"):
        ExampleStore(folder)
    write_store(folder, corpus, SETTINGS, _special(tokenizer), tokenizer.vocab_size)  # size mismatch: rebuilt
    assert len(ExampleStore(folder)) > 0


def test_bad_settings():
    with pytest.raises(DataError, match="max_seq_len"):
        ExampleSettings(max_seq_len=4).validate()
    with pytest.raises(DataError, match="dupe_factor"):
        ExampleSettings(dupe_factor=0).validate()
