"""Run by test_launch.py in a fresh process: every launcher, through Triton's own launch path and through our cached
one, under the stub driver (bench/stub_driver.py), with the launcher arguments of both compared call by call.

Prints one JSON line per case: {"case", "launches", "same", "diff", "cached"}, then the forward's tuning picks. "same": both paths handed the C
launcher the same arguments (grid, stream, the compiled kernel, every kernel argument; tensors by dtype, shape and
strides since outputs are new each call). "cached": the cached path's call went through no Triton launch path at
all (JITFunction.run was not called).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import sys

from bench import stub_driver

stub_driver.install()
stub_driver.recording = True

import torch
from triton.runtime import jit

# the modules, not the functions of the same names that the package exports
lean = importlib.import_module("bert_fast_kernels._launch")
ln = importlib.import_module("bert_fast_kernels.add_layer_norm")
ab = importlib.import_module("bert_fast_kernels.attention_bwd")
af = importlib.import_module("bert_fast_kernels.attention_fwd")
bg = importlib.import_module("bert_fast_kernels.bias_gelu")
lg = importlib.import_module("bert_fast_kernels.linear_gelu")

jit_runs = 0
_run = jit.JITFunction.run


def _counted_run(self, *args, **kwargs):
    global jit_runs
    jit_runs += 1
    return _run(self, *args, **kwargs)


jit.JITFunction.run = _counted_run


def _normal(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.stride())
    if dataclasses.is_dataclass(value):  # a TMA tensor descriptor: its tensor, shape, strides, block shape
        return (type(value).__name__, *(_normal(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, list):
        return tuple(_normal(v) for v in value)
    return value


def _launch_args(record):
    # (grid0, grid1, grid2, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook, *args):
    # the metadata and hooks differ by design (Triton passes its empty hook chains; the cached path None)
    grid_and_stream, packed_metadata, args = record[:4], record[5], record[9:]
    return grid_and_stream, id(packed_metadata), [_normal(a) for a in args]


def compare(name, call):
    global jit_runs
    lean.set_lean_launch(False)
    stub_driver.launches.clear()
    call()
    triton_path = [_launch_args(r) for r in stub_driver.launches]
    lean.set_lean_launch(True)
    for _ in range(2):  # the first cached-path calls of a kind take Triton's path and keep what it chose (pick, kernel)
        call()
    stub_driver.launches.clear()
    jit_runs = 0
    call()
    cached_path = [_launch_args(r) for r in stub_driver.launches]
    diff = ""
    for i, (a, b) in enumerate(zip(triton_path, cached_path)):
        if a != b:
            diff = f"launch {i}: triton {a} != cached {b}"
            break
    same = len(triton_path) == len(cached_path) and not diff
    print(json.dumps({"case": name, "launches": len(triton_path), "same": same, "diff": diff,
                      "cached": jit_runs == 0}), flush=True)


def attention_cases(dtype, lengths):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total, max_len, scale = sum(lengths), max(lengths), 1 / math.sqrt(64)
    q, k, v = torch.randn(total, 3, 2, 64, dtype=dtype).unbind(1)
    out, lse = af.varlen_attention_fwd(q, k, v, cu, max_len, 0.0, scale, 0)
    tag = f"{str(dtype)[6:]} lengths {lengths}"
    compare(f"attention fwd {tag}", lambda: af.varlen_attention_fwd(q, k, v, cu, max_len, 0.0, scale, 0))
    compare(f"attention fwd dropout {tag}", lambda: af.varlen_attention_fwd(q, k, v, cu, max_len, 0.1, scale, 5))
    compare(f"attention bwd {tag}", lambda: ab.varlen_attention_bwd(out, q, k, v, out, lse, cu, max_len, 0.0, scale, 0))
    compare(f"attention bwd atomic dq {tag}", lambda: ab.varlen_attention_bwd(
        out, q, k, v, out, lse, cu, max_len, 0.0, scale, 0, deterministic=False))


def main():
    torch.manual_seed(0)
    half = torch.float16
    x = torch.randn(96, 256, dtype=half)
    b = torch.randn(256, dtype=half)
    dy = torch.randn_like(x)
    # an element past a 16-byte boundary: Triton specializes pointers on alignment, so this is another kernel
    x_odd = torch.randn(96 * 256 + 1, dtype=half)[1:].view(96, 256)
    w32 = torch.randn(256)
    compare("bias_gelu fwd", lambda: bg.bias_gelu_fwd(x, b))
    compare("bias_gelu fwd, misaligned x", lambda: bg.bias_gelu_fwd(x_odd, b))
    compare("bias_gelu fwd, 7 columns", lambda: bg.bias_gelu_fwd(x[:, :7], b[:7]))
    compare("bias_gelu bwd", lambda: bg.bias_gelu_bwd(dy, x, b))
    compare("add_layer_norm fwd", lambda: ln.add_layer_norm_fwd(x, x_odd, w32, w32, 1e-12, x_bias=b))
    compare("add_layer_norm fwd, dropout", lambda: ln.add_layer_norm_fwd(x, x, w32, w32, 1e-12, dropout_p=0.1, seed=3))
    _, _, mean, rstd = ln.add_layer_norm_fwd(x, x, w32, w32, 1e-12)
    compare("add_layer_norm bwd", lambda: ln.add_layer_norm_bwd(dy, x, x, w32, w32, mean, rstd))

    # the persistent GEMM takes TMA descriptors: Triton's path on every call (the case's "cached" is false)
    w = torch.randn(128, 256, dtype=half)
    compare("linear_gelu persistent (TMA descriptors)",
            lambda: lg.linear_gelu_fwd(x, w, None, variant="persistent", config=lg.PERSISTENT_CONFIGS[2]))

    # half: the autotuned kernels, at two tuning keys (sequence buckets 64 and 256); fp32: a fixed config
    for dtype, lengths in ((half, (64, 40, 1)), (half, (200, 7)), (torch.float32, (64, 40, 1))):
        attention_cases(dtype, lengths)
    # the forward's picks by tuning key (head dim, sequence bucket, dropout): the stub driver's "timings" depend on
    # the key, so different keys pick different configs, as they may on a GPU
    picks = lean.picks_of(af._fwd_tuned["small"])
    print(json.dumps({"picks": {str(key[:3]): pick["BLOCK_M"] for key, pick in picks.items()}}))


if __name__ == "__main__":
    sys.exit(main())
