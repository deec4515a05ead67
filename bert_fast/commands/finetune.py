"""`bert-fast finetune TASK`: fine-tune a BERT checkpoint on classify / tag / qa / choice data files.

TASK and its files:
  classify  GLUE-style TSV/CSV/JSONL: text column(s) and a label column (--regression for a score, STS-B)
  tag       CoNLL-style files: `word ... tag` per line, blank line between sentences (BIO tags)
  qa        SQuAD v1.1 / v2.0 JSON (v2 when questions carry is_impossible)
  choice    SWAG CSV: sent1, sent2, ending0..3, label
Defaults are the paper's and live in bert_fast.finetune.runner.FinetuneConfig; flags only override them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from ..errors import SettingError

logger = logging.getLogger("bert_fast")


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _defaults() -> dict:
    import dataclasses

    from ..finetune.runner import FinetuneConfig

    return {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}


def add_arguments(parser) -> None:
    defaults = _defaults()

    def shown(name: str, text: str = "") -> str:
        return f"{text} (default {defaults[name]})".strip()

    parser.add_argument("task", choices=["classify", "tag", "qa", "choice"])
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: all-MiniLM-L6-v2 if installed)")
    parser.add_argument("--train", type=Path, help="training file (required, except with --resume)")
    parser.add_argument("--dev", type=Path, help="dev file, evaluated each epoch (required, except with --resume)")
    parser.add_argument("--test", type=Path, help="labelled: metrics + predictions; unlabelled: predictions")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"), help="output folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    recipe = parser.add_argument_group("recipe (defaults: the paper's)")
    recipe.add_argument("--epochs", type=int, help=shown("epochs"))
    recipe.add_argument("--lr", type=float, help=shown("lr", "peak learning rate"))
    recipe.add_argument("--batch-size", type=int, help=shown("batch_size", "examples per step, over all ranks"))
    recipe.add_argument("--batch-tokens", type=int,
                        help="padded tokens per step instead of --batch-size examples: batches drawn by length, "
                             "examples of one width (a multiple of 8) each")
    recipe.add_argument("--micro-batch-size", type=int,
                        help="examples per rank per forward; accumulate the gradients of the rest "
                             "(default: batch size / ranks)")
    recipe.add_argument("--eval-batch-size", type=int, help=shown("eval_batch_size"))
    recipe.add_argument("--warmup", type=float, help=shown("warmup", "fraction of the steps"))
    recipe.add_argument("--weight-decay", type=float, help=shown("weight_decay"))
    recipe.add_argument("--max-grad-norm", type=float, help=shown("max_grad_norm"))
    recipe.add_argument("--max-length", type=int, help="tokens per input (default 384 for qa, 128 otherwise)")
    recipe.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    recipe.add_argument("--seed", type=int, help=shown("seed"))
    runs = parser.add_argument_group("checkpoints")
    runs.add_argument("--checkpoint-every", type=int, help="write a checkpoint every N steps (default: none; the "
                                                           "best epoch's model is kept in OUT/best regardless)")
    runs.add_argument("--keep-checkpoints", type=int, help=shown("keep_checkpoints", "the newest N are kept"))
    runs.add_argument("--capture", action="store_true",
                      help="each step as one CUDA graph per batch shape (bf16/fp32, one process); not yet run on a "
                           "GPU, so off by default")
    runs.add_argument("--stop-at", type=int, help="stop after N steps with a checkpoint (a time-limited job)")
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its newest checkpoint, with its own settings (flags given "
                           "again must agree with them; --epochs and --max-steps may change)")
    add_data_arguments(parser, shown, training=True)


def add_data_arguments(parser, shown, training: bool) -> None:
    """The machine, and how each task reads its files: shared by finetune and predict."""
    machine = parser.add_argument_group("machine")
    machine.add_argument("--impl", choices=["auto", "reference", "triton"])
    machine.add_argument("--device")
    machine.add_argument("--precision", choices=["bf16", "fp16", "fp32"])
    classify = parser.add_argument_group("classify")
    classify.add_argument("--text-columns", type=_columns, help="names or 0-based indices, comma separated")
    classify.add_argument("--label-column")
    classify.add_argument("--no-header", action="store_true", help="the table has no header row (CoLA)")
    if training:
        classify.add_argument("--labels", type=_columns, help="the label set in id order (default: from train)")
        classify.add_argument("--regression", action="store_true", help="one score per input, MSE loss (STS-B)")
        classify.add_argument("--metric", help="dev metric that picks the best epoch (e.g. mcc for CoLA)")
    qa = parser.add_argument_group("qa")
    qa.add_argument("--doc-stride", type=int, help=shown("doc_stride"))
    qa.add_argument("--max-query-length", type=int, help=shown("max_query_length"))
    qa.add_argument("--max-answer-length", type=int, help=shown("max_answer_length"))
    qa.add_argument("--n-best", type=int, help=shown("n_best"))
    qa.add_argument("--null-threshold", type=float,
                    help="SQuAD v2: fixed threshold (default: tuned on dev)" if training else
                    "SQuAD v2: threshold (default: the one tuned when the model was fine-tuned, else 0)")
    qa.add_argument("--squad-version", type=int, choices=[1, 2])


_SETTINGS = ("test", "epochs", "lr", "batch_size", "batch_tokens", "micro_batch_size", "eval_batch_size", "warmup",
             "weight_decay", "max_grad_norm", "max_length", "max_steps", "seed", "impl", "device", "precision",
             "text_columns", "label_column", "labels", "metric", "doc_stride", "max_query_length", "max_answer_length",
             "n_best", "null_threshold", "squad_version", "checkpoint_every", "keep_checkpoints", "stop_at")


def given_settings(args) -> dict:
    """The settings the command line gives (flags left out are not in it)."""
    given = {"task": args.task}
    given.update({n: getattr(args, n) for n in ("model", "train", "dev", *_SETTINGS)
                  if getattr(args, n, None) is not None})
    given.update({n: True for n in ("no_header", "regression", "capture") if getattr(args, n, False)})
    return given


def config_from_args(args):
    """The run's config; with --resume, the run's own config with what the command gives again checked against
    it (see finetune.runner.resumed_config)."""
    from ..finetune.runner import FinetuneConfig, resumed_config
    from .encode import default_model_dir

    given = given_settings(args)
    if args.resume:
        config, notes = resumed_config(args.out, given)
        for note in notes:
            logger.warning("bert_fast: resuming with %s", note)
        return config
    missing = [f"--{name}" for name in ("train", "dev") if name not in given]
    if missing:
        raise SettingError(f"{' and '.join(missing)} required (or --resume, to continue the run in --out)")
    given.setdefault("model", default_model_dir("finetune"))
    return FinetuneConfig(out=args.out, **given)


def run(args) -> int:
    from ..extras import require
    from ..finetune import finetune

    require("finetune", "bert-fast finetune")
    summary = finetune(config_from_args(args), overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if "stopped_at" in summary:
        print(f"stopped after step {summary['stopped_at']} of {summary['total_steps']}; continue with --resume "
              f"(checkpoint {summary['checkpoint']})", file=sys.stderr)
        return 0
    shown = {k: summary[k] for k in ("task", "impl", "device", "world_size", "best_epoch", "dev", "test")
             if k in summary}
    print(json.dumps(shown, indent=2, default=float))
    print(f"model, predictions and metrics.json in {args.out}", file=sys.stderr)
    return 0
