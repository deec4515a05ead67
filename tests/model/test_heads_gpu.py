"""Task heads on the fast path (packed tokens, Triton kernels) against the reference, on a GPU in bf16.

Three results per check (shared/STYLE.md): the fast path in bf16 (`out`), the reference path in bf16 (`out_pt`)
and the reference in float64 (`out_ref`), on the same weights and a ragged batch. Outputs at real positions and
the gradients of the head and of one encoder layer must be within twice the reference's own bf16 error.
"""

import pytest
import torch
from tolerance import assert_within_pytorch_error

import bert_fast
from bert_fast import heads

pytestmark = pytest.mark.gpu

HEADS = ["BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
         "BertForMultipleChoice"]


def ragged_batch(batch, seq, vocab, lead=()):
    shape = (*lead, batch, seq)
    lengths = torch.randint(1, seq + 1, shape[:-1])
    lengths.view(-1)[0], lengths.view(-1)[-1] = seq, 1
    mask = (torch.arange(seq) < lengths.unsqueeze(-1)).long()
    ids = torch.randint(1, vocab, shape).masked_fill(mask == 0, 0)
    types = torch.randint(0, 2, shape).masked_fill(mask == 0, 0)
    return [t.cuda() for t in (ids, types, mask)]


def run(model, ids, types, mask, probe):
    """The head's main output at real positions, and gradients of a random projection of it."""
    model.zero_grad(set_to_none=True)
    out = model(ids, mask, types)
    logits = out.logits if hasattr(out, "logits") and out.logits is not None else torch.stack(
        [out.start_logits, out.end_logits], dim=-1)
    if logits.dim() >= 3 or (logits.dim() == 2 and logits.shape == mask.shape):  # token level: real positions
        logits = logits[mask.bool()]
    (logits.float() * probe[: logits.numel()].view_as(logits)).sum().backward()
    head = model.classifier if hasattr(model, "classifier") else model.qa_outputs
    layer = model.bert.encoder.layer[0]
    grads = {"head.weight": head.weight.grad, "layer0.qkv.weight": layer.attention.self.qkv.weight.grad,
             "layer0.output.dense.weight": layer.output.dense.weight.grad}
    return logits.detach(), {k: v.detach() for k, v in grads.items()}


@pytest.mark.parametrize("name", HEADS)
def test_fast_path_heads_within_bf16_error(name):
    config = bert_fast.BertConfig.preset("mini", vocab_size=1000, num_labels=2 if name != "BertForTokenClassification"
                                         else 7)
    cls = getattr(heads, name)
    base = cls(config, impl="reference").eval()
    lead = (3,) if name == "BertForMultipleChoice" else ()
    ids, types, mask = ragged_batch(5, 129, config.vocab_size, lead)
    probe = torch.randn(10_000_000, device="cuda")

    ref_model = cls(config, impl="reference").cuda().double().eval()
    ref_model.load_state_dict(base.state_dict())
    out_ref, grads_ref = run(ref_model, ids, types, mask, probe)
    pt_model = cls(config, impl="reference").cuda().to(torch.bfloat16).eval()
    pt_model.load_state_dict(base.state_dict())
    out_pt, grads_pt = run(pt_model, ids, types, mask, probe)
    fast_model = cls(config, impl="triton").cuda().to(torch.bfloat16).eval()
    fast_model.load_state_dict(base.state_dict())
    out, grads = run(fast_model, ids, types, mask, probe)

    assert_within_pytorch_error(out, out_pt, out_ref, atol=1e-2, name=f"{name} logits")
    for key in grads_ref:
        assert_within_pytorch_error(grads[key], grads_pt[key], grads_ref[key], atol=1e-2, name=f"{name} {key}")
