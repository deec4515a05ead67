"""Host time per call: what launching our kernels costs the CPU, by layer of the call.

The first H100 run (bench/NOTES.md §6) found small workloads bound by the host, not by kernels. This separates
the layers a call goes through, on a shape small enough that the GPU finishes first, so every number is host
time (wall time per call over many calls, no sync inside the loop):
  launcher   the module's launch function alone (checks, allocations, Triton's Autotuner and JIT launch)
  eager      the public function in plain eager mode (EagerOp: a plain autograd.Function around the launcher)
  custom-op  the registered torch custom op (torch.ops.bert_fast.*), what torch.compile's graphs call
  torch      the PyTorch reference on the same inputs, for scale
each for the forward alone and for forward + backward (torch.autograd.grad).

    python -m bench.bench_launch            # GPU: rows appended to bench/results/launch.jsonl
    python -m bench.bench_launch --quick    # CPU: an interpreter smoke run, not saved
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import torch

if not torch.cuda.is_available():  # the CPU smoke run needs Triton's interpreter, set before the kernels import
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bert_fast_kernels import (
    add_layer_norm,
    add_layer_norm_ref,
    bias_gelu,
    bias_gelu_ref,
    varlen_attention_qkvpacked,
    varlen_attention_ref,
)

from bench.common import format_table, save_rows

NAME = "launch"


def host_us(fn, calls: int, cuda: bool) -> float:
    """Mean wall microseconds per call, measured without a sync in the loop (warm-up first)."""
    for _ in range(max(1, calls // 10)):
        fn()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
    return elapsed / calls * 1e6


def cases(device: str, dtype: torch.dtype) -> dict:
    """{op: {layer: forward fn(*inputs)}, inputs} at a shape whose kernels take microseconds."""
    bg = importlib.import_module("bert_fast_kernels.bias_gelu")
    ln = importlib.import_module("bert_fast_kernels.add_layer_norm")
    att = importlib.import_module("bert_fast_kernels.varlen_attention")
    attention_fwd = importlib.import_module("bert_fast_kernels.attention_fwd")

    def randn(*shape):
        return torch.randn(*shape, device=device).to(dtype)

    heads, head_dim, lengths = 2, 64, (64, 40)
    cu = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32, device=device)
    max_len, scale = max(lengths), head_dim**-0.5

    def attention_ref(qkv):
        q, k, v = qkv.unbind(1)
        return varlen_attention_ref(q, k, v, cu, max_len)

    return {
        "bias_gelu": ([randn(128, 256), randn(256)], {
            "launcher": lambda x, b: bg.bias_gelu_fwd(x, b, "none"),
            "eager": bias_gelu,
            "custom-op": lambda x, b: torch.ops.bert_fast.bias_gelu_fwd(x, b, "none"),
            "torch": bias_gelu_ref,
        }),
        "add_layer_norm": ([randn(128, 256), randn(128, 256), randn(256), randn(256)], {
            "launcher": lambda x, r, w, b: ln.add_layer_norm_fwd(x, r, w, b, 1e-12)[0],
            "eager": lambda x, r, w, b: add_layer_norm(x, r, w, b),
            "custom-op": lambda x, r, w, b: torch.ops.bert_fast.add_layer_norm_fwd(x, r, w, b, None, 1e-12, 0.0, 0,
                                                                                  False)[0],
            "torch": lambda x, r, w, b: add_layer_norm_ref(x, r, w, b),
        }),
        "attention": ([randn(sum(lengths), 3, heads, head_dim)], {
            "launcher": lambda qkv: attention_fwd.varlen_attention_fwd(*qkv.unbind(1), cu, max_len, 0.0, scale, 0)[0],
            "eager": lambda qkv: varlen_attention_qkvpacked(qkv, cu, max_len, validate=False),
            "custom-op": lambda qkv: att._packed_fwd_op(qkv, cu, max_len, 0.0, scale, 0, True)[0],
            "torch": attention_ref,
        }),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls; on a CPU a smoke run")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    calls = 500 if cuda and not args.quick else 20 if cuda else 1

    rows = []
    for op, (inputs, layers) in cases(device, dtype).items():
        for layer, fn in layers.items():
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd":

                    def call(fn=fn, inputs=inputs):
                        with torch.no_grad():
                            fn(*inputs)
                else:
                    if layer == "launcher":
                        continue  # launchers have no autograd
                    leaves = [t.detach().clone().requires_grad_() for t in inputs]
                    dy = torch.randn_like(fn(*leaves))

                    def call(fn=fn, leaves=leaves, dy=dy):
                        torch.autograd.grad(fn(*leaves), leaves, dy)

                us = host_us(call, calls, cuda)
                rows.append({"op": op, "layer": layer, "mode": mode, "host_us": us})
                print(f"{op:15s} {layer:9s} {mode:8s} {us:9.1f} us per call")

    if cuda and not args.quick:
        save_rows(NAME, rows)
    table = {}
    for r in rows:
        table.setdefault((r["op"], r["mode"]), {"op": r["op"], "mode": r["mode"]})[r["layer"]] = r["host_us"]
    print("\nhost µs per call" + ("" if cuda else " (CPU interpreter smoke run: meaningless, not saved)"))
    print(format_table(list(table.values()), ["op", "mode", "launcher", "eager", "custom-op", "torch"]))


if __name__ == "__main__":
    main()
