"""`bert-fast pretrain`: MLM + NSP pretraining, from a config file and flags, or on the embedded default.

With no arguments: a WordPiece vocabulary (8k) and examples (seq len 128) from the Wikipedia sample in gensim's
wheel, then a BERT-tiny for 300 steps; a few minutes on a 2-core CPU, bf16 and our kernels on a GPU. The same
command runs data-parallel under `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..config import PRESETS

logger = logging.getLogger("bert_fast")


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML file with [model], [data], [train], [phase2] tables")
    parser.add_argument("--corpus", nargs="+", metavar="PATH",
                        help="text files or folders (one sentence per line, blank line between documents; "
                             "lines that are not UTF-8 are skipped and counted); default: the Wikipedia sample in "
                             "gensim's wheel")
    parser.add_argument("--model", choices=list(PRESETS), help="model size (default tiny)")
    parser.add_argument("--tokenizer", metavar="DIR", help="a tokenizer folder (default: train one on the corpus)")
    parser.add_argument("--vocab-size", type=int, help="size of a trained vocabulary (default 8192)")
    parser.add_argument("--seq-len", type=int, help="sequence length of the examples (default 128)")
    parser.add_argument("--batch-size", type=int, help="examples per optimizer step, all ranks together (default 32)")
    parser.add_argument("--micro-batch-size", type=int, help="examples per rank per forward (gradient accumulation)")
    parser.add_argument("--packing", choices=["none", "online", "offline"],
                        help="several whole examples per row of seq-len (default none); the run logs the padding "
                             "before and after")
    parser.add_argument("--batch-tokens", type=int,
                        help="packed: token slots per optimizer step (default batch size x seq len)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 300)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--impl", choices=["auto", "reference", "triton"])
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--whole-word-masking", action="store_true", default=None)
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/pretrain-<size>-<date>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any setting, e.g. --set train.warmup_steps=10000 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


_FLAGS = {
    "corpus": "data.corpus", "model": "model.size", "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size",
    "seq_len": "data.seq_len", "batch_size": "train.batch_size", "micro_batch_size": "train.micro_batch_size",
    "steps": "train.steps", "lr": "train.lr", "precision": "train.precision", "impl": "model.impl",
    "device": "train.device", "whole_word_masking": "data.whole_word_masking", "out": "out",
    "packing": "data.packing", "batch_tokens": "train.batch_tokens",
}


def resolve_config(args):
    from ..training.config import PretrainConfig

    config = PretrainConfig.from_file(args.config) if args.config else PretrainConfig()
    for flag, key in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            config.set(key, [str(v) for v in value] if flag == "corpus" else value)
    for assignment in args.set:
        config.override(assignment)
    return config


def _print_summary(summary: dict) -> None:
    state = "finished" if summary["finished"] else "stopped"
    lines = [(f"pretraining {state} at step {summary['end_step']} ({summary['model_size']}, "
              f"{summary['parameters'] / 1e6:.1f}M parameters, {summary['device']}, {summary['precision']}, "
              f"impl {summary['impl']}, {summary['world_size']} process(es))")]
    if summary["first_loss"] is not None:
        lines.append(f"  training MLM loss {summary['first_mlm_loss']:.3f} -> {summary['last_mlm_loss']:.3f}, NSP loss "
                     f"{summary['first_nsp_loss']:.3f} -> {summary['last_nsp_loss']:.3f} (first -> last log)")
    ev = summary.get("eval") or {}
    if ev:
        lines.append(f"  held-out: MLM accuracy {ev['mlm_accuracy']:.3f}, perplexity {ev['perplexity']:.1f}, "
                     f"NSP accuracy {ev['nsp_accuracy']:.3f} ({ev['examples']} examples)")
    if summary.get("tokens_per_s"):
        lines.append(f"  {summary['seconds']:.0f} s of training, {summary['tokens_per_s']:,.0f} tokens/s")
    if summary.get("model_dir"):
        lines.append(f"  model (Hugging Face format, with tokenizer): {summary['model_dir']}")
    else:
        lines.append(f"  continue with: bert-fast pretrain --out {summary['run_dir']} --resume")
    lines.append(f"  run folder: {summary['run_dir']} (config.toml, metrics.jsonl; plot with "
                 f"`bert-fast plot {summary['run_dir']}`)")
    print("\n".join(lines))


def run(args) -> int:
    from ..checkpoint import CheckpointError
    from ..data.corpus import CorpusError
    from ..data.store import DataError
    from ..tokenizer import TokenizerError
    from ..training.checkpointing import CheckpointWriteError
    from ..training.config import ConfigFileError
    from ..training.trainer import ResumeError, pretrain

    try:
        config = resolve_config(args)
    except ConfigFileError as e:
        raise SystemExit(f"bert-fast pretrain: {e}") from None
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    if not args.verbose:  # what the run decides (caches, checkpoints) is worth a line even without -v
        _log_info_to_stderr()
    try:
        summary = pretrain(config, resume=args.resume)
    except (CorpusError, DataError, TokenizerError, ResumeError, CheckpointError, CheckpointWriteError,
            FileExistsError, ConfigFileError, ValueError) as e:
        raise SystemExit(f"bert-fast pretrain: {e}") from None
    if summary.get("world_size", 1) == 1 or _is_main():
        _print_summary(summary)
    return 0


def _log_info_to_stderr() -> None:
    log = logging.getLogger("bert_fast")
    log.setLevel(logging.INFO)
    if not any(getattr(h, "_bert_fast_pretrain", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._bert_fast_pretrain = True
        log.addHandler(handler)
        log.propagate = False


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
