"""`bert-fast audit`: a healthy checkpoint passes in fp32 and fp16 (kernels in Triton's interpreter here); a kernel
broken on purpose fails it, naming the first state it spoils."""

import dataclasses
import json

import pytest
import torch

import bert_fast
from bert_fast import cli
from bert_fast import ops as ops_lib
from tests.families.conftest import family_config
from tests.families.tokenizer_fixtures import TEXT, roberta_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hi!", "Question: where is the cat? Answer: on the mat.",
         "Padding should never change the numbers a real token gets."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random RoBERTa-family model (positions after the pad id, pooler) with a byte-level BPE tokenizer."""
    folder = roberta_tokenizer(tmp_path_factory.mktemp("audit"), vocab_size=300)
    config = family_config("roberta", vocab_size=300)
    torch.manual_seed(0)
    bert_fast.BertModel(config).save_pretrained(folder)
    (folder / "texts.txt").write_text("\n".join(TEXTS + TEXT[:2]) + "\n")
    return folder


def _audit(checkpoint, tmp_path, *extra):
    out = tmp_path / "audit.json"
    code = cli.main(["audit", "--model", str(checkpoint), "--input", str(checkpoint / "texts.txt"), "--output",
                     str(out), "--batch-size", "4", *extra])
    return code, json.loads(out.read_text())


def test_healthy_model_passes_in_fp32_and_fp16(checkpoint, tmp_path, capsys):
    code, report = _audit(checkpoint, tmp_path, "--dtype", "fp16")
    printed = capsys.readouterr().out
    assert code == 0 and report["passed"], printed
    assert report["model_type"] == "roberta" and report["texts"] == len(TEXTS) + 2 and report["dtype"] == "float16"
    names = [s["name"] for s in report["fp32"]]
    assert names == ["embeddings", "layer 1", "layer 2", "pooler"]
    assert all(s["max_abs_error"] <= 1e-4 and s["min_cosine"] > 0.99999 for s in report["fp32"])
    assert all(s["max_abs_error"] > 0 for s in report["half_pytorch"][1:])  # fp16 rounds: the bound is not 1e-2 alone
    for name in names:
        assert name in printed
    assert "PASS" in printed


def test_a_broken_kernel_fails_the_audit(checkpoint, tmp_path, capsys, monkeypatch):
    """add_layer_norm off by 1e-3 on the fused path: the first state it produces (the embeddings) fails."""
    fused = ops_lib.triton_ops()

    def off_by_a_little(*args, **kwargs):
        return fused.add_layer_norm(*args, **kwargs) + 1e-3

    monkeypatch.setattr(ops_lib, "_TRITON", dataclasses.replace(fused, add_layer_norm=off_by_a_little))
    monkeypatch.setattr(ops_lib, "_fused_layer", False)  # the layers step by step, through the broken op too
    code, report = _audit(checkpoint, tmp_path)
    printed = capsys.readouterr().out
    assert code == 1 and not report["passed"]
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert failed[0] == "embeddings" and "layer 2" in failed
    assert "FAIL embeddings (float32): max abs error 1.0" in printed


def test_bf16_without_cuda_is_a_clear_error(checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("bf16 runs on CUDA")
    with pytest.raises(SystemExit, match="bf16 needs CUDA"):
        _audit(checkpoint, tmp_path, "--dtype", "bf16")
