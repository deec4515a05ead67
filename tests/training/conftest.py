from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Tokenizers and example stores shared by the training tests (built once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(corpus_file, cache_dir, tmp_path):
    """A run that takes a second or two on the CPU: BERT-tiny, a 400-piece vocabulary, sequences of 64."""
    from bert_fast.training.config import PretrainConfig

    config = PretrainConfig()
    config.out = str(tmp_path / "run")
    config.model.size = "tiny"
    config.data.corpus = [str(corpus_file)]
    config.data.vocab_size = 400
    config.data.seq_len = 64
    config.data.num_workers = 0
    config.data.cache_dir = str(cache_dir)
    config.data.eval_fraction = 0.1
    config.train.steps = 8
    config.train.batch_size = 8
    config.train.lr = 1e-3
    config.train.warmup_steps = 2
    config.train.log_every = 1
    config.train.eval_every = 4
    config.train.eval_batches = 2
    config.train.checkpoint_every = 4
    config.train.progress = False
    config.train.tensorboard = False
    return config
