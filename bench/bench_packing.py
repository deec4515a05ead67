"""Padding before and after packing, on the pretraining data itself (no GPU: the data pipeline alone).

For the Wikipedia sample in gensim's wheel, prepared as `bert-fast pretrain` prepares it by default (an 8k
WordPiece vocabulary, dupe factor 2, 10% short sequences), at sequence lengths 128 and 512, the training split:
- unpacked: one example per row of seq_len. "padding" is the share of the row slots that hold padding (what a
  padded implementation computes on); per step, real tokens over the step's slots (batch_size x seq_len).
- online / offline packing (data/packing.py) at the same slot budget per step (batch_size rows of seq_len):
  padding of the budget, examples per row, and the real-token share of every step of an epoch.

Rows go to bench/results/packing.jsonl (with every step's real-token share), a table to bench/results/packing.md.

    python -m bench.bench_packing                     # batch 32 (the pretrain default), seq len 128 and 512
    python -m bench.bench_packing --batch-size 256 --seq-lens 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS_DIR, format_table, save_rows
from bert_fast.data.masking import MaskingSettings
from bert_fast.data.packing import PackedPretrainingBatches, packing_report
from bert_fast.data.prepare import cached_store, cached_tokenizer
from bert_fast.data.store import ExampleSettings, ExampleStore
from bert_fast.training.config import PretrainConfig

COLUMNS = ["seq_len", "packing", "max_per_row", "steps", "padding", "padding_to_batch_longest", "examples_per_row", "examples_per_step",
           "real_share_min", "real_share_p5", "real_share_median", "real_share_max"]


def _share_stats(share: np.ndarray) -> dict:
    return {"real_share_min": float(share.min()), "real_share_p5": float(np.percentile(share, 5)),
            "real_share_median": float(np.median(share)), "real_share_max": float(share.max()),
            "real_share_per_step": [round(float(x), 4) for x in share]}


def unpacked_row(store: ExampleStore, batch_size: int, seed: int) -> dict:
    """Epoch 0 as the unpacked loader draws it: batch_size examples a step, the remainder dropped."""
    lengths = store.lengths()
    perm = np.random.default_rng([seed, 0]).permutation(len(lengths))
    steps = len(lengths) // batch_size
    per_step = lengths[perm[:steps * batch_size]].reshape(steps, batch_size).sum(1)
    share = per_step / (batch_size * store.max_seq_len)
    # what a padded path computes on: each batch padded to its longest example, rounded up to 8 (loader.collate)
    widths = -(-lengths[perm[:steps * batch_size]].reshape(steps, batch_size).max(1) // 8) * 8
    return {"packing": "none", "max_per_row": 1, "steps": steps, "padding": 1.0 - float(lengths.mean()) /
            store.max_seq_len, "padding_to_batch_longest": 1.0 - float(per_step.sum()) / float(widths.sum() *
                                                                                               batch_size),
            "examples_per_row": 1.0, "examples_per_step": float(batch_size), **_share_stats(share)}


def packed_row(store_folder, packing: str, max_per_row: int, batch_size: int, seed: int, tokenizer) -> dict:
    special = {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id, "cls": tokenizer.cls_token_id,
               "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    dataset = PackedPretrainingBatches(store_folder, batch_size, seed, MaskingSettings(), special,
                                       tokenizer.vocab_size, packing=packing, max_per_row=max_per_row)
    report = packing_report(dataset)
    steps = len(report.real_share)
    examples = report.examples_per_row * batch_size
    return {"packing": packing, "max_per_row": max_per_row, "steps": steps, "padding": report.packed_padding,
            "examples_per_row": report.examples_per_row, "examples_per_step": examples,
            **_share_stats(report.real_share)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", default="128,512")
    parser.add_argument("--batch-size", type=int, default=32, help="examples (unpacked) or rows (packed) per step")
    parser.add_argument("--cache-dir", default="", help="tokenizer and store cache (default: bert_fast's)")
    parser.add_argument("--name", default="packing", help="results/<name>.jsonl and .md")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    defaults = PretrainConfig()
    data, seed = defaults.data, defaults.train.seed
    tokenizer, _ = cached_tokenizer(None, data.vocab_size, data.lowercase, args.cache_dir or None)
    rows = []
    for seq_len in (int(s) for s in args.seq_lens.split(",")):
        settings = ExampleSettings(seq_len, data.short_seq_prob, data.dupe_factor, data.eval_fraction,
                                   data.shard_examples, seed)
        folder = cached_store(None, tokenizer, settings, args.cache_dir or None)
        store = ExampleStore(folder, "train")
        common = {"corpus": "wikipedia-sample", "seq_len": seq_len, "batch_size": args.batch_size,
                  "examples": len(store), "vocab_size": tokenizer.vocab_size}
        rows.append({**common, **unpacked_row(store, args.batch_size, seed)})
        for packing, max_per_row in (("online", 3), ("online", 8), ("offline", 3)):
            rows.append({**common, **packed_row(folder, packing, max_per_row, args.batch_size, seed, tokenizer)})
    table = format_table(rows, COLUMNS)
    print(table)
    if not args.no_save:
        path = save_rows(args.name, rows)
        (RESULTS_DIR / f"{args.name}.md").write_text(
            f"Padding before and after packing: Wikipedia sample, training split, {args.batch_size} rows of seq_len "
            "per step (`python -m bench.bench_packing`).\n\n" + table + "\n")
        print(f"rows appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
