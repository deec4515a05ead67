"""End-to-end benchmark: bert_fast vs Hugging Face eager / sdpa / torch.compile, BERT-base and BERT-large.

Run on one CUDA GPU:  python -m bench.bench_e2e [--quick] [--sizes base] [--workloads NAME,..] [--providers NAME,..]
Rows (with GPU, versions, git sha, date) append to bench/results/e2e.jsonl as each is measured, so a run cut off
by a time limit keeps what it finished; the ratio table of this run goes to bench/results/e2e.md and a bar chart
to bench/results/e2e.png. The workloads and the units are defined in bert_fast/benchmark.py (tokens/s counts
real tokens only). One size with every workload and provider is several minutes on an H100, most of it
torch.compile of the Hugging Face model: run one size per 10-minute command.
"""

from __future__ import annotations

import argparse
import json

from bench.common import RESULTS_DIR, format_table, save_rows
from bert_fast import benchmark


def plot(table: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["workload"]) for r in table})
    providers = [p for p in benchmark.PROVIDERS if any(r["provider"] == p for r in table)]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(groups)), 4.5))
    width = 0.8 / len(providers)
    for i, provider in enumerate(providers):
        values = [next((r["x hf-sdpa"] or 0 for r in table if (r["model"], r["workload"]) == g
                        and r["provider"] == provider), 0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=provider)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{w}" for m, w in groups], fontsize=7)
    ax.set_ylabel("real tokens/s vs HF sdpa")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="base only, fewer iterations")
    parser.add_argument("--sizes", help="comma separated model sizes (default: base,large; base with --quick)")
    parser.add_argument("--workloads", help=f"comma separated, of {[w.name for w in benchmark.WORKLOADS]}")
    parser.add_argument("--providers", help=f"comma separated, of {benchmark.PROVIDERS}")
    parser.add_argument("--name", default="e2e",
                        help="this run's table and plot go to bench/results/NAME.md and NAME.png (rows: e2e.jsonl)")
    parser.add_argument("--from-rows", metavar="GIT_SHA",
                        help="measure nothing: render NAME.md and NAME.png from the e2e.jsonl rows of this commit "
                             "(e.g. a run cut off by a time limit, whose rows were saved as they were measured)")
    args = parser.parse_args()
    if args.from_rows:
        saved = [json.loads(line) for line in (RESULTS_DIR / "e2e.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in saved if r.get("git_sha") == args.from_rows]
        if not rows:
            parser.error(f"no rows of commit {args.from_rows} in {RESULTS_DIR / 'e2e.jsonl'}")
        return render(rows, args.name)
    sizes = args.sizes.split(",") if args.sizes else ("base",) if args.quick else ("base", "large")
    workloads = None
    if args.workloads:
        by_name = {w.name: w for w in benchmark.WORKLOADS}
        unknown = [n for n in args.workloads.split(",") if n not in by_name]
        if unknown:
            parser.error(f"unknown workloads {unknown}; choose from {list(by_name)}")
        workloads = [by_name[n] for n in args.workloads.split(",")]
    providers = args.providers.split(",") if args.providers else None
    if providers and set(providers) - set(benchmark.PROVIDERS):
        parser.error(f"unknown providers {sorted(set(providers) - set(benchmark.PROVIDERS))}; "
                     f"choose from {benchmark.PROVIDERS}")
    rows = benchmark.run(sizes, workloads, providers, iters=5 if args.quick else 20, warmup=2 if args.quick else 5,
                         on_row=lambda row: save_rows("e2e", [row]))
    render(rows, args.name)


def render(rows: list[dict], name: str) -> None:
    table = benchmark.ratio_table(rows)
    text = format_table(table, ["model", "workload", "provider", "tok/s", "ms", "GiB", "x hf-sdpa"])
    (RESULTS_DIR / f"{name}.md").write_text(text + "\n")
    plot(table, RESULTS_DIR / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
