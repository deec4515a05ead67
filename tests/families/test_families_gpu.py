"""RoBERTa-base and XLM-R-base shapes (XLM-R's 250k vocabulary) on a GPU: the fused path in bf16 against
transformers in fp32 and in bf16 (sdpa), and the packed path with RoBERTa's positions (skipped without CUDA)."""

import pytest
import torch

import bert_fast
from tests.families.conftest import family_batch, hf_config

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers")

SHAPES = {  # (model_type, vocab): the base models' shapes; 4 layers keep the test short
    "roberta-base": ("roberta", 50265),
    "xlm-roberta-base": ("xlm-roberta", 250002),
}


def base_config(name: str) -> bert_fast.BertConfig:
    model_type, vocab = SHAPES[name]
    return bert_fast.BertConfig.preset("base", model_type=model_type, vocab_size=vocab, num_hidden_layers=4,
                                       max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
                                       layer_norm_eps=1e-5)


@pytest.mark.parametrize("name", list(SHAPES))
def test_bf16_parity_with_transformers(name):
    config = base_config(name)
    hf32 = transformers.AutoModel.from_config(hf_config(config, "sdpa")).cuda().eval()
    hf16 = transformers.AutoModel.from_config(hf_config(config, "sdpa")).cuda().eval()
    hf16.load_state_dict(hf32.state_dict())
    hf16 = hf16.to(torch.bfloat16)
    ours = bert_fast.BertModel(config, impl="triton")
    ours.load_state_dict(hf32.state_dict(), strict=True)
    ours = ours.cuda().to(torch.bfloat16).eval()
    batch = {k: v.cuda() for k, v in family_batch(config, batch=8, seq=512,
                                                  lengths=[512, 1, 7, 113, 128, 129, 300, 64]).items()}
    with torch.no_grad():
        out, ref, pt = (m(**batch).last_hidden_state for m in (ours, hf32, hf16))
    real = batch["attention_mask"].bool()
    cosine = torch.nn.functional.cosine_similarity(out[real].float(), ref[real], dim=-1)
    assert cosine.min() >= 0.999
    err, err_pt = (out[real].float() - ref[real]).abs().max(), (pt[real].float() - ref[real]).abs().max()
    assert err <= 2 * err_pt + 1e-2, f"ours {err:.3e} vs HF bf16 {err_pt:.3e}"


def test_packed_inputs_keep_robertas_positions():
    config = base_config("roberta-base")
    model = bert_fast.BertModel(config, impl="triton").cuda().to(torch.bfloat16).eval()
    batch = {k: v.cuda() for k, v in family_batch(config, batch=4, seq=200, lengths=[200, 3, 77, 150]).items()}
    real = batch["attention_mask"].bool()
    cu = torch.nn.functional.pad(real.sum(1).cumsum(0), (1, 0)).int()
    with torch.no_grad():
        padded = model(**batch).last_hidden_state[real]
        packed = model.forward_packed(batch["input_ids"][real], cu, 200).last_hidden_state
    assert (padded.float() - packed.float()).abs().max() <= 1e-2
