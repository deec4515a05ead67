"""`bert-fast tokenizer train`: learn a WordPiece vocabulary from a corpus (default: the Wikipedia sample)."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="learn a WordPiece vocabulary from text files",
                           description="Learn a WordPiece vocabulary (specials first: [PAD]=0 [UNK] [CLS] [SEP] "
                                       "[MASK]) and save a folder transformers' BertTokenizerFast loads.")
    train.add_argument("--corpus", nargs="+", metavar="PATH",
                       help="text files or folders; default: the Wikipedia sample in gensim's wheel")
    train.add_argument("--vocab-size", type=int, default=30522,
                       help="at most this many pieces; a small corpus gives fewer (default: %(default)s)")
    train.add_argument("--min-frequency", type=int, default=2,
                       help="keep pieces seen at least this often (default: %(default)s)")
    train.add_argument("--cased", action="store_true", help="keep case (default: lower-case, as bert-base-uncased)")
    train.add_argument("--no-split", action="store_true", help="do not split corpus lines into sentences")
    train.add_argument("--out", type=Path, required=True, help="folder to write the tokenizer to")


def run(args) -> int:
    from ..data.prepare import train_tokenizer

    if not args.corpus:
        from ..extras import require

        require("wiki", "the default corpus (the Wikipedia sample in gensim's wheel)")
    tokenizer, stats = train_tokenizer(args.corpus, args.vocab_size, lowercase=not args.cased,
                                       min_frequency=args.min_frequency, split=not args.no_split)
    tokenizer.save_pretrained(args.out)
    skipped = f", skipped {stats.skipped_lines} non-UTF-8 lines" if stats.skipped_lines else ""
    print(f"trained {tokenizer.vocab_size:,} WordPieces (asked for at most {args.vocab_size:,}) on {stats.documents} "
          f"documents ({stats.sentences} sentences{skipped}) -> {args.out}")
    return 0
