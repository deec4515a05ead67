import pytest

from bert_fast.errors import ConfigFileError
from bert_fast.training.config import PretrainConfig


def test_toml_round_trip(tmp_path):
    config = PretrainConfig()
    config.override("train.lr=3e-4")
    config.override('data.corpus=["a.txt", "b"]')
    config.override("model.size=tiny")  # a bare word is a string
    config.override("data.whole_word_masking=true")
    config.set("phase2.steps", 10)
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert PretrainConfig.from_file(path) == config


def test_file_sets_what_it_names(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('out = "runs/x"\n[train]\nsteps = 5\nlr = 1\n[data]\ncorpus = "one.txt"\n')
    config = PretrainConfig.from_file(path)
    assert config.out == "runs/x" and config.train.steps == 5 and config.train.lr == 1.0
    assert config.data.corpus == ["one.txt"] and config.train.batch_size == PretrainConfig().train.batch_size


@pytest.mark.parametrize("text, message", [
    ("[trian]\nsteps = 5\n", "unknown config table \\[trian\\]"),
    ("[train]\nstep = 5\n", "unknown setting 'train.step'"),
    ('[train]\nsteps = "many"\n', "train.steps = 'many': expected a int"),
    ("[train\n", "not valid TOML"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        PretrainConfig.from_file(path)


def test_bad_overrides():
    config = PretrainConfig()
    with pytest.raises(ConfigFileError, match="section.key=value"):
        config.override("train.steps")
    with pytest.raises(ConfigFileError, match="expected a bool"):
        config.override("data.lowercase=maybe")
    with pytest.raises(ConfigFileError, match="no config file"):
        PretrainConfig.from_file("/nonexistent/c.toml")
