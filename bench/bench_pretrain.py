"""End-to-end pretraining benchmark (GPU): convergence of the bf16 fast path against the fp32 reference, and
training throughput (tokens/s, MFU) against Hugging Face transformers.

Providers, measured in one run on the same data (the Wikipedia sample in gensim's wheel, seq len 128):
- ours-bf16-triton: `bert-fast pretrain` as shipped on a GPU: bf16 autocast, fp32 master weights, impl auto
  (our Triton kernels, packed real tokens), MLM head on masked positions only;
- ours-fp32-reference: the same run in fp32 on the PyTorch reference path (the specification);
- hf-bf16-sdpa (throughput only): transformers' BertForPreTraining with SDPA attention, bf16 autocast, fused
  AdamW, on the same batches; it computes (batch, seq, vocab) logits, as a user of transformers would.

Convergence check: the training MLM loss of the two runs, smoothed over a window of 50 steps, differs by at
most 2% (relative) at every logged step after the first 10% of the run; the held-out MLM loss at each
evaluation too. The curves go to bench/results/pretrain_convergence.png.

Units. tokens/s counts real (non-padding) tokens over all ranks. Training FLOPs per token (bert_fast/training/
flops.py): 6 * N + 12 * L * H * S, N = parameters outside the embeddings, L layers, H hidden size, S sequence
length; MFU = tokens/s * FLOPs per token / peak FLOP/s (H100 SXM bf16 dense: 989e12; fp32 without TF32: 67e12).

    python bench/bench_pretrain.py                # BERT-mini, 3000 steps of 128 x 128 tokens per provider
    python bench/bench_pretrain.py --quick        # 200 steps of 32: a smoke run (minutes on a GPU)
    python bench/bench_pretrain.py --from-log results/bench_pretrain_43ce038.log --log-sha 43ce038
                                                  # no GPU: rows and plot of a run cut off before it saved them
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS_DIR, environment_of, format_table, save_rows
from bert_fast.training.config import PretrainConfig
from bert_fast.training.metrics import read_metrics
from bert_fast.training.trainer import pretrain

TOLERANCE = 0.02  # relative, on smoothed MLM loss
WINDOW = 50


def base_config(args) -> PretrainConfig:
    config = PretrainConfig()
    config.model.size = args.model
    config.data.dupe_factor = 5  # more distinct pairs for a few thousand steps
    config.data.cache_dir = args.cache_dir or ""
    if args.corpus:  # e.g. the Wikipedia sample written out as one sentence per line, where gensim is not installed
        config.data.corpus = [str(path) for path in args.corpus]
        config.data.split_sentences = False
    config.train.steps = args.steps
    config.train.batch_size = args.batch_size
    config.train.lr = args.lr
    config.train.warmup_ratio = 0.05
    config.train.log_every = 10
    config.train.eval_every = max(args.steps // 10, 10)
    config.train.eval_batches = 32
    config.train.checkpoint_every = 0
    config.train.progress = True
    config.train.profile_steps = args.profile_steps
    config.train.seed = 1234
    return config


def smoothed(records: list[dict], key: str) -> dict[int, float]:
    steps = [r["step"] for r in records]
    values = [r[key] for r in records]
    out = {}
    span = max(1, WINDOW // 10)  # records are every 10 steps
    for i, step in enumerate(steps):
        window = values[max(0, i - span + 1):i + 1]
        out[step] = sum(window) / len(window)
    return out


def compare_curves(fast: list[dict], ref: list[dict], steps: int) -> dict:
    """Relative differences of the MLM loss between two runs' metrics records, after the first 10% of the steps:
    smoothed training loss (where the records split it out) and held-out loss."""
    out = {}
    ft = smoothed([r for r in fast if r["split"] == "train" and "mlm_loss" in r], "mlm_loss")
    rt = smoothed([r for r in ref if r["split"] == "train" and "mlm_loss" in r], "mlm_loss")
    common = [s for s in sorted(ft) if s in rt and s >= steps // 10]
    if common:
        out["max_rel_diff_train_mlm"] = max(abs(ft[s] - rt[s]) / rt[s] for s in common)
        out["final_train_mlm_fast"], out["final_train_mlm_ref"] = ft[common[-1]], rt[common[-1]]
    fe = {r["step"]: r["mlm_loss"] for r in fast if r["split"] == "eval"}
    re_ = {r["step"]: r["mlm_loss"] for r in ref if r["split"] == "eval"}
    both = [s for s in fe if s in re_ and s >= steps // 10]
    if both:
        out["max_rel_diff_eval_mlm"] = max(abs(fe[s] - re_[s]) / re_[s] for s in both)
    compared = [v for k, v in out.items() if k.startswith("max_rel_diff")]
    out["passed"] = bool(compared) and all(v <= TOLERANCE for v in compared)
    return out


def throughput(records: list[dict]) -> dict:
    train = [r for r in records if r["split"] == "train"][1:]  # the first interval includes warm-up
    tokens = statistics.median(r["tokens_per_s"] for r in train)
    mfus = [r["mfu"] for r in train if r.get("mfu") is not None]
    return {"tokens_per_s": tokens, "mfu": statistics.median(mfus) if mfus else None}


# What the progress bar prints (trainer.py) when stderr is not a terminal: a run's header (this script), the
# training line every few seconds and every held-out evaluation.
LOG_RUN = re.compile(r"^== (\S+): (\w+), (\d+) steps of (\d+) x (\d+)")
LOG_TRAIN = re.compile(r"^step (\d+)/\d+ loss=([\d.]+) lr=\S+ tok_s=([\d,]+) mfu=([\d.]+)%")
LOG_EVAL = re.compile(r"^step (\d+): eval mlm_acc ([\d.]+) ppl ([\d.]+) nsp_acc ([\d.]+)")


def runs_from_log(path: Path) -> dict[str, dict]:
    """{provider: {model, steps, batch_size, seq_len, records}} from the printed log of a run of this script, with
    records shaped like metrics.jsonl's: the logged total loss (MLM + NSP, not split), tokens/s and MFU, and every
    evaluation (held-out MLM loss = log perplexity). For runs cut off before their rows and plot were saved."""
    runs, records = {}, None
    for line in path.read_text().splitlines():
        if m := LOG_RUN.match(line):
            records = []
            runs[m[1]] = {"model": m[2], "steps": int(m[3]), "batch_size": int(m[4]), "seq_len": int(m[5]),
                          "records": records}
        elif records is None:
            continue
        elif m := LOG_TRAIN.match(line):
            records.append({"split": "train", "step": int(m[1]), "loss": float(m[2]),
                            "tokens_per_s": float(m[3].replace(",", "")), "mfu": float(m[4]) / 100})
        elif m := LOG_EVAL.match(line):
            records.append({"split": "eval", "step": int(m[1]), "mlm_accuracy": float(m[2]),
                            "perplexity": float(m[3]), "mlm_loss": math.log(float(m[3])),
                            "nsp_accuracy": float(m[4])})
    if not runs:
        raise ValueError(f"{path} holds no run of bench_pretrain (no '== provider: ...' header)")
    return runs


def report_from_log(log: Path, git_sha: str, runs_dir: Path) -> int:
    """Rows and plot of a run whose call was cut off after both runs finished, from its log. The rows carry the
    environment recorded by the same commit's other rows, and the log's name."""
    env = {**environment_of(git_sha, RESULTS_DIR), "source": f"log {log.name}"}
    runs = runs_from_log(log)
    fast, ref = runs["ours-bf16-triton"], runs["ours-fp32-reference"]
    curves = compare_curves(fast["records"], ref["records"], fast["steps"])
    rows = []
    for name, run in runs.items():
        last_eval = [r for r in run["records"] if r["split"] == "eval"][-1]
        rows.append({"provider": name, "model": run["model"], "steps": run["steps"], "batch_size": run["batch_size"],
                     "seq_len": run["seq_len"], **throughput(run["records"]),
                     "final_eval_mlm_accuracy": last_eval["mlm_accuracy"],
                     "final_eval_perplexity": last_eval["perplexity"]})
    for row in rows:
        row["ours_bf16_speedup"] = rows[0]["tokens_per_s"] / row["tokens_per_s"]
    rows.append({"provider": "convergence bf16-triton vs fp32-reference", **curves, "tolerance": TOLERANCE})
    save_rows("bench_pretrain", rows, RESULTS_DIR, env=env)

    from bert_fast.training.plot import plot_runs

    dirs = []
    for name, run in runs.items():  # metrics.jsonl files for the plot, in git-ignored run folders
        (runs_dir / f"{name}-{git_sha}-log").mkdir(parents=True, exist_ok=True)
        (runs_dir / f"{name}-{git_sha}-log" / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in run["records"]))
        dirs.append(runs_dir / f"{name}-{git_sha}-log")
    png = plot_runs(dirs, RESULTS_DIR / "pretrain_convergence.png", labels=["bf16 fast path", "fp32 reference"])
    print(f"curves: {png}")
    _print_report(rows, curves)
    return 0 if curves["passed"] else 1


def _print_report(rows: list[dict], curves: dict) -> None:
    diffs = ", ".join(f"{k.removeprefix('max_rel_diff_').replace('_', ' ')} {v:.3%}"
                      for k, v in curves.items() if k.startswith("max_rel_diff"))
    print(f"convergence: max relative difference of the MLM loss: {diffs} (tolerance {TOLERANCE:.0%}): "
          f"{'PASS' if curves['passed'] else 'FAIL'}")
    print(format_table([r for r in rows if "tokens_per_s" in r],
                       ["provider", "model", "batch_size", "tokens_per_s", "mfu", "ours_bf16_speedup",
                        "final_eval_mlm_accuracy", "final_eval_perplexity"]))


def hf_throughput(config: PretrainConfig, run_dir: Path, steps: int) -> dict:
    """transformers' BertForPreTraining on our batches: bf16 autocast, SDPA, fused AdamW."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return hf_pretraining_throughput(summary["stores"]["128"], run_dir / "tokenizer", run_dir / "model",
                                     config.train.batch_size, steps, warmup=10)


def hf_pretraining_throughput(store, tokenizer_dir: Path, model_dir: Path, batch_size: int, steps: int,
                              warmup: int = 5) -> dict:
    """transformers' BertForPreTraining (the config of the model in model_dir) on a store's unpacked training
    batches: bf16 autocast, SDPA, fused AdamW; real tokens per second after `warmup` steps."""
    import transformers

    from bert_fast.config import BertConfig
    from bert_fast.data.loader import PretrainingBatches
    from bert_fast.data.masking import MaskingSettings
    from bert_fast.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    ours = BertConfig.from_json_file(Path(model_dir) / "config.json")
    hf_config = transformers.BertConfig(**{k: v for k, v in ours.to_dict().items() if k != "architectures"},
                                        attn_implementation="sdpa")
    model = transformers.BertForPreTraining(hf_config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    special = {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id, "cls": tokenizer.cls_token_id,
               "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    data = PretrainingBatches(store, "train", batch_size, 0, MaskingSettings(), special, tokenizer.vocab_size)
    batches = [{k: v.cuda() for k, v in data[j].items()} for j in range(min(20, len(data)))]

    def step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(batches[i % len(batches)])
    torch.cuda.synchronize()
    start, tokens = time.perf_counter(), 0
    for i in range(steps):
        batch = batches[i % len(batches)]
        step(batch)
        tokens += int(batch["attention_mask"].sum())
    torch.cuda.synchronize()
    return {"tokens_per_s": tokens / (time.perf_counter() - start)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hf-steps", type=int, default=200)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--corpus", type=Path, nargs="+",
                        help="BERT-format text (one sentence per line, a blank line between documents) "
                             "instead of the Wikipedia sample read from gensim's wheel")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="profile this many steps of each run (train.profile_steps); the tables go to "
                             "bench/results/pretrain_profile_<provider>.txt")
    parser.add_argument("--quick", action="store_true", help="200 steps of 32 examples, a smoke run")
    parser.add_argument("--runs-dir", type=Path, default=RESULTS_DIR.parent.parent / "runs" / "bench-pretrain",
                        help="run folders (checkpoints, metrics; git-ignored); the rows and the plot go to bench/results")
    parser.add_argument("--from-log", type=Path, metavar="LOG",
                        help="no training: the rows and plot of a finished run cut off before it saved them, from "
                             "its printed log (needs --log-sha)")
    parser.add_argument("--log-sha", help="the commit the logged run measured (its other rows give the environment)")
    args = parser.parse_args()
    if args.from_log:
        if not args.log_sha:
            parser.error("--from-log needs --log-sha")
        return report_from_log(args.from_log, args.log_sha, args.runs_dir)
    if args.quick:
        args.steps, args.batch_size, args.hf_steps = 200, 32, 50
    if not torch.cuda.is_available():
        print("bench_pretrain measures a GPU; without CUDA it would compare fp32 with fp32 on the CPU", file=sys.stderr)
        return 1

    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = {}
    for name, precision, impl in (("ours-bf16-triton", "bf16", "auto"), ("ours-fp32-reference", "fp32", "reference")):
        config = copy.deepcopy(base_config(args))
        config.train.precision = precision
        config.model.impl = impl
        config.out = str(args.runs_dir / f"{name}-{stamp}")
        print(f"== {name}: {args.model}, {args.steps} steps of {args.batch_size} x 128", flush=True)
        summary = pretrain(config)
        runs[name] = (Path(config.out), summary)
        profile = Path(config.out) / "profile" / "ops.txt"
        if profile.exists():
            shutil.copy(profile, RESULTS_DIR / f"pretrain_profile_{name}.txt")

    fast_dir, ref_dir = runs["ours-bf16-triton"][0], runs["ours-fp32-reference"][0]
    curves = compare_curves(read_metrics(fast_dir), read_metrics(ref_dir), args.steps)
    rows = []
    for name, (run_dir, summary) in runs.items():
        rows.append({"provider": name, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
                     "seq_len": 128, **throughput(read_metrics(run_dir)),
                     "final_eval_mlm_accuracy": summary["eval"]["mlm_accuracy"],
                     "final_eval_perplexity": summary["eval"]["perplexity"], "run_dir": str(run_dir)})
    ours = rows[0]["tokens_per_s"]
    for row in rows:
        row["ours_bf16_speedup"] = ours / row["tokens_per_s"]
    rows.append({"provider": "convergence bf16-triton vs fp32-reference", **curves, "tolerance": TOLERANCE})
    # saved before the transformers peer runs, so a run cut off by a time limit keeps the comparison
    save_rows("bench_pretrain", rows)

    from bert_fast.training.plot import plot_runs

    png = plot_runs([fast_dir, ref_dir], RESULTS_DIR / "pretrain_convergence.png",
                    labels=["bf16 fast path", "fp32 reference"])
    try:
        hf = hf_throughput(base_config(args), fast_dir, args.hf_steps)
        hf_row = {"provider": "hf-bf16-sdpa", "model": args.model, "batch_size": args.batch_size, "seq_len": 128,
                  **hf, "mfu": None, "ours_bf16_speedup": ours / hf["tokens_per_s"]}
        save_rows("bench_pretrain", [hf_row])
        rows.insert(-1, hf_row)
    except (ImportError, RuntimeError, TypeError, ValueError, AttributeError, KeyError) as e:  # an optional peer
        print(f"transformers peer not measured: {e!r}", file=sys.stderr)
    print(f"curves: {png}")
    _print_report(rows, curves)
    return 0 if curves["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
