import pytest

from tests.finetune.finetune_fixtures import write_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random 2-layer BERT + WordPiece vocabulary trained on the fixture texts, as a Hugging Face folder."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))
