"""`bert-fast warmup`: compile and autotune the fused kernels for a model's shapes ahead of the first real step."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import BertConfig
from ..warmup import warm_up

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder (only its config.json is read)")
    parser.add_argument("--seq-lens", default="128",
                        help="comma separated sequence lengths to prepare (each power-of-two bucket is tuned once)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bfloat16",
                        help="inference weights' dtype and training's autocast dtype")
    parser.add_argument("--no-train", action="store_true", help="inference kernels only")
    parser.add_argument("--no-inference", action="store_true", help="training kernels only")


def run(args) -> int:
    if not torch.cuda.is_available():
        raise SystemExit("bert-fast warmup: needs a CUDA device (the kernels it prepares are compiled for the GPU)")
    config_file = args.model / "config.json" if args.model.is_dir() else args.model
    if not config_file.is_file():
        raise SystemExit(f"bert-fast warmup: no config.json in {args.model}")
    config = BertConfig.from_json_file(config_file)
    seq_lens = [int(s) for s in args.seq_lens.split(",") if s.strip()]
    rows = warm_up(config, seq_lens, DTYPES[args.dtype], train=not args.no_train, inference=not args.no_inference)
    print(f"warmup: {len(rows)} shapes ready in {sum(r['seconds'] for r in rows):.1f} s; later processes read them "
          "from Triton's cache")
    return 0
