"""Packed against unpacked pretraining (GPU): real tokens/s and held-out MLM loss, with transformers as the peer.

Providers, in one run on the same data (the Wikipedia sample, seq len 512, BERT-base by default):
- ours-unpacked: `bert-fast pretrain` as shipped (bf16, the fused path), batch_size examples per step;
- ours-packed-online: the same with data.packing = "online" and the same slots per step (batch_size rows of
  seq_len, train.batch_tokens = batch_size x seq_len), so each step holds more examples; it runs as many steps as
  it takes to see (at least) the examples the unpacked run sees;
- hf-bf16-sdpa (throughput only): transformers' BertForPreTraining with SDPA on the unpacked batches, bf16
  autocast, fused AdamW.

tokens/s counts real (non-padding) tokens: medians of the trainer's logged intervals, leaving out the first and
those that hold an evaluation. The
held-out check: both runs evaluate the same held-out batches with the same masks (evaluation stays unpacked);
their final MLM losses, after the same number of training examples, must agree within 1% (relative). Each
run's evaluations are also compared along the way at equal examples seen (the packed curve interpolated).

    python -m bench.bench_packed_pretrain                      # BERT-base, 300 unpacked steps of 32 x 512
    python -m bench.bench_packed_pretrain --quick              # 60 steps: a smoke run on a GPU
    python -m bench.bench_packed_pretrain --smoke              # no GPU: BERT-tiny on the CPU, checks the plumbing
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS_DIR, format_table, save_rows
from bert_fast.training.config import PretrainConfig
from bert_fast.training.metrics import read_metrics
from bert_fast.training.trainer import pretrain

TOLERANCE = 0.01  # relative, held-out MLM loss after the same examples


def base_config(args) -> PretrainConfig:
    config = PretrainConfig()
    config.model.size = args.model
    config.data.seq_len = args.seq_len
    config.data.dupe_factor = 5
    config.data.cache_dir = args.cache_dir or ""
    if args.corpus:
        config.data.corpus = [str(path) for path in args.corpus]
        config.data.split_sentences = False
    config.train.steps = args.steps
    config.train.batch_size = args.batch_size
    config.train.lr = args.lr
    config.train.warmup_ratio = 0.1
    config.train.log_every = 10
    config.train.eval_every = eval_every(args.steps, config.train.log_every)
    config.train.eval_batches = 100_000  # the whole held-out split: the same batches for both runs
    config.train.checkpoint_every = 0
    config.train.seed = 1234
    if args.smoke:
        config.train.device, config.train.precision, config.model.impl = "cpu", "fp32", "reference"
        config.data.vocab_size = 2000
        config.train.progress = False
    return config


def examples_seen(config: PretrainConfig, store, tokenizer_dir: Path, target: int) -> np.ndarray:
    """Cumulative training examples after each packed step, from the packed dataset the trainer builds (one
    process, one micro-batch a step), up to the first step that reaches `target`."""
    from bert_fast.data.masking import MaskingSettings
    from bert_fast.data.packing import PackedPretrainingBatches
    from bert_fast.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    special = {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id, "cls": tokenizer.cls_token_id,
               "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    dataset = PackedPretrainingBatches(store, config.train.batch_tokens // config.data.seq_len, config.train.seed,
                                       MaskingSettings(), special, tokenizer.vocab_size, packing=config.data.packing,
                                       max_per_row=config.data.max_examples_per_row)
    seen = [0]
    while seen[-1] < target:
        seen.append(seen[-1] + len(dataset.rows_of(len(seen) - 1)))
    return np.asarray(seen[1:])


def clean_throughput(run_dir: Path) -> dict:
    """Median real tokens/s of the logged intervals that hold no evaluation (an evaluation at a logged step runs
    inside the next interval) and are not the first (compiling, autotuning)."""
    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    evals = [r["step"] for r in records if r["split"] == "eval"]
    clean = [r for prev, r in itertools.pairwise(train) if not any(prev["step"] <= e < r["step"] for e in evals)]
    chosen = clean or train
    mfus = [r["mfu"] for r in chosen if r.get("mfu") is not None]
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in chosen),
            "mfu": statistics.median(mfus) if mfus else None, "intervals": len(chosen)}


def eval_every(steps: int, log_every: int) -> int:
    """About five evaluations, each at a logged step (so only the interval after it holds it)."""
    return max(log_every, steps // 5 // log_every * log_every)


def eval_curve(run_dir: Path, examples_at) -> list[tuple[float, float]]:
    return [(float(examples_at(r["step"])), r["mlm_loss"]) for r in read_metrics(run_dir) if r["split"] == "eval"]


def hf_throughput(store: str, tokenizer_dir: Path, model_dir: Path, batch_size: int, steps: int) -> dict:
    """transformers' BertForPreTraining on the unpacked batches: bf16 autocast, SDPA, fused AdamW."""
    from bench.bench_pretrain import hf_pretraining_throughput

    return hf_pretraining_throughput(store, tokenizer_dir, model_dir, batch_size, steps, warmup=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300, help="of the unpacked run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--packing", default="online", choices=["online", "offline"])
    parser.add_argument("--hf-steps", type=int, default=30)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--corpus", type=Path, nargs="+", help="BERT-format text instead of the Wikipedia sample")
    parser.add_argument("--runs-dir", type=Path, default=RESULTS_DIR.parent.parent / "runs" / "bench-packed")
    parser.add_argument("--name", default="packed_pretrain", help="results/<name>.jsonl")
    parser.add_argument("--quick", action="store_true", help="60 unpacked steps (a smoke run on a GPU)")
    parser.add_argument("--smoke", action="store_true",
                        help="no GPU: BERT-tiny at seq len 128 on the CPU for 20 steps; checks the plumbing, saves nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hf_steps = 60, 10
    if args.smoke:
        args.model, args.seq_len, args.steps, args.batch_size, args.lr = "tiny", 128, 20, 8, 1e-3
    elif not torch.cuda.is_available():
        print("bench_packed_pretrain measures a GPU (--smoke checks the plumbing on the CPU)", file=sys.stderr)
        return 1

    stamp = time.strftime("%Y%m%d-%H%M%S")
    unpacked = copy.deepcopy(base_config(args))
    unpacked.out = str(args.runs_dir / f"ours-unpacked-{stamp}")
    print(f"== ours-unpacked: {args.model}, {args.steps} steps of {args.batch_size} x {args.seq_len}", flush=True)
    summary_unpacked = pretrain(unpacked)
    store = summary_unpacked["stores"][str(args.seq_len)]

    packed = copy.deepcopy(base_config(args))
    packed.data.packing = args.packing
    packed.train.batch_tokens = args.batch_size * args.seq_len
    packed.out = str(args.runs_dir / f"ours-packed-{args.packing}-{stamp}")
    target = args.steps * args.batch_size  # the examples the unpacked run trains on
    seen = examples_seen(packed, store, Path(unpacked.out) / "tokenizer", target)
    packed.train.steps = len(seen)
    packed.train.eval_every = eval_every(packed.train.steps, packed.train.log_every)
    print(f"== ours-packed-{args.packing}: {packed.train.steps} steps of {args.batch_size} rows x {args.seq_len} "
          f"({seen[packed.train.steps - 1]} examples; unpacked: {target})", flush=True)
    summary_packed = pretrain(packed)

    # Held-out MLM loss at equal examples seen.
    curve_unpacked = eval_curve(Path(unpacked.out), lambda s: s * args.batch_size)
    curve_packed = eval_curve(Path(packed.out), lambda s: seen[s - 1])
    xs, ys = zip(*curve_packed)
    along = [abs(np.interp(x, xs, ys) - y) / y for x, y in curve_unpacked if xs[0] <= x <= xs[-1]]
    final_unpacked, final_packed = curve_unpacked[-1][1], curve_packed[-1][1]
    final_diff = abs(final_packed - final_unpacked) / final_unpacked
    passed = final_diff <= TOLERANCE

    rows = []
    for name, config, summary in (("ours-unpacked", unpacked, summary_unpacked),
                                  (f"ours-packed-{args.packing}", packed, summary_packed)):
        rows.append({"provider": name, "model": args.model, "seq_len": args.seq_len, "batch_size": args.batch_size,
                     "steps": config.train.steps, **clean_throughput(Path(config.out)),
                     "final_eval_mlm_loss": summary["eval"]["mlm_loss"], "run_dir": config.out})
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup_vs_unpacked"] = row["tokens_per_s"] / base
    rows.append({"provider": "held-out packed vs unpacked", "examples": target, "final_rel_diff": final_diff,
                 "max_rel_diff_along": max(along) if along else None, "tolerance": TOLERANCE, "passed": passed})
    if not args.smoke:
        save_rows(args.name, rows)  # before the peer runs: a call cut off keeps the comparison
        try:
            hf = hf_throughput(store, Path(unpacked.out) / "tokenizer", Path(unpacked.out) / "model", args.batch_size,
                               args.hf_steps)
            hf_row = {"provider": "hf-bf16-sdpa", "model": args.model, "seq_len": args.seq_len,
                      "batch_size": args.batch_size, **hf, "speedup_vs_unpacked": hf["tokens_per_s"] / base}
            save_rows(args.name, [hf_row])
            rows.insert(-1, hf_row)
        except (ImportError, RuntimeError, TypeError, ValueError, AttributeError, KeyError) as e:  # an optional peer
            print(f"transformers peer not measured: {e!r}", file=sys.stderr)
    print(format_table([r for r in rows if "tokens_per_s" in r],
                       ["provider", "model", "seq_len", "batch_size", "steps", "tokens_per_s", "mfu",
                        "speedup_vs_unpacked", "final_eval_mlm_loss"]))
    print(f"held-out MLM loss after {target} examples: unpacked {final_unpacked:.4f}, packed {final_packed:.4f}, "
          f"relative difference {final_diff:.3%} (tolerance {TOLERANCE:.0%}): {'PASS' if passed else 'FAIL'}")
    print(json.dumps({"along_the_way": [round(x, 5) for x in along]}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
