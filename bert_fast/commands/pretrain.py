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
from ..errors import SettingError
from ..extras import require

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
    parser.add_argument("--objective", choices=["mlm_nsp", "mlm"],
                        help="mlm_nsp: BERT's masked LM + next sentence prediction (default); mlm: masked LM alone, "
                             "B always continuing A (RoBERTa; --set model.model_type=roberta for a RoBERTa)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/pretrain-<size>-<date>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with its own settings (flags given "
                             "again must agree with them; --steps may change)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any setting, e.g. --set train.warmup_steps=10000 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


_FLAGS = {
    "corpus": "data.corpus", "model": "model.size", "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size",
    "seq_len": "data.seq_len", "batch_size": "train.batch_size", "micro_batch_size": "train.micro_batch_size",
    "steps": "train.steps", "lr": "train.lr", "precision": "train.precision", "impl": "model.impl",
    "device": "train.device", "whole_word_masking": "data.whole_word_masking", "out": "out",
    "objective": "train.objective", "packing": "data.packing", "batch_tokens": "train.batch_tokens",
}


def given_settings(args) -> list[tuple[str, object]]:
    """What the command line sets, in order of precedence: the --config file, the flags, then --set."""
    from ..training.config import assignments_of, parse_override, read_toml

    given = assignments_of(read_toml(args.config)) if args.config else []
    for flag, key in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            given.append((key, [str(v) for v in value] if flag == "corpus" else value))
    given += [parse_override(assignment) for assignment in args.set]
    return given


def resolve_config(args):
    """The run's config: the defaults with what the command gives, or, with --resume, the run's own config.toml
    with what the command gives again (which must agree with it; see training.config.resumed_config)."""
    from ..training.config import PretrainConfig, resumed_config

    given = given_settings(args)
    if args.resume:
        out = dict(given).get("out")
        if not out:
            raise SettingError("--resume needs --out RUN_DIR, the run to continue")
        config, notes = resumed_config(out, given)
        for note in notes:
            logger.warning("bert_fast: resuming with %s", note)
        return config
    config = PretrainConfig()
    for key, value in given:
        config.set(key, value)
    return config


def _print_summary(summary: dict) -> None:
    state = "finished" if summary["finished"] else "stopped"
    lines = [(f"pretraining {state} at step {summary['end_step']} ({summary['model_size']}, "
              f"{summary['parameters'] / 1e6:.1f}M parameters, {summary['device']}, {summary['precision']}, "
              f"impl {summary['impl']}, {summary['world_size']} process(es))")]
    if summary["first_loss"] is not None:
        nsp = (f", NSP loss {summary['first_nsp_loss']:.3f} -> {summary['last_nsp_loss']:.3f}"
               if summary.get("first_nsp_loss") is not None else "")
        lines.append(f"  training MLM loss {summary['first_mlm_loss']:.3f} -> {summary['last_mlm_loss']:.3f}{nsp} "
                     "(first -> last log)")
    ev = summary.get("eval") or {}
    if ev:
        nsp = f", NSP accuracy {ev['nsp_accuracy']:.3f}" if "nsp_accuracy" in ev else ""
        lines.append(f"  held-out: MLM accuracy {ev['mlm_accuracy']:.3f}, perplexity {ev['perplexity']:.1f}"
                     f"{nsp} ({ev['examples']} examples)")
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
    from ..training.trainer import pretrain

    config = resolve_config(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    if not config.data.corpus:
        require("wiki", "the default corpus (the Wikipedia sample in gensim's wheel)")
    if not args.verbose:  # what the run decides (caches, checkpoints) is worth a line even without -v
        _log_info_to_stderr()
    summary = pretrain(config, resume=args.resume, overwrite=args.overwrite)
    if summary.get("world_size", 1) == 1 or _is_main():
        _print_summary(summary)
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes each record to sys.stderr as it is then, so a stderr replaced after the handler was made (a second
    run in one process, a redirect) still gets the lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_info_to_stderr() -> None:
    log = logging.getLogger("bert_fast")
    log.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
