import json

import pytest

from bert_fast import BertConfig, ConfigError
from bert_fast.config import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_follow_the_paper(name):
    layers, hidden, heads = PRESETS[name]
    config = BertConfig.preset(name)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, heads)
    assert config.intermediate_size == 4 * hidden
    assert config.vocab_size == 30522 and config.max_position_embeddings == 512 and config.type_vocab_size == 2
    assert config.hidden_dropout_prob == 0.1 and config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"


def test_base_and_large_sizes():
    assert PRESETS["base"] == (12, 768, 12) and PRESETS["large"] == (24, 1024, 16)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "not divisible"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"pad_token_id": 40000}, "pad_token_id"),
    ],
)
def test_inconsistent_configs_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BertConfig(**overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown model size"):
        BertConfig.preset("huge")


@pytest.mark.parametrize("act, approximate", [("gelu", "none"), ("gelu_new", "tanh"), ("gelu_pytorch_tanh", "tanh")])
def test_activations(act, approximate):
    assert BertConfig(hidden_act=act).gelu_approximate == approximate


def test_round_trip_through_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = BertConfig.preset("mini", num_labels=3, hidden_act="gelu_new")
    (tmp_path / "config.json").write_text(ours.to_json_string())
    theirs = transformers.BertConfig.from_pretrained(tmp_path)
    assert theirs.hidden_size == 256 and theirs.num_hidden_layers == 4 and theirs.num_attention_heads == 4
    assert theirs.num_labels == 3 and theirs.hidden_act == "gelu_new"
    theirs.save_pretrained(tmp_path / "hf")
    back = BertConfig.from_json_file(tmp_path / "hf" / "config.json")
    assert (back.hidden_size, back.num_labels, back.hidden_act) == (256, 3, "gelu_new")
    # Keys we do not interpret survive a round trip.
    assert "transformers_version" in back.to_dict()


def test_non_bert_configs_are_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "deberta-v2"}))  # the BERT family is served (tests/families)
    with pytest.raises(ConfigError, match="deberta-v2"):
        BertConfig.from_json_file(path)
    path.write_text(json.dumps({"position_embedding_type": "relative_key"}))
    with pytest.raises(ConfigError, match="relative_key"):
        BertConfig.from_json_file(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertConfig.from_json_file(path)
