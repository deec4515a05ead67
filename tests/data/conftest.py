import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_corpus import documents, write_corpus


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", documents())


@pytest.fixture(scope="session")
def tokenizer(corpus_file):
    from bert_fast.data.prepare import train_tokenizer

    tok, _ = train_tokenizer([corpus_file], vocab_size=400)
    return tok


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run tiny models: one intra-op thread is faster than two (and far faster on a busy machine,
    where OpenMP threads spin against each other)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
