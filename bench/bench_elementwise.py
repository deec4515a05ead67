"""Benchmark: fused bias+GELU and bias+dropout+residual+LayerNorm against torch eager and torch.compile.

    python -m bench.bench_elementwise            # H100/H200: all shapes, rows appended to bench/results/elementwise.jsonl
    python -m bench.bench_elementwise --quick    # one shape per op (on a CPU: a tiny interpreter smoke run, not saved)
from the repository root, with the package installed (pip install -e .) or the kernels on the path (PYTHONPATH=.dev).

Providers, measured in one run on the same inputs: ours (the public autograd functions), eager (the plain PyTorch
references of kernels/reference.py in bf16), compile (torch.compile of the same references), and a copy
ceiling (x.clone(), the bandwidth a memory-bound kernel can at best reach on this GPU).

Shapes: 16384 tokens x hidden 768 / 3072 (BERT-base: attention-output and FFN widths) and 1024 / 4096
(BERT-large), activations and parameters in bf16. add_ln is BERT's post-LN block: x (projection output before
its bias), x_bias, residual, LayerNorm weight and bias; add_ln_drop adds hidden dropout p = 0.1.

Unit: GB/s = bytes / time, with the bytes the fused operation must move at least, the same formula for every
provider (so GB/s ratios are speed ratios). M rows, N hidden, s bytes per activation element (2 for bf16);
per-column vectors (N s) and per-row statistics (8 M) are left out, < 0.2 % of the total at these shapes:
    copy                   2 M N s    read x, write y
    bias_gelu    fwd       2 M N s    read x, write y
                 bwd       3 M N s    read dy, x (gelu' recomputed); write dx; dbias reduced in the same pass
    add_ln       fwd       3 M N s    read x, residual; write y
                 bwd       4 M N s    read dy, x, residual (h recomputed); write dx = dresidual (one tensor)
    add_ln_drop  fwd       3 M N s    as add_ln (the mask is drawn in the kernel, not read)
                 bwd       5 M N s    read dy, x, residual; write dx and dresidual (they differ by the mask)
    fwd+bwd                fwd + bwd
Other add_layer_norm variants (not benchmarked here): residual=None (plain LayerNorm) fwd 2, bwd 3 (dy, x -> dx);
return_residual=True adds a write of h to the fwd (+1) and, when h has a gradient, a read of it to the bwd (+1).
bwd times torch.autograd.grad on a retained graph: gradients for every input, parameters included.

Two times per measurement: ms / gb_s per call as an eager caller sees it (host launch overhead included wherever
the GPU finishes first: at 16384 x 768 a bf16 tensor is 25 MB, about 10 us of traffic), and device_ms /
device_gb_s from a CUDA-graph replay, the kernels alone (bench.common.device_ms).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # the CPU smoke run needs Triton's interpreter, set before the kernels import
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bert_fast_kernels import add_layer_norm, add_layer_norm_ref, bias_gelu, bias_gelu_ref

from bench.common import device_ms, format_table, run_setting, save_rows

NAME = "elementwise"
TOKENS = 16384
HIDDEN = (768, 3072, 1024, 4096)
MODES = ("fwd", "bwd", "fwd+bwd")
BYTES_PER_ELEMENT = {  # multiples of M N s, per op and mode (see the header)
    "copy": {"copy": 2},
    "bias_gelu": {"fwd": 2, "bwd": 3},
    "add_ln": {"fwd": 3, "bwd": 4},
    "add_ln_drop": {"fwd": 3, "bwd": 5},
}


def n_bytes(op: str, mode: str, m: int, n: int, itemsize: int) -> int:
    table = BYTES_PER_ELEMENT[op]
    units = table["fwd"] + table["bwd"] if mode == "fwd+bwd" else table[mode]
    return units * m * n * itemsize


def make_case(op: str, m: int, n: int, dtype: torch.dtype, device: str):
    """(inputs, {provider: fn(*inputs) -> output}) for one op at one shape."""

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=device)).to(dtype)

    if op == "bias_gelu":
        inputs = [randn(m, n), randn(n, scale=0.1)]
        ref = bias_gelu_ref
        ours = bias_gelu
    else:
        p = 0.1 if op == "add_ln_drop" else 0.0
        inputs = [randn(m, n), randn(m, n), 1 + randn(n, scale=0.1), randn(n, scale=0.1), randn(n, scale=0.1)]

        def ref(x, residual, weight, bias, x_bias):
            return add_layer_norm_ref(x, residual, weight, bias, 1e-12, x_bias, p)

        def ours(x, residual, weight, bias, x_bias):  # a fixed seed: drawing one syncs, which a CUDA graph refuses
            return add_layer_norm(x, residual, weight, bias, 1e-12, x_bias, p, seed=1234)

    providers = {"ours": ours, "eager": ref}
    if device == "cuda":
        providers["compile"] = torch.compile(ref, dynamic=False)
    return inputs, providers



def mode_call(fn, inputs, mode: str):
    """fn's work in one mode as a callable of no arguments (what the timers take)."""
    if mode == "fwd":

        def forward():
            with torch.no_grad():
                return fn(*inputs)

        return forward
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    dy = torch.randn_like(leaves[0])
    if mode == "fwd+bwd":
        return lambda: torch.autograd.grad(fn(*leaves), leaves, dy)
    out = fn(*leaves)
    return lambda: torch.autograd.grad(out, leaves, dy, retain_graph=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one shape per op; on a CPU a tiny smoke run")
    args = parser.parse_args(argv)

    cuda, device, dtype, timer = run_setting()
    if cuda:
        torch._dynamo.config.cache_size_limit = 64  # one compiled graph per shape and mode, not an eager fallback
        # "bwd" replays one graph's backward (retain_graph=True), which a compiled backward that donates its
        # saved buffers refuses: keep them, whatever order the modes run in
        torch._functorch.config.donated_buffer = False
        ops = {"bias_gelu": HIDDEN, "add_ln": HIDDEN, "add_ln_drop": (768, 1024)}
        if args.quick:
            ops = {"bias_gelu": (3072,), "add_ln": (768,), "add_ln_drop": (768,)}
        m = TOKENS
    else:
        ops = {"bias_gelu": (96,), "add_ln": (96,), "add_ln_drop": (96,)}
        m = 64

    rows = []
    itemsize = torch.empty((), dtype=dtype).element_size()
    for n in sorted({n for hidden in ops.values() for n in hidden}):
        x = torch.randn(m, n, device=device).to(dtype)
        nb = n_bytes("copy", "copy", m, n, itemsize)
        rows.append(measure("copy", "copy", "copy", lambda: x.clone(), m, n, nb, dtype, timer, cuda))  # noqa: B023
        for op, hidden in ops.items():
            if n not in hidden:
                continue
            inputs, providers = make_case(op, m, n, dtype, device)
            for mode in MODES:
                nb = n_bytes(op, mode, m, n, itemsize)
                for provider, fn in providers.items():
                    try:
                        row = measure(op, mode, provider, mode_call(fn, inputs, mode), m, n, nb, dtype, timer, cuda)
                    except (RuntimeError, NotImplementedError) as e:  # a provider that cannot run a mode: say so
                        print(f"{op} {n} {mode} {provider}: {type(e).__name__}: {e}", file=sys.stderr)
                        continue
                    rows.append(row)
                    on_device = f"{row['device_gb_s']:8.0f}" if row["device_gb_s"] else "       -"
                    print(f"{op:12s} N={n:5d} {mode:8s} {provider:8s} {row['ms']:8.4f} ms {row['gb_s']:8.0f} GB/s"
                          f"  device {on_device} GB/s")
            del inputs, providers
        if cuda:
            torch._dynamo.reset()  # compiled graphs of this shape are done with

    if cuda:
        path = save_rows(NAME, rows)
        print(f"\nrows appended to {path}")
    else:
        print("\nCPU smoke run (interpreter, float32, tiny shapes): timings are meaningless and not saved")
    columns = ["op", "hidden", "mode", "ours", "eager", "compile", "copy", "ours/compile", "ours/copy"]
    print("\nGB/s per call, as an eager caller sees it (bytes per the formulas in bench/bench_elementwise.py)")
    print(format_table(pivot(rows), columns))
    if cuda:
        print("\nGB/s of device time alone (CUDA-graph replay, L2 flushed before each call; no host launch overhead)")
        print(format_table(pivot(rows, "device_gb_s"), columns))


def measure(op, mode, provider, call, m, n, nb, dtype, timer, cuda) -> dict:
    """One row: per-call time as an eager caller sees it (ms, gb_s) and, on a GPU, the device time alone
    (device_ms, device_gb_s; None when the call cannot be captured in a CUDA graph)."""
    ms = timer(call)
    dev = device_ms(call) if cuda else None
    return {"op": op, "mode": mode, "provider": provider, "rows": m, "hidden": n,
            "dtype": str(dtype).removeprefix("torch."), "ms": ms, "bytes": nb, "gb_s": nb / ms / 1e6,
            "device_ms": dev, "device_gb_s": nb / dev / 1e6 if dev else None}  # fmt: skip


def pivot(rows: list[dict], key: str = "gb_s") -> list[dict]:
    """One table row per (op, hidden, mode): GB/s (`key`: gb_s per call, device_gb_s on the device alone) of each
    provider and of the copy ceiling, ours against both."""
    copy = {r["hidden"]: r[key] for r in rows if r["op"] == "copy"}
    table = {}
    for r in rows:
        if r["op"] != "copy":
            blank = {"op": r["op"], "hidden": r["hidden"], "mode": r["mode"]}
            cell = table.setdefault((r["op"], r["hidden"], r["mode"]), blank)
            cell[r["provider"]] = r.get(key)
    for t in table.values():
        t["copy"] = copy.get(t["hidden"])
        if t.get("ours") and t.get("compile"):
            t["ours/compile"] = t["ours"] / t["compile"]
        if t.get("ours") and t["copy"]:
            t["ours/copy"] = t["ours"] / t["copy"]
    return list(table.values())


if __name__ == "__main__":
    main()
