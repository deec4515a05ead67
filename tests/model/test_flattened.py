"""Flattened batches (transformers' DataCollatorWithFlattening): the numbers of the padded batch, through our
BertModel.forward and through a patched transformers model, and training with a transformers Trainer."""

import pytest
import torch
from packaging.version import Version

import bert_fast
from bert_fast.inputs import InputError
from tests.model.conftest import hf_config, random_batch, tiny_config

TOL = 1e-5


def _flatten(batch):
    """A padded batch as DataCollatorWithFlattening lays it out: (1, tokens), positions restarting per sequence."""
    lengths = batch["attention_mask"].sum(1).tolist()
    real = batch["attention_mask"].bool()
    flat = {"input_ids": batch["input_ids"][real][None], "token_type_ids": batch["token_type_ids"][real][None],
            "position_ids": torch.cat([torch.arange(n) for n in lengths])[None]}
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return flat, cu_seqlens, lengths


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("how", ["position_ids", "cu_seqlens"])
def test_our_forward_takes_a_flattened_batch(impl, how):
    config = tiny_config()
    model = bert_fast.BertModel(config, impl=impl).eval()
    batch = random_batch(config, batch=4, seq=13, lengths=[13, 1, 6, 9])
    flat, cu_seqlens, lengths = _flatten(batch)
    if how == "cu_seqlens":  # positions then default to 0.. per sequence
        flat = {"input_ids": flat["input_ids"], "token_type_ids": flat["token_type_ids"], "cu_seqlens": cu_seqlens}
    with torch.no_grad():
        padded = model(**batch, output_hidden_states=True)
        out = model(**flat, output_hidden_states=True)
        packed = model(**flat, return_packed=True)
    real = batch["attention_mask"].bool()
    assert out.last_hidden_state.shape == (1, sum(lengths), config.hidden_size)
    torch.testing.assert_close(out.last_hidden_state[0], padded.last_hidden_state[real], rtol=TOL, atol=TOL)
    torch.testing.assert_close(out.pooler_output, padded.pooler_output, rtol=TOL, atol=TOL)  # one per sequence
    for h_flat, h_padded in zip(out.hidden_states, padded.hidden_states):
        torch.testing.assert_close(h_flat[0], h_padded[real], rtol=TOL, atol=TOL)
    assert torch.equal(packed.cu_seqlens.cpu(), cu_seqlens) and packed.last_hidden_state.shape[0] == sum(lengths)


def test_an_ordinary_single_row_is_not_taken_for_a_flattened_one():
    config = tiny_config()
    model = bert_fast.BertModel(config, impl="reference").eval()
    ids = torch.randint(1, config.vocab_size, (1, 9))
    with torch.no_grad():
        plain = model(ids).last_hidden_state
        explicit = model(ids, position_ids=torch.arange(9)[None]).last_hidden_state
        shifted = model(ids, position_ids=torch.arange(3, 12)[None]).last_hidden_state  # no restart: one sequence
    assert torch.equal(plain, explicit) and shifted.shape == plain.shape and not torch.allclose(shifted, plain)
    with pytest.raises(InputError, match="must be one row"):
        model(torch.randint(1, 9, (2, 4)), cu_seqlens=torch.tensor([0, 4, 8], dtype=torch.int32))
    with pytest.raises(InputError, match="attention_mask must be all ones"):
        model(ids, attention_mask=torch.tensor([[1] * 8 + [0]]), cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32))
    with pytest.raises(InputError, match="cu_seqlens must rise from 0"):
        model(ids, cu_seqlens=torch.tensor([0, 4, 8], dtype=torch.int32))


transformers = pytest.importorskip("transformers")


def _collated(batch, **collator_options):
    """The padded batch's sequences through transformers' own DataCollatorWithFlattening."""
    from transformers import DataCollatorWithFlattening

    real = batch["attention_mask"].bool()
    features = [{"input_ids": batch["input_ids"][i][real[i]].tolist()} for i in range(len(real))]
    collated = DataCollatorWithFlattening(**collator_options)(features, return_tensors="pt")
    collated.pop("labels")
    return collated


# transformers itself splits a row at restarting position_ids under sdpa in 5.25 (the newest, checked here); 5.17, the
# GPU image's, attends across the restarts. The comparison with unpatched transformers runs where it can hold.
TRANSFORMERS_READS_RESTARTING_POSITIONS = Version(transformers.__version__) >= Version("5.25")


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("options", [{}, {"return_flash_attn_kwargs": True, "return_position_ids": False},
                                     {"return_seq_idx": True, "return_position_ids": False}],
                         ids=["position_ids", "flash_kwargs", "seq_idx"])
def test_patched_model_takes_transformers_flattened_batches(impl, options):
    """The collator's layout gives the padded batch's states, patched; and unpatched, where transformers itself
    reads restarting position ids."""
    config = tiny_config()
    model = transformers.BertModel(hf_config(config, "sdpa"), add_pooling_layer=False).eval()
    batch = random_batch(config, batch=3, seq=12, pair=False)  # the collator keeps no token types
    real = batch["attention_mask"].bool()
    flat = _collated(batch, **options)
    with torch.no_grad():
        expected = model(**batch).last_hidden_state[real]
        if "position_ids" in flat and TRANSFORMERS_READS_RESTARTING_POSITIONS:
            unpatched = model(**flat).last_hidden_state[0]
            torch.testing.assert_close(unpatched, expected, rtol=TOL, atol=TOL)
        bert_fast.patch(model, impl=impl)
        calls = []
        shadow = model.__dict__["_bert_fast_shadow"]
        original = shadow.forward_packed
        shadow.forward_packed = lambda *a, **k: calls.append(1) or original(*a, **k)
        patched = model(**flat).last_hidden_state
    assert calls, "the fused encoder served the flattened call"
    assert patched.shape == (1, int(real.sum()), config.hidden_size)
    torch.testing.assert_close(patched[0], expected, rtol=TOL, atol=TOL)


def test_a_transformers_trainer_fine_tunes_a_patched_model_without_padding(tmp_path):
    pytest.importorskip("accelerate")
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    config = tiny_config(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForTokenClassification(hf_config(config, "sdpa"))
    twin = transformers.BertForTokenClassification(hf_config(config, "sdpa"))
    twin.load_state_dict(model.state_dict())
    bert_fast.patch(model, impl="reference")
    served = []
    shadow = model.bert.__dict__["_bert_fast_shadow"]
    original = shadow.forward_packed
    shadow.forward_packed = lambda *a, **k: served.append(a[0].shape) or original(*a, **k)

    generator = torch.Generator().manual_seed(0)
    lengths = [9, 4, 12, 7, 3, 11, 6, 8]
    data = [{"input_ids": torch.randint(5, config.vocab_size, (n,), generator=generator).tolist(),
             "labels": torch.randint(0, 3, (n,), generator=generator).tolist()} for n in lengths]
    collator = DataCollatorWithFlattening()
    # The first batch's loss, patched and flattened, is the unpatched model's on the padded batch.
    flat = collator(data[:4], return_tensors="pt")
    width = max(lengths[:4])
    padded = {"input_ids": torch.tensor([d["input_ids"] + [0] * (width - len(d["input_ids"])) for d in data[:4]]),
              "attention_mask": torch.tensor([[1] * len(d["input_ids"]) + [0] * (width - len(d["input_ids"]))
                                              for d in data[:4]]),
              "labels": flat["labels"].new_tensor([[-100] + d["labels"][1:] + [-100] * (width - len(d["labels"]))
                                                   for d in data[:4]])}
    with torch.no_grad():
        torch.testing.assert_close(model(**flat).loss, twin(**padded).loss, rtol=1e-5, atol=1e-6)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                             report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, remove_unused_columns=False,
                             dataloader_num_workers=0)
    served.clear()
    result = Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert len(served) == 2 and all(len(shape) == 1 for shape in served)  # two steps, each on flat tokens
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
