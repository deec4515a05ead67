"""Static-shape batches (bert_fast.buckets): buckets change no number, and a bucketed forward has no host sync and
no data-dependent shape, so torch.compile traces it as one graph."""

import pytest
import torch

import bert_fast
from bert_fast.buckets import bucket_of, inference_bucket, pack_batch, training_bucket
from bert_fast.inference import _cut
from tests.model.conftest import random_batch, tiny_config

CONFIG = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_hidden_layers": 1}


def _labelled_batch(config, kind, batch=3, seq=13, lengths=(13, 1, 6)):
    data = random_batch(config, batch=batch, seq=seq, lengths=list(lengths))
    real = data["attention_mask"].bool()
    if kind == "pretraining":
        labels = torch.where(torch.rand(batch, seq) < 0.4, data["input_ids"], -100).masked_fill(~real, -100)
        labels[0, 0] = data["input_ids"][0, 0]
        data.update(labels=labels, next_sentence_label=torch.tensor([1, 0, 1]))
    elif kind == "classification":
        data["labels"] = torch.randint(0, config.num_labels, (batch,))
    elif kind == "tagging":
        data["labels"] = torch.randint(0, config.num_labels, (batch, seq)).masked_fill(~real, -100)
    elif kind == "qa":
        data.update(start_positions=torch.tensor([3, 0, 9]), end_positions=torch.tensor([5, 0, 12]))
    elif kind == "choice":
        data = {k: v.view(1, batch, seq) for k, v in data.items()}  # one example, three choices
        data["labels"] = torch.tensor([2])
    return data


MODELS = {
    "pretraining": bert_fast.BertForPreTraining,
    "classification": bert_fast.BertForSequenceClassification,
    "tagging": bert_fast.BertForTokenClassification,
    "qa": bert_fast.BertForQuestionAnswering,
    "choice": bert_fast.BertForMultipleChoice,
}


def test_training_buckets():
    bucket = training_bucket([100, 3, 64], width=128, masked=25, token_multiple=32, masked_multiple=8)
    assert (bucket.batch, bucket.width, bucket.tokens, bucket.masked) == (3, 128, 192, 32)
    assert training_bucket([100, 3, 64], width=128).tokens == 192  # a sixteenth of 3 x 128 is 24: 64 at least
    assert training_bucket([5, 3], width=128) is None  # 64 tokens for 8 real ones: run eagerly
    assert training_bucket([5, 3], width=128, max_ratio=10) is not None


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_bucketed_step_matches_unbucketed(kind, impl):
    """The same loss and gradients, to fp32 rounding, whatever the bucket adds (filler tokens, a wider width,
    spare MLM positions)."""
    if impl == "reference" and kind not in ("pretraining", "tagging"):
        pytest.skip("the reference path is covered by two heads; the layouts are shared")
    config = tiny_config(**CONFIG, num_labels=2 if kind == "qa" else 3)
    model = MODELS[kind](config, impl=impl).train()
    data = _labelled_batch(config, kind)
    bucket = bucket_of(data, mlm=kind == "pretraining", token_multiple=8, masked_multiple=4)
    bucket = type(bucket)(bucket.batch, bucket.width + 5, bucket.tokens + 8, bucket.masked + 4, bucket.choices)
    static = pack_batch(data, bucket, config.pad_token_id, mlm=kind == "pretraining", config=config)

    plain = model(**data)
    grads = torch.autograd.grad(plain.loss, list(model.parameters()), allow_unused=True)
    bucketed = model(**static.model_inputs())
    static_grads = torch.autograd.grad(bucketed.loss, list(model.parameters()), allow_unused=True)
    assert abs(bucketed.loss.item() - plain.loss.item()) <= 1e-5 * max(1.0, abs(plain.loss.item()))
    for (name, _), a, b in zip(model.named_parameters(), grads, static_grads):
        if a is None:
            assert b is None or not b.any(), name
            continue
        assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item()), name


def test_a_batch_that_does_not_fit_its_bucket_is_refused():
    config = tiny_config()
    data = random_batch(config, batch=3, seq=13, lengths=[13, 1, 6])
    with pytest.raises(ValueError, match="real tokens do not fit"):
        pack_batch(data, training_bucket([2, 2, 2], width=13, token_multiple=8), config.pad_token_id)
    with pytest.raises(ValueError, match="does not fit"):
        pack_batch(data, training_bucket([13, 1, 6], width=8, token_multiple=8), config.pad_token_id)
    data["input_ids"][0, 0] = config.vocab_size  # checked on the host, where the batch is packed
    with pytest.raises(bert_fast.InputError, match="outside the vocabulary"):
        pack_batch(data, inference_bucket([13, 1, 6]), config.pad_token_id, config=config)


@pytest.mark.parametrize("kind", list(MODELS))
def test_inference_bucket_serves_every_head(kind):
    """A head's outputs on an inference bucket (more sequence slots and tokens than the batch), cut to the batch,
    are the head's outputs on the batch itself."""
    config = tiny_config(**CONFIG, num_labels=2 if kind == "qa" else 3)
    model = MODELS[kind](config, impl="triton").eval()
    data = {k: v for k, v in _labelled_batch(config, kind).items() if k in ("input_ids", "attention_mask",
                                                                            "token_type_ids")}
    ids = data["input_ids"]
    lengths = data["attention_mask"].reshape(-1, ids.shape[-1]).sum(1).tolist()
    bucket = inference_bucket(lengths, width_multiple=16, min_tokens=32, choices=ids.shape[1] if kind == "choice"
                              else 1)
    static = pack_batch(data, bucket, config.pad_token_id, config=config)
    with torch.no_grad():
        out = _cut(model(**static.model_inputs()), bucket, static.real_batch, static.real_width)
        ref = model(**data)
    mask = data["attention_mask"].bool()
    for name, value in vars(ref).items():
        if not isinstance(value, torch.Tensor):
            continue
        got = getattr(out, name)
        assert got.shape == value.shape, name
        if kind in ("tagging", "qa", "pretraining") and value.dim() >= 2 and value.shape[:2] == mask.shape:
            got, value = got[mask], value[mask]  # per token: the real positions
        assert (got - value).abs().max() <= 1e-5, name


def _traced_without_breaks(fn, *args):
    """fn compiles with fullgraph=True and dynamo's data-dependent capture settings off, and explain() finds no
    graph break: no host sync (.item(), .tolist()) and no data-dependent shape (nonzero, boolean indexing)."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False, capture_scalar_outputs=False):
        explanation = torch._dynamo.explain(fn)(*args)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        torch._dynamo.reset()
        return torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)


def test_bucketed_training_forward_and_loss_trace_as_one_graph():
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # seeds drawn on the device
    model = bert_fast.BertForPreTraining(config, impl="triton").train()
    data = _labelled_batch(config, "pretraining")
    static = pack_batch(data, bucket_of(data, mlm=True, token_multiple=8), config.pad_token_id, mlm=True)

    def loss(inputs):
        return model(**inputs).loss

    out = _traced_without_breaks(loss, static.model_inputs())
    out.backward()
    assert torch.isfinite(out) and model.bert.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("kind", ["encoder", "qa"])
def test_inference_call_traces_as_one_graph(kind):
    config = tiny_config(num_labels=2)
    model = (bert_fast.BertModel if kind == "encoder" else bert_fast.BertForQuestionAnswering)(config, impl="triton")
    model.eval()
    data = random_batch(config, batch=3, seq=13, lengths=[13, 1, 6])
    static = pack_batch(data, inference_bucket([13, 1, 6]), config.pad_token_id)

    def infer(inputs):
        out = model(**inputs)
        return out.last_hidden_state if kind == "encoder" else out.start_logits

    with torch.no_grad():
        traced = _traced_without_breaks(infer, static.model_inputs())
        assert torch.equal(traced, infer(static.model_inputs()))


def test_the_unbucketed_path_does_break_the_graph():
    """The check above can fail: the dynamic path (nonzero when packing) is caught by it."""
    config = tiny_config()
    model = bert_fast.BertModel(config, impl="triton").eval()
    data = random_batch(config, batch=3, seq=13, lengths=[13, 1, 6])
    with pytest.raises(AssertionError), torch.no_grad():
        _traced_without_breaks(lambda d: model(**d).last_hidden_state, data)


def test_device_seeded_dropout_draws_fresh_masks_and_reproduces_them():
    """Training-mode forwards on the fused path draw new dropout masks every call, from seeds drawn on the device,
    and torch.manual_seed reproduces them."""
    config = tiny_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model = bert_fast.BertModel(config, impl="triton").train()
    data = random_batch(config, batch=3, seq=13, lengths=[13, 1, 6])
    real = data["attention_mask"].bool()
    with torch.no_grad():
        torch.manual_seed(5)
        first, second = model(**data).last_hidden_state[real], model(**data).last_hidden_state[real]
        torch.manual_seed(5)
        again = model(**data).last_hidden_state[real]
    assert not torch.equal(first, second)
    assert torch.equal(first, again)
