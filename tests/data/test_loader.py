import numpy as np
import pytest
import torch

from bert_fast.data.loader import PretrainingBatches, make_loader, micro_batch_indices
from bert_fast.data.masking import MaskingSettings
from bert_fast.data.prepare import cached_store, cached_tokenizer
from bert_fast.data.store import ExampleSettings
from bert_fast.errors import DataError


def _dataset(example_store, micro=8, split="train", whole_word=False, seed=0):
    tok, folder, special, _ = example_store
    return PretrainingBatches(folder, split, micro, seed, MaskingSettings(whole_word=whole_word), special,
                              tok.vocab_size, shuffle=split == "train")


def test_caches_are_reused(example_store, corpus_file):
    tok, folder, _, cache = example_store
    again, _ = cached_tokenizer([corpus_file], 400, cache_dir=cache)
    assert again.get_vocab() == tok.get_vocab()
    assert cached_store([corpus_file], tok, ExampleSettings(max_seq_len=64, eval_fraction=0.1), cache_dir=cache) \
        == folder


def test_batch_contents(example_store):
    tok = example_store[0]
    batch = _dataset(example_store)[3]
    ids, mask, types, labels = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["labels"]
    assert ids.shape[0] == 8 and ids.shape[1] % 8 == 0 and ids.shape[1] <= 64
    assert batch["next_sentence_label"].shape == (8,) and set(batch["next_sentence_label"].tolist()) <= {0, 1}
    for row in range(8):
        n = int(mask[row].sum())
        original = torch.where(labels[row] != -100, labels[row], ids[row])
        assert original[0] == tok.cls_token_id and original[n - 1] == tok.sep_token_id
        seps = (original[:n] == tok.sep_token_id).nonzero().flatten().tolist()
        sep_a = seps[0]
        assert (types[row, :sep_a + 1] == 0).all() and (types[row, sep_a + 1:n] == 1).all()
        assert (types[row, n:] == 0).all() and (ids[row, n:] == tok.pad_token_id).all()
        assert (labels[row, n:] == -100).all() and labels[row, 0] == -100 and labels[row, sep_a] == -100
        assert (labels[row] != -100).sum() >= 1


def test_batches_depend_only_on_their_index(example_store):
    ds = _dataset(example_store)
    ds_again = _dataset(example_store)
    for j in (0, 5, ds.per_epoch + 2):  # the last one is in the second epoch
        a, b = ds[j], ds_again[j]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(ds[0]["input_ids"], ds[1]["input_ids"])
    epoch0 = set(ds.rows_of(0).tolist())
    assert len(epoch0) == 8
    seen = np.concatenate([ds.rows_of(j) for j in range(ds.per_epoch)])
    assert len(set(seen.tolist())) == len(seen)  # an epoch visits each example at most once


def test_workers_give_the_same_batches(example_store):
    ds = _dataset(example_store)
    indices = [4, 0, 9, 2, 7]
    serial = list(make_loader(ds, indices, num_workers=0))
    parallel = list(make_loader(ds, indices, num_workers=2))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(serial, parallel) for k in a)
    state = torch.get_rng_state()
    list(make_loader(ds, indices[:2], num_workers=1))
    assert torch.equal(state, torch.get_rng_state())  # the loader leaves the global RNG alone (exact resume)


def test_ranks_and_accumulation_consume_the_same_batches():
    one = micro_batch_indices(3, 6, accumulation=4, world_size=1, rank=0)
    two = [micro_batch_indices(3, 6, accumulation=2, world_size=2, rank=r) for r in range(2)]
    assert one == list(range(12, 24))
    for step in range(3):
        assert sorted(one[4 * step:4 * step + 4]) == sorted(two[0][2 * step:2 * step + 2] + two[1][2 * step:2 * step + 2])
    assert not set(two[0]) & set(two[1])  # each rank reads its own part


def test_eval_split_is_fixed_and_complete(example_store):
    ds = _dataset(example_store, split="eval")
    total = len(ds.store)
    assert sum(ds[j]["input_ids"].shape[0] for j in range(len(ds))) == total
    assert torch.equal(ds[0]["labels"], _dataset(example_store, split="eval")[0]["labels"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_corpus_too_small_for_a_batch(example_store):
    with pytest.raises(DataError, match="fewer than one micro-batch"):
        _dataset(example_store, micro=100_000)
