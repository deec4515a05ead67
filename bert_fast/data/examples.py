"""Pretraining examples as in the BERT paper (and Google's create_pretraining_data.py).

Each example is a pair of segments, [CLS] A [SEP] B [SEP], filling up to max_seq_len tokens. A is one or more
consecutive sentences of a document; B is, half of the time, the sentences that follow A (is_random_next=0),
otherwise sentences from a random other document (is_random_next=1). With probability short_seq_prob the target
length is drawn uniformly from [2, max_seq_len - 3] instead, so the model also sees short inputs. A pair that is
too long loses tokens from its longer segment, from the front or the back at random ("longest first").

Tokens travel through example creation as `id << 1 | word_start`: the low bit marks the first piece of a word
(from the tokenizer's word ids), so whole-word masking can group a word's pieces at batch time.

For masked LM alone (no next sentence prediction, as RoBERTa pretrains) `random_next=False` keeps B the text that
follows A, always: each example is then one stretch of a document.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .corpus import Document

TOKENIZE_CHUNK = 8192  # sentences per tokenizer call


@dataclass
class TokenizedCorpus:
    """Every document's sentences as WordPiece tokens, in three flat arrays (compact for large corpora)."""

    tokens: np.ndarray  # (n_tokens,) int64: id << 1 | word_start
    sentence_offsets: np.ndarray  # (n_sentences + 1,) int64 into tokens
    doc_offsets: np.ndarray  # (n_docs + 1,) int64 into sentences

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def doc_tokens(self, d: int) -> int:
        s0, s1 = self.doc_offsets[d], self.doc_offsets[d + 1]
        return int(self.sentence_offsets[s1] - self.sentence_offsets[s0])

    def document(self, d: int) -> list[list[int]]:
        """The sentences of document d, each a list of packed tokens."""
        s0, s1 = int(self.doc_offsets[d]), int(self.doc_offsets[d + 1])
        offsets = self.sentence_offsets[s0:s1 + 1] - self.sentence_offsets[s0]
        flat = self.tokens[self.sentence_offsets[s0]:self.sentence_offsets[s1]].tolist()
        return [flat[offsets[i]:offsets[i + 1]] for i in range(s1 - s0)]


def tokenize_documents(docs: Sequence[Document], tokenizer) -> TokenizedCorpus:
    """WordPiece every sentence (no special tokens, no truncation). Sentences with no tokens and documents with
    no sentences left are dropped."""
    sentences = [s for doc in docs for s in doc]
    doc_of = np.repeat(np.arange(len(docs)), [len(doc) for doc in docs])
    token_chunks, lengths = [], []
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        encodings = tokenizer.encode_batch(sentences[start:start + TOKENIZE_CHUNK], truncation=False,
                                           add_special_tokens=False)
        for enc in encodings:
            ids = np.asarray(enc.ids, dtype=np.int64)
            words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            starts = np.ones(len(ids), dtype=np.int64)
            starts[1:] = words[1:] != words[:-1]
            token_chunks.append(ids << 1 | starts)
            lengths.append(len(ids))
    lengths = np.asarray(lengths, dtype=np.int64)
    keep = lengths > 0
    tokens = np.concatenate([t for t, k in zip(token_chunks, keep) if k]) if keep.any() else np.zeros(0, np.int64)
    sentence_offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
    kept_docs = doc_of[keep]
    sentences_per_doc = np.bincount(kept_docs, minlength=len(docs))
    sentences_per_doc = sentences_per_doc[sentences_per_doc > 0]
    doc_offsets = np.concatenate([[0], np.cumsum(sentences_per_doc)]).astype(np.int64)
    return TokenizedCorpus(tokens, sentence_offsets.astype(np.int64), doc_offsets)


@dataclass
class Example:
    tokens_a: list[int]  # packed tokens
    tokens_b: list[int]
    is_random_next: bool


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Longest first: drop one token at a time from the longer segment, at its front or back at random."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_examples_from_document(corpus: TokenizedCorpus, doc_index: int, candidates: Sequence[int],
                                  max_seq_len: int, short_seq_prob: float, rng: random.Random,
                                  random_next: bool = True) -> list[Example]:
    """Google's create_instances_from_document. `candidates` are the documents a random B may come from; with
    random_next=False B always continues A (a one-sentence stretch is cut in two)."""
    document = corpus.document(doc_index)
    max_num_tokens = max_seq_len - 3  # [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    examples = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        chunk.append(segment)
        chunk_length += len(segment)
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for seg in chunk[:a_end] for t in seg]
            tokens_b: list[int] = []
            others = len(candidates) > 1 or (len(candidates) == 1 and candidates[0] != doc_index)
            if not random_next and len(chunk) == 1:
                cut = rng.randint(1, len(tokens_a) - 1) if len(tokens_a) >= 2 else len(tokens_a)
                tokens_a, tokens_b, is_random_next = tokens_a[:cut], tokens_a[cut:], False
            elif random_next and others and (len(chunk) == 1 or rng.random() < 0.5):
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                for _ in range(10):
                    random_doc = candidates[rng.randint(0, len(candidates) - 1)]
                    if random_doc != doc_index:
                        break
                other = corpus.document(random_doc)
                for j in range(rng.randint(0, len(other) - 1), len(other)):
                    tokens_b.extend(other[j])
                    if len(tokens_b) >= target_b_length:
                        break
                # The segments not used as A go back to the document for the next example.
                i -= len(chunk) - a_end
            else:
                is_random_next = False
                tokens_b = [t for seg in chunk[a_end:] for t in seg]
            if tokens_b:
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                examples.append(Example(tokens_a, tokens_b, is_random_next))
            chunk = []
            chunk_length = 0
        i += 1
    return examples


def assemble(examples: Sequence[Example], max_seq_len: int, cls_id: int, sep_id: int, pad_id: int,
             dtype=np.uint16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows for the shard store: ids (n, S) [CLS] A [SEP] B [SEP] then padding; meta (n, 3) int32 (length,
    len_a, is_random_next); word starts (n, S) bool, true at specials and at every segment's first token."""
    n = len(examples)
    ids = np.full((n, max_seq_len), pad_id, dtype=dtype)
    starts = np.ones((n, max_seq_len), dtype=bool)
    meta = np.zeros((n, 3), dtype=np.int32)
    for r, ex in enumerate(examples):
        a = np.asarray(ex.tokens_a, dtype=np.int64)
        b = np.asarray(ex.tokens_b, dtype=np.int64)
        la, lb = len(a), len(b)
        length = la + lb + 3
        ids[r, 0] = cls_id
        ids[r, 1:1 + la] = a >> 1
        ids[r, 1 + la] = sep_id
        ids[r, 2 + la:2 + la + lb] = b >> 1
        ids[r, 2 + la + lb] = sep_id
        starts[r, 1:1 + la] = (a & 1).astype(bool)
        starts[r, 2 + la:2 + la + lb] = (b & 1).astype(bool)
        starts[r, 1] = starts[r, 2 + la] = True  # a segment cut at its front still starts a word group
        meta[r] = (length, la, int(ex.is_random_next))
    return ids, meta, starts
