"""Each bad input is a clear error that names the problem."""

import pytest
import torch

import bert_fast
from bert_fast import InputError
from tests.model.conftest import random_batch, tiny_config


@pytest.fixture(scope="module")
def model():
    return bert_fast.BertModel(tiny_config(), impl="reference").eval()


def test_ids_outside_the_vocabulary(model):
    batch = random_batch(model.config)
    batch["input_ids"][1, 0] = model.config.vocab_size
    with pytest.raises(InputError, match="outside the vocabulary"):
        model(**batch)


def test_negative_ids(model):
    batch = random_batch(model.config)
    batch["input_ids"][0, 3] = -1
    with pytest.raises(InputError, match="negative id"):
        model(**batch)


def test_sequence_longer_than_positions(model):
    ids = torch.randint(0, model.config.vocab_size, (1, model.config.max_position_embeddings + 1))
    with pytest.raises(InputError, match="longer than the model's 64 positions"):
        model(ids)


def test_attention_mask_shape(model):
    batch = random_batch(model.config, seq=10)
    batch["attention_mask"] = batch["attention_mask"][:, :9]
    with pytest.raises(InputError, match=r"attention_mask has shape \(3, 9\) but input_ids has \(3, 10\)"):
        model(**batch)


def test_additive_masks_are_refused(model):
    batch = random_batch(model.config)
    batch["attention_mask"] = (1.0 - batch["attention_mask"].float()) * -10000.0
    with pytest.raises(InputError, match="additive mask"):
        model(**batch)


def test_token_types_outside_the_type_vocabulary(model):
    batch = random_batch(model.config)
    batch["token_type_ids"][0, 0] = 2
    with pytest.raises(InputError, match="token_type_ids holds 2; the model has 2 token types"):
        model(**batch)


def test_position_ids_outside_the_table(model):
    batch = random_batch(model.config)
    batch["position_ids"] = torch.full_like(batch["input_ids"], model.config.max_position_embeddings)
    with pytest.raises(InputError, match="position_ids holds 64"):
        model(**batch)


def test_wrong_dtypes(model):
    batch = random_batch(model.config)
    with pytest.raises(InputError, match="input_ids must hold integer ids"):
        model(batch["input_ids"].float())
    with pytest.raises(InputError, match=r"input_ids must have shape \(batch, seq\)"):
        model(batch["input_ids"][0])


def test_device_mix_of_inputs(model):
    batch = random_batch(model.config)
    batch["attention_mask"] = batch["attention_mask"].to("meta")
    with pytest.raises(InputError, match="attention_mask is on meta but the model is on cpu"):
        model(**batch)
