"""The ceilings every other benchmark is read against, measured on this GPU in one run, and BERT's own GEMMs.

    python -m bench.bench_ceilings            # GPU: rows appended to bench/results/ceilings.jsonl
    python -m bench.bench_ceilings --quick    # on a CPU: a tiny smoke run, not saved

- copy: a 1 GiB bf16 tensor cloned; TB/s = bytes read + bytes written, over the time.
- matmul: bf16 8192^3 through torch.matmul (cuBLAS); TFLOP/s = 2 M N K / time.
- BERT's GEMMs at 32768 tokens (B256 x S128), bf16, the way the model runs them (F.linear, weight (N, K)):
  QKV (K -> 3K), attention output (K -> K), FFN up (K -> 4K), FFN down (4K -> K), each as forward
  (x W^T), input gradient (dy W) and weight gradient (dy^T x), for hidden 768 (base) and 1024 (large).

The GEMMs are the largest term of every end-to-end floor (bench/floors.py: ~70%), computed there at the
8192^3 rate. The last table gives each model's layer GEMMs as one effective rate: pass it to
`python -m bench.floors --matmul-tflops` to put the floors on this GPU's real GEMM speed.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import format_table, run_setting, save_rows

NAME = "ceilings"
TOKENS = 32768
HIDDEN = {"base": 768, "large": 1024}


def layer_gemms(hidden: int) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of one BERT layer's projections."""
    return [("qkv", hidden, 3 * hidden), ("attn_out", hidden, hidden), ("ffn_up", hidden, 4 * hidden),
            ("ffn_down", 4 * hidden, hidden)]  # fmt: skip



def copy_row(elems: int, device, dtype, timer) -> dict:
    x = torch.randn(elems, device=device).to(dtype)
    ms = timer(lambda: x.clone())
    return {"what": "copy", "shape": f"{elems}", "ms": ms, "tb_s": 2 * elems * x.element_size() / ms / 1e9}


def matmul_row(size: int, device, dtype, timer) -> dict:
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    ms = timer(lambda: a @ b)
    return {"what": "matmul", "shape": f"{size}^3", "ms": ms, "tflop_s": 2 * size**3 / ms / 1e9}


def gemm_rows(model: str, name: str, tokens: int, k: int, n: int, device, dtype, timer) -> list[dict]:
    """One projection as the model runs it: forward x W^T, input gradient dy W, weight gradient dy^T x."""
    x = torch.randn(tokens, k, device=device).to(dtype)
    w = (0.02 * torch.randn(n, k, device=device)).to(dtype)
    dy = torch.randn(tokens, n, device=device).to(dtype)
    cases = {"fwd": lambda: F.linear(x, w), "dgrad": lambda: dy @ w, "wgrad": lambda: dy.t() @ x}
    flops = 2 * tokens * k * n
    rows = []
    for kind, fn in cases.items():
        ms = timer(fn)
        rows.append({"what": "bert_gemm", "model": model, "gemm": name, "kind": kind, "shape": f"{tokens}x{k}->{n}",
                     "ms": ms, "flops": flops, "tflop_s": flops / ms / 1e9})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="on a CPU: tiny shapes, a smoke run")
    args = parser.parse_args(argv)
    cuda, device, dtype, timer = run_setting()
    tokens, copy_elems, square = (TOKENS, 2**29, 8192) if cuda else (64, 2**16, 128)
    if args.quick and cuda:
        tokens = TOKENS // 4
    rows = [copy_row(copy_elems, device, dtype, timer), matmul_row(square, device, dtype, timer)]
    for model, hidden in HIDDEN.items():
        for name, k, n in layer_gemms(hidden):
            rows += gemm_rows(model, name, tokens, k, n, device, dtype, timer)

    if cuda and not args.quick:
        print(f"rows appended to {save_rows(NAME, rows)}")
    elif not cuda:
        print("CPU smoke run (float32, tiny shapes): timings are meaningless and not saved")
    print(format_table(rows, ["what", "model", "gemm", "kind", "shape", "ms", "tflop_s", "tb_s"]))
    print("\nEffective rate of one layer's GEMMs (pass to bench.floors --matmul-tflops):")
    print(format_table(effective_rates(rows), ["model", "inference_tflop_s", "training_tflop_s"]))


def effective_rates(rows: list[dict]) -> list[dict]:
    """Per model: layer GEMM FLOPs over layer GEMM time, forward only and forward + both gradients."""
    out = []
    for model in HIDDEN:
        gemms = [r for r in rows if r.get("model") == model]
        fwd = [r for r in gemms if r["kind"] == "fwd"]
        out.append({
            "model": model,
            "inference_tflop_s": sum(r["flops"] for r in fwd) / sum(r["ms"] for r in fwd) / 1e9,
            "training_tflop_s": sum(r["flops"] for r in gemms) / sum(r["ms"] for r in gemms) / 1e9,
        })  # fmt: skip
    return out


if __name__ == "__main__":
    main()
