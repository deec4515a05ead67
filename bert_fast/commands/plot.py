"""`bert-fast plot RUN_DIR [RUN_DIR ...]`: training loss, held-out accuracy and perplexity curves as a PNG."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl)")
    parser.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/curves.png of the first run)")
    parser.add_argument("--labels", nargs="+", help="a legend label per run (default: folder names)")


def run(args) -> int:
    from ..training.plot import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise SystemExit(f"bert-fast plot: {len(args.runs)} runs but {len(args.labels)} labels")
    try:
        out = plot_runs(args.runs, args.out or args.runs[0] / "curves.png", args.labels)
    except FileNotFoundError as e:
        raise SystemExit(f"bert-fast plot: {e}") from None
    except ImportError:
        raise SystemExit("bert-fast plot: needs matplotlib (pip install matplotlib)") from None
    print(f"wrote {out}")
    return 0
