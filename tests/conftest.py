"""Test set-up shared by every test folder.

Without a GPU, Triton kernels run under Triton's interpreter. The variable must be set before any kernel
module is imported (triton.jit reads it when it decorates), so it is set here, at collection time.
"""

import os

import pytest
import torch

pytest_plugins = ["pytester"]

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


SEED_VARIABLE = "BERT_FAST_TEST_SEED"


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Every test draws fresh random inputs; a failure prints the seed it drew them from, and setting
    BERT_FAST_TEST_SEED to that seed replays them."""
    seed = int(os.environ.get(SEED_VARIABLE) or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    seed = dict(item.user_properties).get("torch_seed")
    if report.failed and seed is not None:
        replay = f"{SEED_VARIABLE}={seed} python -m pytest '{item.nodeid}'"
        report.sections.append(("torch seed", f"inputs drawn from torch seed {seed}; replay with {replay}"))
