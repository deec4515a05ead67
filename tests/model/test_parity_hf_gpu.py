"""The fused path on a GPU in bf16 against transformers in fp32 and in bf16 (skipped without CUDA)."""

import pytest
import torch

import bert_fast
from tests.model.conftest import SENTENCES, hf_config, random_batch

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers")


def per_token_cosine(a, b, mask):
    real = mask.bool()
    return torch.nn.functional.cosine_similarity(a[real].float(), b[real].float(), dim=-1)


def test_minilm_bf16_against_hf_fp32(minilm_dir):
    tokenizer = bert_fast.BertTokenizer.from_pretrained(minilm_dir)
    batch = {k: v.cuda() for k, v in tokenizer(SENTENCES * 4).items()}
    ours = bert_fast.BertModel.from_pretrained(minilm_dir, impl="triton", dtype="bfloat16", device="cuda")
    hf32 = transformers.BertModel.from_pretrained(str(minilm_dir)).cuda().eval()
    hf16 = transformers.BertModel.from_pretrained(str(minilm_dir), dtype=torch.bfloat16).cuda().eval()
    with torch.no_grad():
        out = ours(**batch).last_hidden_state
        ref = hf32(**batch).last_hidden_state
        pt = hf16(**batch).last_hidden_state
    assert per_token_cosine(out, ref, batch["attention_mask"]).min() >= 0.999
    real = batch["attention_mask"].bool()
    err = (out[real].float() - ref[real]).abs().max()
    err_pt = (pt[real].float() - ref[real]).abs().max()
    assert err <= 2 * err_pt + 1e-2, f"ours {err:.3e} vs HF bf16 {err_pt:.3e}"


@pytest.mark.parametrize("size", ["base"])
def test_random_base_bf16_against_hf_fp32(size, ffn_gemm):
    config = bert_fast.BertConfig.preset(size, num_hidden_layers=4)
    hf = transformers.BertModel(hf_config(config, "sdpa")).cuda().eval()
    ours = bert_fast.BertModel(config, impl="triton")
    ours.load_state_dict(hf.state_dict())
    ours = ours.cuda().to(torch.bfloat16).eval()
    batch = {k: v.cuda() for k, v in random_batch(config, batch=8, seq=256,
                                                  lengths=[256, 1, 7, 113, 128, 129, 200, 64]).items()}
    with torch.no_grad():
        out, ref = ours(**batch).last_hidden_state, hf(**batch).last_hidden_state
    assert per_token_cosine(out, ref, batch["attention_mask"]).min() >= 0.999


def test_convergence_30_steps_bf16(ffn_gemm):
    """30 MLM+NSP steps: reference and fused paths give the same per-step losses within bf16 tolerance."""
    config = bert_fast.BertConfig.preset("mini", vocab_size=2000, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    reference = bert_fast.BertForPreTraining(config, impl="reference").cuda()
    fast = bert_fast.BertForPreTraining(config, impl="triton").cuda()
    fast.load_state_dict(reference.state_dict())
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (reference, fast)]
    generator = torch.Generator().manual_seed(1)
    losses = {"reference": [], "triton": []}
    for _ in range(30):
        batch = {k: v.cuda() for k, v in random_batch(config, batch=16, seq=64,
                                                      lengths=torch.randint(8, 65, (16,), generator=generator)
                                                      .tolist()).items()}
        labels = torch.where(torch.rand(batch["input_ids"].shape, device="cuda") < 0.15, batch["input_ids"], -100)
        labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
        nsp = torch.randint(0, 2, (16,), device="cuda")
        for model, opt in zip((reference, fast), optimizers):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch, labels=labels, next_sentence_label=nsp).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[model.impl].append(loss.item())
    ref, out = torch.tensor(losses["reference"]), torch.tensor(losses["triton"])
    assert ref[-1] < ref[0]
    assert ((out - ref).abs() / ref).max() <= 0.02, list(zip(ref.tolist(), out.tolist()))
