import pytest
import torch
from finetune_fixtures import write_tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny models here run fastest on one thread, and do not fight other test processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random 2-layer BERT + WordPiece vocabulary trained on the fixture texts, as a Hugging Face folder."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))
