"""Benchmark: BERT's FFN up-projection and GELU as one Triton GEMM (linear_gelu) against the split forms.

    python -m bench.bench_linear_gelu            # H100/H200: rows appended to bench/results/linear_gelu.jsonl
    python -m bench.bench_linear_gelu --quick    # base shapes only, no max-autotune peer (on a CPU: a smoke run)

The question it answers: does folding bias + exact GELU into the GEMM's epilogue (saving 2 x tokens x 4 hidden
activation bytes) beat cuBLAS's GEMM followed by our bias_gelu kernel, at BERT's shapes? Providers, one run, the
same bf16 inputs (x (tokens, hidden), weight (4 hidden, hidden), bias (4 hidden,)):
- fused:      bert_fast_kernels.linear_gelu (Triton GEMM, bias + GELU in the epilogue; autotuned, the pick recorded),
              the tiled kernel (one program per output tile, cp.async loads)
- fused-persistent: the same with variant="persistent" (one program per SM, TMA loads and stores, the tile loop
              and the K loop pipelined as one, so a tile's epilogue overlaps the next tile's loads)
- split:      F.linear without bias (cuBLAS) + our bias_gelu kernel: the model's default path
- eager:      F.gelu(F.linear(x, weight, bias)): what Hugging Face runs
- compile:    torch.compile of eager (cuBLAS GEMM + an Inductor epilogue kernel)
- compile-max-autotune: torch.compile(mode="max-autotune-no-cudagraphs"): Inductor may pick its own Triton GEMM
              template with the GELU fused, the closest peer to ours. Its autotuning takes minutes per shape, so it
              runs at the headline shape only (base, 32768 tokens) and not in --quick
- gemm:       F.linear(x, weight) alone: the cuBLAS GEMM the split forms pay before any epilogue
Modes: fwd (inference, no grad) and fwd+bwd (gradients for x, weight, bias). TFLOP/s = 2 M N K (fwd) or 6 M N K
(fwd+bwd) over the time, the same count for every provider, so ratios are speed ratios.
Shapes: 32768 tokens (B256 x S128) and 18432 (the ragged B64 x S512 batch's mean), base (768 -> 3072) and large
(1024 -> 4096).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # the CPU smoke run needs Triton's interpreter, set before the kernels import
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bert_fast_kernels import bias_gelu, linear_gelu

from bench.common import device_ms, format_table, run_setting, save_rows

NAME = "linear_gelu"
TOKENS = (32768, 18432)
SHAPES = {"base": (768, 3072), "large": (1024, 4096)}
MODES = ("fwd", "fwd+bwd")


def providers(device: str) -> dict:
    def split(x, weight, bias):
        return bias_gelu(F.linear(x, weight), bias)

    def eager(x, weight, bias):
        return F.gelu(F.linear(x, weight, bias))

    def fused_persistent(x, weight, bias):
        return linear_gelu(x, weight, bias, variant="persistent")

    out = {"fused": linear_gelu, "fused-persistent": fused_persistent, "split": split, "eager": eager}
    if device == "cuda":
        out["compile"] = torch.compile(eager, dynamic=False)
        out["compile-max-autotune"] = torch.compile(eager, dynamic=False, mode="max-autotune-no-cudagraphs")
    out["gemm"] = lambda x, weight, bias: F.linear(x, weight)
    return out


def time_mode(fn, inputs: list, mode: str, timer, cuda: bool) -> tuple[float, float | None]:
    """(ms per call as an eager caller sees it, ms of device time alone from a CUDA-graph replay; None off a GPU)."""
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return fn(*inputs)
    else:
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        dy = torch.randn(inputs[0].shape[0], inputs[1].shape[0], device=inputs[0].device, dtype=inputs[0].dtype)

        def step():
            return torch.autograd.grad(fn(*leaves), leaves, dy)

    return timer(step), (device_ms(step) if cuda else None)


def chosen_config(provider: str) -> str | None:
    """The autotuner's pick for the last shape timed (the module, not the function the package exports)."""
    module = importlib.import_module("bert_fast_kernels.linear_gelu")
    tuner = module._tuned_persistent if provider == "fused-persistent" else module._tuned
    best = getattr(tuner, "best_config", None)
    return None if best is None else str(best)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="base shapes, no max-autotune peer; on a CPU a smoke run")
    args = parser.parse_args(argv)

    cuda, device, dtype, timer = run_setting()
    if cuda:
        torch._dynamo.config.cache_size_limit = 64
        cases = [(m, name) for m in TOKENS for name in SHAPES]
        if args.quick:
            cases = [(TOKENS[0], "base")]
        shapes = SHAPES
    else:
        cases, shapes = [(64, "tiny")], {"tiny": (32, 64)}
    fns = providers(device)

    rows = []
    for m, model in cases:
        case_start = len(rows)
        k, n = shapes[model]
        inputs = [torch.randn(m, k, device=device).to(dtype), (torch.randn(n, k, device=device) / k**0.5).to(dtype),
                  (0.1 * torch.randn(n, device=device)).to(dtype)]  # fmt: skip
        for mode in MODES:
            flops = (2 if mode == "fwd" else 6) * m * n * k
            for provider, fn in fns.items():
                if provider == "gemm" and mode != "fwd":
                    continue
                if provider == "compile-max-autotune" and (args.quick or (m, model) != (TOKENS[0], "base")):
                    continue
                try:
                    ms, dev_ms = time_mode(fn, inputs, mode, timer, cuda)
                except (RuntimeError, NotImplementedError) as e:  # a provider that cannot run: say so, go on
                    print(f"{model} M={m} {mode} {provider}: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                row = {"model": model, "tokens": m, "k": k, "n": n, "mode": mode, "provider": provider,
                       "dtype": str(dtype).removeprefix("torch."), "ms": ms, "tflop_s": flops / ms / 1e9,
                       "device_ms": dev_ms, "device_tflop_s": flops / dev_ms / 1e9 if dev_ms else None}  # fmt: skip
                if provider.startswith("fused") and cuda:
                    row["config"] = chosen_config(provider)
                rows.append(row)
                print(f"{model:5s} M={m:6d} {mode:8s} {provider:22s} {ms:8.4f} ms {row['tflop_s']:7.1f} TFLOP/s")
        if cuda:  # each shape's rows are saved when it is done: a run cut off by a time limit keeps them
            path = save_rows(NAME, rows[case_start:])
            torch._dynamo.reset()

    if cuda:
        print(f"\nrows appended to {path}")
    else:
        print("\nCPU smoke run (interpreter, float32, tiny shapes): timings are meaningless and not saved")
    columns = ["model", "tokens", "mode", *fns, "fused/split", "persistent/split", "fused/best-peer"]
    print("\nTFLOP/s per call (GEMM FLOPs over the time of the whole step, epilogue included)")
    print(format_table(pivot(rows), columns))
    if cuda:
        print("\nTFLOP/s of device time alone (CUDA-graph replay: no host launch overhead)")
        print(format_table(pivot(rows, "device_tflop_s"), columns))


def pivot(rows: list[dict], key: str = "tflop_s") -> list[dict]:
    """One table row per (model, tokens, mode): each provider's TFLOP/s; our two kernels against the split form, and
    the faster of them against the best peer that is not ours (eager, compile, compile-max-autotune)."""
    table: dict[tuple, dict] = {}
    for r in rows:
        case = (r["model"], r["tokens"], r["mode"])
        row = table.setdefault(case, {"model": r["model"], "tokens": r["tokens"], "mode": r["mode"]})
        row[r["provider"]] = r.get(key)
    for t in table.values():
        peers = [t[p] for p in ("eager", "compile", "compile-max-autotune") if t.get(p)]
        ours = [t[p] for p in ("fused", "fused-persistent") if t.get(p)]
        if t.get("split"):
            for p, ratio in (("fused", "fused/split"), ("fused-persistent", "persistent/split")):
                if t.get(p):
                    t[ratio] = t[p] / t["split"]
        if ours and peers:
            t["fused/best-peer"] = max(ours) / max(peers)
    return list(table.values())


if __name__ == "__main__":
    main()
