"""`bert-fast plot RUN_DIR [RUN_DIR ...]`: training loss, held-out accuracy and perplexity curves as a PNG."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, SettingError


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl)")
    parser.add_argument("--out", type=Path,
                        help="PNG to write (default: RUN_DIR/curves.png for one run; for several, "
                             "curves-<run>-vs-<run>....png in the current folder)")
    parser.add_argument("--labels", nargs="+", help="a legend label per run (default: folder names)")


def default_output(runs: list[Path]) -> Path:
    """One run's curves live in its folder; a comparison belongs to no single run, so it goes to the current
    folder under the runs' names (it must not overwrite the first run's own curves.png)."""
    if len(runs) == 1:
        return runs[0] / "curves.png"
    return Path("curves-" + "-vs-".join(run.resolve().name for run in runs) + ".png")


def run(args) -> int:
    from ..extras import require

    require("plot", "bert-fast plot")
    from ..training.plot import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise SettingError(f"{len(args.runs)} runs but {len(args.labels)} labels")
    try:
        out = plot_runs(args.runs, args.out or default_output(args.runs), args.labels)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None
    print(f"wrote {out}")
    return 0
