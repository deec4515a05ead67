import random

import numpy as np
import pytest

from bert_fast.data.corpus import read_documents
from bert_fast.data.examples import (
    assemble,
    create_examples_from_document,
    tokenize_documents,
    truncate_seq_pair,
)


@pytest.fixture(scope="module")
def corpus(corpus_file, tokenizer):
    docs, _ = read_documents([corpus_file])
    return tokenize_documents(docs, tokenizer)


def _all_examples(corpus, seq_len, short_seq_prob=0.1, seed=0, dupe=3):
    rng = random.Random(seed)
    docs = list(range(corpus.n_docs))
    return [ex for _ in range(dupe) for d in docs
            for ex in create_examples_from_document(corpus, d, docs, seq_len, short_seq_prob, rng)]


def test_tokenized_corpus_matches_the_tokenizer(corpus, tokenizer, corpus_file):
    docs, _ = read_documents([corpus_file])
    assert corpus.n_docs == len(docs)
    for d in (0, 7, corpus.n_docs - 1):
        sentences = corpus.document(d)
        assert len(sentences) == len(docs[d])
        for packed, text in zip(sentences, docs[d]):
            enc = tokenizer.encode_batch([text], add_special_tokens=False, truncation=False)[0]
            assert [t >> 1 for t in packed] == enc.ids
            word_ids = enc.word_ids
            starts = [1] + [int(word_ids[i] != word_ids[i - 1]) for i in range(1, len(word_ids))]
            assert [t & 1 for t in packed] == starts


def test_truncate_longest_first():
    rng = random.Random(0)
    a, b = list(range(10)), list(range(100, 103))
    truncate_seq_pair(a, b, 8, rng)
    assert len(a) == 5 and len(b) == 3  # only the longer segment lost tokens
    a, b = list(range(6)), list(range(100, 106))
    truncate_seq_pair(a, b, 7, rng)
    assert sorted([len(a), len(b)]) == [3, 4]
    # What is left of each segment is a contiguous run: tokens go from the front or the back.
    for seg, first in ((a, 0), (b, 100)):
        assert seg == list(range(seg[0], seg[0] + len(seg))) and seg[0] >= first


@pytest.mark.parametrize("seq_len", [32, 64])
def test_examples_fill_and_respect_seq_len(corpus, seq_len):
    examples = _all_examples(corpus, seq_len)
    lengths = np.array([len(e.tokens_a) + len(e.tokens_b) + 3 for e in examples])
    assert lengths.max() <= seq_len
    assert all(e.tokens_a and e.tokens_b for e in examples)
    # Most examples fill the sequence; about 10% target a shorter random length.
    assert (lengths >= seq_len - 8).mean() > 0.6


def test_nsp_balance_and_actual_next_is_the_continuation(corpus):
    examples = _all_examples(corpus, 64, dupe=5)
    random_share = np.mean([e.is_random_next for e in examples])
    assert 0.45 <= random_share <= 0.58, random_share
    # An actual-next pair that was not truncated is a contiguous run of its document's tokens.
    streams = [[t for s in corpus.document(d) for t in s] for d in range(corpus.n_docs)]
    checked = 0
    for ex in examples:
        if ex.is_random_next or len(ex.tokens_a) + len(ex.tokens_b) >= 61:
            continue
        run = ex.tokens_a + ex.tokens_b
        assert any(_contains(s, run) for s in streams)
        checked += 1
    assert checked > 20


def _contains(stream, run):
    n = len(run)
    first = run[0]
    return any(stream[i:i + n] == run for i in range(len(stream) - n + 1) if stream[i] == first)


def test_short_sequence_probability(corpus):
    # A document's target length is drawn from [2, max] with probability short_seq_prob: compare 1 with 0.
    short = sum(
        len(e.tokens_a) + len(e.tokens_b) < 40
        for e in _all_examples(corpus, 128, short_seq_prob=1.0, dupe=2)
    )
    never = sum(
        len(e.tokens_a) + len(e.tokens_b) < 40
        for e in _all_examples(corpus, 128, short_seq_prob=0.0, dupe=2)
    )
    assert short > 3 * max(never, 1)


def test_assemble_layout(corpus, tokenizer):
    examples = _all_examples(corpus, 48, dupe=1)[:20]
    ids, meta, starts = assemble(examples, 48, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                 tokenizer.pad_token_id)
    for row, ex in enumerate(examples):
        la, lb = len(ex.tokens_a), len(ex.tokens_b)
        assert tuple(meta[row]) == (la + lb + 3, la, int(ex.is_random_next))
        expected = [tokenizer.cls_token_id] + [t >> 1 for t in ex.tokens_a] + [tokenizer.sep_token_id] + \
            [t >> 1 for t in ex.tokens_b] + [tokenizer.sep_token_id]
        assert ids[row, :la + lb + 3].tolist() == expected
        assert (ids[row, la + lb + 3:] == tokenizer.pad_token_id).all()
        assert starts[row, 0] and starts[row, 1] and starts[row, la + 1] and starts[row, la + 2]
