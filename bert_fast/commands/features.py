"""`bert-fast features`: the paper's feature-based use: hidden states of chosen layers, combined, saved as .npz.

--layers: embeddings, last, second-to-last, sum-last-four, concat-last-four, weighted-sum-all, or indices
(e.g. `--layers=-1,-2`; 0 is the embeddings) combined by --combine. --pooling none keeps one vector per word piece:
the .npz then holds `features` (all tokens, dim), `offsets` (texts + 1) and `input_ids`; cls / mean keep one
vector per text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch


def _layers(value: str):
    from ..finetune.features import COMBINATIONS

    if value in COMBINATIONS:
        return value
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise SystemExit(f"bert-fast features: --layers {value!r} is not one of {COMBINATIONS} or indices") from None


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to encode")
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: all-MiniLM-L6-v2 if installed)")
    parser.add_argument("--input", type=Path, help="a UTF-8 file with one text per line")
    parser.add_argument("--layers", default="concat-last-four", help="layer combination (see above)")
    parser.add_argument("--combine", choices=["concat", "sum", "mean"], default="concat",
                        help="how explicit layer indices combine")
    parser.add_argument("--layer-weights", help="weighted-sum-all: one raw weight per layer (softmax-normalised)")
    parser.add_argument("--pooling", choices=["none", "cls", "mean"], default="none")
    parser.add_argument("--output", type=Path, required=True, help=".npz file to write")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--impl", choices=["auto", "reference", "triton"], default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)


def run(args) -> int:
    from ..finetune.features import extract_features
    from ..modeling import BertModel
    from ..tokenizer import Tokenizer
    from .encode import default_model_dir

    texts = list(args.texts)
    if args.input:
        if not args.input.is_file():
            raise SystemExit(f"bert-fast features: no such input file {args.input}")
        texts += [line for line in args.input.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise SystemExit("bert-fast features: no texts given (pass them as arguments or with --input FILE)")
    weights = [float(w) for w in args.layer_weights.split(",")] if args.layer_weights else None
    model_dir = args.model or default_model_dir()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    model = BertModel.from_pretrained(model_dir, impl=args.impl, dtype=dtype, device=args.device)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    try:
        features, ids = extract_features(model, tokenizer, texts, _layers(args.layers), args.pooling, args.combine,
                                         weights, args.batch_size, args.max_length)
    except ValueError as e:
        raise SystemExit(f"bert-fast features: {e}") from e
    if args.pooling == "none":
        offsets = np.cumsum([0] + [len(f) for f in features])
        np.savez(args.output, features=np.concatenate(features).astype(np.float32), offsets=offsets,
                 input_ids=np.concatenate([np.asarray(i, dtype=np.int64) for i in ids]))
        shape = (int(offsets[-1]), features[0].shape[-1])
    else:
        np.savez(args.output, features=np.stack(features).astype(np.float32))
        shape = (len(features), features[0].shape[-1])
    print(f"saved features {shape} of {len(texts)} texts to {args.output}", file=sys.stderr)
    return 0
