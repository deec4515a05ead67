"""Hugging Face-format checkpoints: both directions with transformers, every naming variant, every broken folder."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

import bert_fast
from bert_fast import CheckpointError
from tests.model.conftest import hf_config, random_batch, tiny_config

transformers = pytest.importorskip("transformers")


def outputs_close(a, b, mask, tol=1e-5):
    real = mask.bool()
    return (a[real] - b[real]).abs().max().item() <= tol


@pytest.mark.parametrize("our_class, hf_class", [
    (bert_fast.BertModel, "BertModel"),
    (bert_fast.BertForPreTraining, "BertForPreTraining"),
    (bert_fast.BertForMaskedLM, "BertForMaskedLM"),
])
def test_ours_saves_and_transformers_loads(tmp_path, our_class, hf_class):
    config = tiny_config()
    ours = our_class(config, impl="reference").eval()
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, hf_class).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    theirs.eval()
    batch = random_batch(config)
    with torch.no_grad():
        a, b = ours(**batch), theirs(**batch)
    assert outputs_close(a[0], b[0], batch["attention_mask"])


def test_transformers_saves_and_ours_loads(tmp_path):
    config = tiny_config()
    theirs = transformers.BertForPreTraining(hf_config(config)).eval()
    theirs.save_pretrained(tmp_path)
    ours = bert_fast.BertForPreTraining.from_pretrained(tmp_path, impl="reference")
    assert ours.fresh_keys == []
    batch = random_batch(config)
    with torch.no_grad():
        assert outputs_close(ours(**batch).prediction_logits, theirs(**batch).prediction_logits,
                             batch["attention_mask"])
    # The bare encoder of the same checkpoint: `bert.` prefixes stripped, heads left unused.
    encoder = bert_fast.BertModel.from_pretrained(tmp_path, impl="reference")
    with torch.no_grad():
        assert outputs_close(encoder(**batch).last_hidden_state, theirs.bert(**batch).last_hidden_state,
                             batch["attention_mask"])


def test_round_trip_keeps_every_tensor(tmp_path):
    ours = bert_fast.BertForPreTraining(tiny_config())
    ours.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    # Hugging Face names, with the fused QKV split back and the tied decoder left out.
    assert "bert.encoder.layer.0.attention.self.query.weight" in stored
    assert not any("qkv" in k for k in stored)
    assert "cls.predictions.decoder.weight" not in stored
    back = bert_fast.BertForPreTraining.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForPreTraining"]


def test_pytorch_bin_with_prefix_and_buffers(tmp_path):
    config = tiny_config()
    source = bert_fast.BertModel(config)
    state = {f"bert.{k}": v for k, v in source.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    (tmp_path / "config.json").write_text(config.to_json_string())
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = bert_fast.BertModel.from_pretrained(tmp_path)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_old_gamma_beta_names_and_sharded_safetensors(tmp_path):
    config = tiny_config()
    source = bert_fast.BertModel(config)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v.clone()
             for k, v in source.state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for shard, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, tmp_path / shard)
    index = {"weight_map": {k: shard for shard, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(config.to_json_string())
    loaded = bert_fast.BertModel.from_pretrained(tmp_path)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_bare_encoder_into_pretraining_lists_fresh_heads(tmp_path, caplog):
    bert_fast.BertModel(tiny_config()).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bert_fast"):
        model = bert_fast.BertForPreTraining.from_pretrained(tmp_path)
    assert "cls.seq_relationship.weight" in model.fresh_keys
    assert "cls.predictions.transform.dense.weight" in model.fresh_keys
    assert not any(k.startswith("bert.encoder") for k in model.fresh_keys)
    assert "cls.seq_relationship.weight" in caplog.text


def test_dtype_and_impl_arguments(tmp_path):
    bert_fast.BertModel(tiny_config()).save_pretrained(tmp_path)
    model = bert_fast.BertModel.from_pretrained(tmp_path, impl="reference", dtype="bfloat16")
    assert model.impl == "reference" and next(model.parameters()).dtype == torch.bfloat16
    assert not model.training
    with pytest.raises(ValueError, match="dtype"):
        bert_fast.BertModel.from_pretrained(tmp_path, dtype="int8")


def _saved(tmp_path, config=None):
    config = config or tiny_config()
    bert_fast.BertModel(config).save_pretrained(tmp_path)
    return load_file(tmp_path / "model.safetensors")


def test_missing_encoder_weights_are_named(tmp_path):
    state = _saved(tmp_path)
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 encoder weights missing: encoder\.layer\.1\.output\.dense\.weight"):
        bert_fast.BertModel.from_pretrained(tmp_path)


def test_unexpected_encoder_weights_are_named(tmp_path):
    state = _saved(tmp_path)
    state["encoder.layer.7.output.dense.weight"] = torch.randn(2, 2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected encoder weights: encoder\.layer\.7"):
        bert_fast.BertModel.from_pretrained(tmp_path)


def test_mismatched_shapes_are_named(tmp_path):
    _saved(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight: checkpoint \(64, 32\) vs model \(48, 32\)"):
        bert_fast.BertModel.from_pretrained(tmp_path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        bert_fast.BertModel.from_pretrained(tmp_path / "nowhere")
    _saved(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot read"):
        bert_fast.BertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        bert_fast.BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        bert_fast.BertModel.from_pretrained(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A save that fails half way leaves the previous checkpoint readable and no stray temp files."""
    model = bert_fast.BertModel(tiny_config())
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def disk_full(fd):  # the bytes went to the temporary file; making them durable fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bert_fast.files.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        bert_fast.BertModel(tiny_config()).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
