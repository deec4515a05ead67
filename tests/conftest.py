"""Test set-up shared by every test folder.

Without a GPU, Triton kernels run under Triton's interpreter. The variable must be set before any kernel
module is imported (triton.jit reads it when it decorates), so it is set here, at collection time.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one intra-op thread is faster than two, and on a busy machine far faster, since
    OpenMP threads then spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small synthetic corpus in BERT's format (documents of sentences), shared by data and training tests."""
    from tests.data.synthetic_corpus import documents, write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", documents())


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Every test draws fresh random inputs, but a failure can be replayed from the seed it prints."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))
    yield
