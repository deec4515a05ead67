"""Does a bf16 residual stream cost fine-tuning quality? A CPU experiment, no GPU needed.

Under bf16 autocast the two paths differ in one place beyond rounding order. Hugging Face's BERT (and our reference
path) keeps the residual stream in fp32: autocast runs LayerNorm in fp32, and its output feeds both the next GEMM
(cast to bf16) and the next residual add (fp32). The fused path keeps it in bf16: add_layer_norm stores its output
in the activations' dtype, so the stream, and the gradient flowing back along it, are rounded to bf16 at every
layer. The first GPU fine-tuning run put the fused path 7 entity-F1 points under the reference on WNUT-16 with one
seed (bench/NOTES.md §6): noise on 153 test entities, or this?

This runs the reference path in fp32 twice per seed: as it is, and with the residual stream (the outputs of the
embeddings and of every add + LayerNorm) and its gradient rounded to bf16, everything else exact. Same seed, same
data order, same initial classifier: the pairs differ only in the rounding. bf16 matmuls run about 60x slower than
fp32 on a CPU without bf16 instructions, which is why the rounding is emulated instead of running autocast.

    python -m bench.residual_precision --seeds 1,2,3          # WNUT-16, the recipe of finetune_results.md
    python -m bench.residual_precision --quick                # smoke run

Rows append to bench/results/residual_precision.jsonl; a table of the pairs prints last.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
from pathlib import Path

import torch

from bench.bench_finetune import finetune_row, subsample
from bench.common import environment, format_table, save_rows
from bench.finetune_data import write as write_data


class RoundToBf16(torch.autograd.Function):
    """Identity whose output and incoming gradient are rounded to bf16: a tensor stored in bf16, both ways."""

    @staticmethod
    def forward(ctx, x):
        return x.to(torch.bfloat16).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(torch.bfloat16).to(grad.dtype)


@contextlib.contextmanager
def bf16_residual_stream():
    """Round every module output that is the residual stream, while the context is open (all models)."""
    from bert_fast.modeling import BertEmbeddings, BertOutput, BertSelfOutput

    def round_output(module, args, output):
        if isinstance(module, (BertEmbeddings, BertSelfOutput, BertOutput)):
            return RoundToBf16.apply(output)
        return None

    handle = torch.nn.modules.module.register_module_forward_hook(round_output)
    try:
        yield
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--model", type=Path, help="default: all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=Path("runs/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/residual_precision"))
    parser.add_argument("--quick", action="store_true", help="256 training tweets, 4 steps: a smoke run")
    args = parser.parse_args()
    args.device, args.max_steps = "cpu", None
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from bert_fast.commands.encode import default_model_dir

    model_dir = args.model or default_model_dir()
    data = args.data
    if not (data / "wnut" / "train.conll").is_file():
        write_data(data)
    if args.quick:
        data = subsample(data, args.out / "quick_data", 256, 64)
        args.epochs, args.max_steps = 1, 4

    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for residual in ("fp32", "bf16"):
            args_out = args.out
            args.out = args_out / f"residual-{residual}"
            with bf16_residual_stream() if residual == "bf16" else contextlib.nullcontext():
                row = finetune_row("wnut", "reference", seed, args, data, model_dir)
            args.out = args_out
            rows.append({**row, "residual": residual, "emulated": "fp32 compute, residual stream rounded"})
            print(rows[-1], file=sys.stderr)
    if not args.quick:
        save_rows("residual_precision", rows)

    pairs = []
    for seed in sorted({r["seed"] for r in rows}):
        by = {r["residual"]: r for r in rows if r["seed"] == seed}
        pairs.append({"seed": seed, "test fp32": by["fp32"]["test"], "test bf16": by["bf16"]["test"],
                      "dev fp32": by["fp32"]["dev"], "dev bf16": by["bf16"]["dev"],
                      "test diff": by["bf16"]["test"] - by["fp32"]["test"]})
    env = environment()
    print(f"\n{env['device']}, torch {env['torch']}, {env['git_sha']}; WNUT-16 entity F1, bf16 - fp32 residual\n")
    print(format_table(pairs, ["seed", "test fp32", "test bf16", "test diff", "dev fp32", "dev bf16"]))
    if len(pairs) > 1:
        diffs = [p["test diff"] for p in pairs]
        print(f"\nmean test difference {statistics.mean(diffs):+.3f} (std {statistics.stdev(diffs):.3f})")


if __name__ == "__main__":
    main()
