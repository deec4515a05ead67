"""`bert-fast features`: the paper's feature-based use: hidden states of chosen layers, combined, saved as .npz.

--pooling none keeps one vector per word piece: the .npz then holds `features` (all tokens, dim), `offsets`
(texts + 1) and `input_ids`; cls / mean keep one vector per text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import SettingError
from ..finetune.features import COMBINATIONS
from .encode import add_model_arguments, load_model, read_texts


def _layers(value: str):
    if value in COMBINATIONS:
        return value
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise SettingError(f"--layers {value!r} is not one of {', '.join(COMBINATIONS)} or comma-separated layer "
                           "indices") from None


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to encode")
    add_model_arguments(parser)
    parser.add_argument("--layers", default="concat-last-four",
                        help=f"one of {', '.join(COMBINATIONS)}, or layer indices such as -1,-2 (0 is the "
                             "embeddings' output) combined by --combine (default: %(default)s)")
    parser.add_argument("--combine", choices=["concat", "sum", "mean"], default="concat",
                        help="how explicit layer indices combine (default: %(default)s)")
    parser.add_argument("--layer-weights", help="weighted-sum-all: one raw weight per layer (softmax-normalised)")
    parser.add_argument("--pooling", choices=["none", "cls", "mean"], default="none",
                        help="none: a vector per word piece; cls or mean: one per text (default: %(default)s)")
    parser.add_argument("--output", type=Path, required=True, help=".npz file to write")


def run(args) -> int:
    from ..finetune.features import extract_features

    texts = read_texts(args.texts, args.input)
    layers = _layers(args.layers)
    try:
        weights = [float(w) for w in args.layer_weights.split(",")] if args.layer_weights else None
    except ValueError:
        raise SettingError(f"--layer-weights {args.layer_weights!r} is not a comma-separated list of numbers") from None
    model, tokenizer = load_model(args, "features")
    features, ids = extract_features(model, tokenizer, texts, layers, args.pooling, args.combine, weights,
                                     args.batch_size, args.max_length)
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
