"""Time to the first trained step: what Triton's compiling and autotuning add to a fresh process, and what
`bert-fast warmup` (bert_fast.warmup) takes off it.

Each measurement is a fresh Python process with its own Triton cache folder, timed from its start to the end of
its first training step (imports, model, one forward + backward + AdamW step on the fused path):
  cold    an empty cache: every kernel compiles, every tuning key is timed
  warm    the same cache again: what a second run of the same job pays
  warmup  an empty cache that `warm_up(config, [seq])` filled in an earlier process
Workloads: fine-tuning all-MiniLM-L6-v2's shape (classification, B32 x S64) and pretraining BERT-mini (B128 x S128).

    python -m bench.bench_first_step                # GPU: rows appended to bench/results/first_step.jsonl
    python -m bench.bench_first_step --stub-driver  # CPU: compiling for sm_90 is real, kernels and timings are not
                                                    # (bench/stub_driver.py); --save appends the rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import format_table, save_rows

NAME = "first_step"
WORKLOADS = {  # name: (size, task, batch, seq)
    "finetune-minilm-l6-B32-S64": ("minilm-l6", "classification", 32, 64),
    "pretrain-mini-B128-S128": ("mini", "pretraining", 128, 128),
}


def child(workload: str, stub: bool, warmup_only: bool) -> None:
    """One process: the first training step (or only bert_fast.warmup for the workload's shapes)."""
    start = time.perf_counter()
    if stub:
        from bench import stub_driver

        stub_driver.install()
        stub_driver.compile_while_tuning = True
    import torch

    from bert_fast import benchmark
    from bert_fast.warmup import warm_up

    size, task, batch_size, seq = WORKLOADS[workload]
    device = "cpu" if stub else "cuda"
    # half precision, so the attention kernels take their autotuned path (fp16 on the CPU: the stub has no bf16)
    dtype = torch.float16 if stub else torch.bfloat16
    config = benchmark.size_config(size)
    if stub:
        torch.set_num_threads(1)
        batch_size = 4  # compiling does not depend on the batch; the CPU's GEMMs would
    if warmup_only:
        warm_up(config, [seq], dtype, inference=False, device=device, log=lambda line: None)
        return
    mode_workload = benchmark.Workload(workload, "train", batch_size, seq, True, task)
    state = benchmark.shared_state(config, task)
    model = benchmark.build("bert_fast", config, "train", state, device, task)
    batch = benchmark.make_batch(mode_workload, config.vocab_size, device, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=not stub or None)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    if not stub:
        torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - start, "loss": float(loss)}))


def _run_child(workload: str, cache: str, stub: bool, warmup_only: bool = False) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = cache
    argv = [sys.executable, "-m", "bench.bench_first_step", "--child", workload] + ["--stub-driver"] * stub
    argv += ["--warmup-only"] * warmup_only
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{workload}: {proc.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    if warmup_only:
        return seconds
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stub-driver", action="store_true", help="no GPU: compile for sm_90, stub the launches")
    parser.add_argument("--save", action="store_true", help="without a GPU, append this machine's rows too")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warmup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.stub_driver, args.warmup_only)
    import torch

    cuda = torch.cuda.is_available() and not args.stub_driver
    if not cuda and not args.stub_driver:
        parser.error("needs a CUDA device, or --stub-driver")
    where = "cuda" if cuda else "cpu, stub driver"
    rows = []
    for workload in args.workloads.split(","):
        with tempfile.TemporaryDirectory() as cold, tempfile.TemporaryDirectory() as prepared:
            cold_s = _run_child(workload, cold, args.stub_driver)
            warm_s = _run_child(workload, cold, args.stub_driver)
            warmup_s = _run_child(workload, prepared, args.stub_driver, warmup_only=True)
            after_s = _run_child(workload, prepared, args.stub_driver)
        for cache, seconds in (("cold", cold_s), ("warm", warm_s), ("after warmup", after_s),
                               ("warmup process", warmup_s)):
            rows.append({"workload": workload, "cache": cache, "seconds": seconds, "host": where})
            print(f"{workload:28s} {cache:15s} {seconds:7.1f} s", flush=True)
    if cuda or args.save:
        save_rows(NAME, rows)
    print(format_table(rows, ["workload", "cache", "seconds"]))


if __name__ == "__main__":
    main()
