"""The `bert-fast` command line. Each subcommand lives in bert_fast/commands/<name>.py with two functions:
`add_arguments(parser)` and `run(args) -> int`. The CLI only parses and dispatches; defaults live in the code
the commands call.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import BertFastError, RunInterrupted

# (subcommand, module under bert_fast.commands, one-line help)
COMMANDS = [
    ("encode", "encode", "embed texts with a BERT checkpoint (cls or mean pooling), print or save .npy"),
    ("pretrain", "pretrain", "pretrain BERT (MLM + NSP) on a corpus, or on the embedded Wikipedia sample"),
    ("tokenizer", "tokenizer", "train a WordPiece vocabulary on a corpus"),
    ("plot", "plot", "plot the loss and accuracy curves of pretraining runs to a PNG"),
    ("finetune", "finetune", "fine-tune on classify / tag / qa / choice files; best checkpoint, predictions, metrics"),
    ("predict", "predict", "apply a fine-tuned checkpoint to a classify / tag / qa / choice file"),
    ("features", "features", "hidden states of chosen layers (the paper's feature-based use), saved as .npz"),
    ("bench", "bench", "end-to-end speed against Hugging Face transformers (CUDA)"),
    ("audit", "audit", "fused path vs reference path, layer by layer, on your checkpoint and texts (exit 1 if off)"),
    ("warmup", "warmup", "compile and autotune the fused kernels for a model's shapes ahead of its first step (CUDA)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-fast", description="Fast BERT: encode, pretrain, fine-tune, bench.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library decides (impl, loading)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"bert_fast.commands.{module_name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except BertFastError as e:
        # What the user gave or set up is wrong: the message says what. Anything else is a bug and keeps its
        # traceback.
        if args.verbose:
            raise
        if isinstance(e, RunInterrupted):
            print(f"bert-fast {args.command}: {e}", file=sys.stderr)
            raise SystemExit(130) from None  # the shell's code for Ctrl-C
        raise SystemExit(f"bert-fast {args.command}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
