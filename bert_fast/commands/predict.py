"""`bert-fast predict TASK`: a fine-tuned checkpoint (a `bert-fast finetune` run's best/, or any Hugging Face
BERT with the task's head) applied to a file in the task's format; predictions written as finetune writes them,
and metrics when the file is labelled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .finetune import _defaults, add_data_arguments


def add_arguments(parser) -> None:
    defaults = _defaults()

    def shown(name: str, text: str = "") -> str:
        return f"{text} (default {defaults[name]})".strip()

    parser.add_argument("task", choices=["classify", "tag", "qa", "choice"])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned checkpoint folder (e.g. RUN/best)")
    parser.add_argument("--input", type=Path, required=True, help="the file to predict, in the task's format")
    parser.add_argument("--out", type=Path, default=Path("runs/predict"), help="output folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier predictions of this file in --out")
    parser.add_argument("--batch-size", type=int, help=shown("eval_batch_size"))
    parser.add_argument("--max-length", type=int, help="tokens per input (default 384 for qa, 128 otherwise)")
    add_data_arguments(parser, shown, training=False)


def run(args) -> int:
    from ..extras import require

    require("finetune", "bert-fast predict")
    from ..finetune import FinetuneConfig, predict_file

    names = ["max_length", "impl", "device", "precision", "text_columns", "label_column", "doc_stride",
             "max_query_length", "max_answer_length", "n_best", "null_threshold", "squad_version"]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.batch_size is not None:
        overrides["eval_batch_size"] = args.batch_size
    # the task reads only its settings from the config: the input stands in for the training files
    cfg = FinetuneConfig(task=args.task, model=args.model, train=args.input, dev=args.input, out=args.out,
                         no_header=args.no_header, **overrides)
    summary = predict_file(cfg, args.input, overwrite=args.overwrite)
    print(json.dumps({k: summary[k] for k in ("task", "examples", "impl", "device", "metrics", "files")},
                     indent=2, default=float))
    print(f"predictions in {args.out}", file=sys.stderr)
    return 0
