"""`bert-fast bench`: the end-to-end benchmark against Hugging Face transformers (needs CUDA)."""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--sizes", nargs="+", default=["base", "large"], help="model sizes (presets)")
    parser.add_argument("--workloads", nargs="+", help="subset of workload names (default: all)")
    parser.add_argument("--providers", nargs="+",
                        help="providers to run (default: all but the opt-in bert_fast+fused-ffn ones)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--output", type=Path, help="also write the rows as JSON lines here")


def run(args) -> int:
    import torch

    from .. import benchmark

    if not torch.cuda.is_available():
        raise SystemExit("bert-fast bench: the end-to-end benchmark needs a CUDA device (none is visible)")
    for kind, asked, known in (("workload", args.workloads, [w.name for w in benchmark.WORKLOADS]),
                               ("provider", args.providers, benchmark.PROVIDERS)):
        unknown = sorted(set(asked or []) - set(known))
        if unknown:
            raise SystemExit(f"bert-fast bench: no {kind} {', '.join(unknown)}; choose from {', '.join(known)}")
    workloads = [w for w in benchmark.WORKLOADS if not args.workloads or w.name in args.workloads]
    rows = benchmark.run(args.sizes, workloads, args.providers, warmup=args.warmup, iters=args.iters)
    if args.output:
        args.output.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print()
    for r in benchmark.ratio_table(rows):
        ratio = r["x hf-sdpa"]
        print(f"{r['model']:5s} {r['workload']:24s} {r['provider']:18s} {r['tok/s'] / 1e3:9.1f}k tok/s "
              f"{r['GiB']:6.2f} GiB  " + (f"{ratio:5.2f}x hf-sdpa" if ratio else ""))
    return 0
