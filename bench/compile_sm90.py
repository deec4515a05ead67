"""Compile every Triton kernel variant for Hopper (sm_90a) ahead of time, without a GPU, and check it fits.

The CPU tests run the kernels under the interpreter, which never invokes Triton's compiler: a kernel can pass
them all and still be rejected by the compiler of another Triton release (the GPU image pins triton 3.6; CI runs
3.9), or need more shared memory than an H100 block may have, so that one autotune config fails at launch.
This script compiles each launch variant the launchers can pick (elementwise kernels at the BERT widths, every
attention autotune config for every head dim, with and without dropout, per dtype) to PTX with the installed
Triton, assembles it with the ptxas Triton ships, and reports registers, spills and shared memory against the
sm_90 limits.

    python -m bench.compile_sm90                        # everything, bf16 + fp16 + fp32
    python -m bench.compile_sm90 --quick --dtypes bf16  # bf16, the first attention config of each group
    python -m bench.compile_sm90 --save                 # and append the rows to bench/results/compile_sm90.jsonl

Exit status 1 if any variant fails to compile or exceeds a limit. Spills are reported, not failed: they cost
speed, not correctness, and the benchmarks decide.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter would skip the compiler this script exists to run

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# The modules, not the functions of the same names that the package exports.
ln = importlib.import_module("bert_fast_kernels.add_layer_norm")
gelu = importlib.import_module("bert_fast_kernels.bias_gelu")
attn_fwd = importlib.import_module("bert_fast_kernels.attention_fwd")
attn_bwd = importlib.import_module("bert_fast_kernels.attention_bwd")
gemm = importlib.import_module("bert_fast_kernels.linear_gelu")

from .common import format_table, save_rows

TARGET = GPUTarget("cuda", 90, 32)
MAX_SHARED_BYTES = 232_448  # H100: 227 KiB of dynamic shared memory per block
MAX_REGISTERS_PER_SM = 65_536
FLOAT_SCALARS = {"eps", "scale", "qk_scale", "dropout_scale", "softmax_scale"}
DTYPES = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}
HIDDEN_SIZES = (768, 1023, 1024, 3072, 4096, 8192)  # base, odd, large, the FFN widths, the upper bound


@dataclasses.dataclass
class Variant:
    label: str
    fn: object  # a triton.JITFunction
    pointers: dict  # argument name -> pointer type ("*bf16", ...), or None for an absent optional pointer
    constexprs: dict  # constexpr name -> value
    num_warps: int
    num_stages: int = 3
    aligned_ints: bool = True  # widths and strides divisible by 16 (hidden 1023 is not)
    aligned_args: tuple = ()  # further integer arguments divisible by 16 (a GEMM's N and K)


def _signature(v: Variant) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) for ASTSource. Scalars are i32 unless a known float. Pointers are 16-byte
    aligned; strides and widths 16-divisible unless the width is not (Triton's launcher specializes the same way
    on the values it sees)."""
    sig, consts = {}, dict(v.constexprs)
    if "SEED_IN_MEMORY" in v.fn.arg_names and "SEED_IN_MEMORY" not in consts:
        # dropout seeds as the model passes them: an int64 device tensor the kernel loads (no host sync)
        in_memory = bool(consts.get("HAS_DROPOUT", True))
        consts["SEED_IN_MEMORY"] = in_memory
        v = dataclasses.replace(v, pointers={**v.pointers, "SEED": "*i64" if in_memory else None})
    for name in v.fn.arg_names:
        if name in v.constexprs:
            sig[name] = "constexpr"
        elif name in v.pointers:
            if v.pointers[name] is None:
                sig[name], consts[name] = "constexpr", None
            else:
                sig[name] = v.pointers[name]
        else:
            sig[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    do_not_specialize = set(getattr(v.fn, "do_not_specialize", ()) or ())
    aligned = [
        i for i, name in enumerate(v.fn.arg_names)
        if sig[name].startswith("*") or name in v.aligned_args
        or (name.startswith(("stride", "n_cols")) and name not in do_not_specialize and name not in consts
            and v.aligned_ints)
    ]  # fmt: skip
    return sig, consts, {(i,): [["tt.divisibility", 16]] for i in aligned}


def _ptxas() -> str:
    """The ptxas Triton itself uses for sm_90 (releases differ: 3.9 ships two and picks the newer one)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(TARGET.arch).path


def compile_variant(v: Variant, workdir: Path) -> dict:
    module = v.fn.fn.__module__.rsplit(".", 1)[-1]  # two kernels share the name _dropout_mask_kernel
    row = {"kernel": f"{module}.{v.fn.__name__}", "variant": v.label, "num_warps": v.num_warps, "num_stages": v.num_stages}
    start = time.perf_counter()
    try:
        sig, consts, attrs = _signature(v)
        compiled = triton.compile(
            ASTSource(v.fn, sig, consts, attrs), target=TARGET,
            options={"num_warps": v.num_warps, "num_stages": v.num_stages},
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 (report every failure, then fail the run)
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[-1500:]}")
        return row
    ptx = compiled.asm["ptx"]
    ptx_file = workdir / "kernel.ptx"
    ptx_file.write_text(ptx)
    proc = subprocess.run(
        [_ptxas(), "-v", "--gpu-name", "sm_90a", str(ptx_file), "-o", str(workdir / "kernel.o")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    regs = [int(r) for r in re.findall(r"Used (\d+) registers", proc.stderr)]
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill stores", proc.stderr)]
    shared = int(compiled.metadata.shared)
    registers = max(regs, default=0)
    problems = []
    if proc.returncode != 0:
        problems.append(f"ptxas: {proc.stderr[-500:]}")
    if shared > MAX_SHARED_BYTES:
        problems.append(f"shared {shared} B > {MAX_SHARED_BYTES} B")
    if registers * 32 * v.num_warps > MAX_REGISTERS_PER_SM:
        problems.append(f"{registers} registers x {32 * v.num_warps} threads > {MAX_REGISTERS_PER_SM}")
    row.update(
        ok=not problems, error="; ".join(problems) or None, registers=registers, spill_bytes=max(spills, default=0),
        shared_bytes=shared, loads_16B=len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx)),
        async_copies_16B=len(re.findall(r"cp\.async\.cg\.shared\.global", ptx)),  # cg: 16-byte copies only
        tma=len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
        wgmma=len(re.findall(r"wgmma\.mma_async", ptx)),
        seconds=round(time.perf_counter() - start, 2),
    )  # fmt: skip
    return row


def elementwise_variants(dtypes: list[str], hidden_sizes) -> list[Variant]:
    out = []
    for dt in dtypes:
        act = DTYPES[dt]
        for n in hidden_sizes:
            bn, rows, warps = ln._fwd_config(n)
            for dropout in (False, True):
                out.append(Variant(
                    f"{dt} N={n} dropout={dropout}", ln._add_layer_norm_fwd_kernel,
                    {"X": act, "RES": act, "Y": act, "RES_OUT": act, "W": "*fp32", "B": "*fp32", "XB": "*fp32",
                     "MEAN": "*fp32", "RSTD": "*fp32"},
                    {"HAS_RESIDUAL": True, "HAS_BIAS": True, "HAS_XBIAS": True, "HAS_DROPOUT": dropout,
                     "STORE_RESIDUAL": dropout, "ROWS": rows, "BLOCK_N": bn}, warps, aligned_ints=n % 16 == 0,
                ))  # fmt: skip
            bn, rows, warps = ln._bwd_config(n)
            for dropout in (False, True):
                out.append(Variant(
                    f"{dt} N={n} dropout={dropout}", ln._add_layer_norm_bwd_kernel,
                    {"DY": act, "DRES_OUT": None, "X": act, "RES": act, "W": "*fp32", "XB": "*fp32", "MEAN": "*fp32",
                     "RSTD": "*fp32", "DX": act if dropout else None, "DRES": act, "PART": "*fp32"},
                    {"HAS_RESIDUAL": True, "HAS_XBIAS": True, "HAS_DROPOUT": dropout, "HAS_DRES_OUT": False,
                     "STORE_DX": dropout, "STORE_DRES": True, "DW_SLOT": 0, "DB_SLOT": 1, "DXB_SLOT": 2,
                     "ROWS": rows, "BLOCK_N": bn}, warps, aligned_ints=n % 16 == 0,
                ))  # fmt: skip
            bm, bn, warps = gelu._config(16384, n)
            for tanh in (False, True):
                consts = {"HAS_BIAS": True, "APPROX_TANH": tanh, "BLOCK_M": bm, "BLOCK_N": bn}
                out.append(Variant(f"{dt} N={n} tanh={tanh}", gelu._bias_gelu_fwd_kernel,
                                   {"X": act, "BIAS": "*fp32", "Y": act}, consts, warps, aligned_ints=n % 16 == 0))
                out.append(Variant(f"{dt} N={n} tanh={tanh}", gelu._bias_gelu_bwd_kernel,
                                   {"DY": act, "X": act, "BIAS": "*fp32", "DX": act, "DBIAS_PART": "*fp32"},
                                   {**consts, "COMPUTE_DBIAS": True}, warps, aligned_ints=n % 16 == 0))
    out.append(Variant("mask", ln._dropout_mask_kernel, {"KEEP": "*u8"}, {"ROWS": 4, "BLOCK_N": 1024}, 8))
    return out


def _attention_configs(dtype: str, head_dim: int, autotuned: dict, fixed: dict, quick: bool) -> list:
    """[(label, config)]: the autotune list in half precision, the fixed config of the head dim for fp32."""
    if dtype == "fp32":
        return [("fixed", fixed[attn_fwd.config_group_fp32(head_dim)])]
    group = autotuned[attn_fwd.config_group(head_dim)]
    return [(f"config {i}", c) for i, c in enumerate(group[:1] if quick else group)]


def attention_variants(dtypes: list[str], head_dims, quick: bool) -> list[Variant]:
    """What the launchers can pick: every autotune config (fp16 / bf16) or the fixed fp32 config, dropout off / on,
    and for the backward dQ written once (deterministic) or added up with atomics."""
    out = []
    fwd_configs = (attn_fwd.FWD_CONFIGS, attn_fwd.FWD_FP32_CONFIGS)
    bwd_configs = (attn_bwd.BWD_CONFIGS, attn_bwd.BWD_FP32_CONFIGS)
    for dt in dtypes:
        act = DTYPES[dt]
        precision = "ieee" if dt == "fp32" else "tf32"
        for head_dim in head_dims:
            for dropout in (False, True):
                base = {"HEAD_DIM": head_dim, "HAS_DROPOUT": dropout, "DOT_PRECISION": precision}
                for name, c in _attention_configs(dt, head_dim, *fwd_configs, quick):
                    out.append(Variant(
                        f"{dt} hd={head_dim} dropout={dropout} {name} {c.kwargs}", attn_fwd._fwd_kernel,
                        {"Q": act, "K": act, "V": act, "Out": act, "Lse": "*fp32", "cu_seqlens": "*i32"},
                        {**base, **c.kwargs}, c.num_warps, c.num_stages,
                    ))  # fmt: skip
                for (name, c), atomic in itertools.product(_attention_configs(dt, head_dim, *bwd_configs, quick),
                                                           (False, True)):
                    out.append(Variant(
                        f"{dt} hd={head_dim} dropout={dropout} atomic_dq={atomic} {name} {c.kwargs}",
                        attn_bwd._bwd_kernel,
                        {k: act for k in ("Q", "K", "V", "DO", "DQ", "DK", "DV")}
                        | {"DQ_ACC": "*fp32" if atomic else act, "Lse": "*fp32", "Delta": "*fp32", "cu_seqlens": "*i32"},
                        {**base, **c.kwargs, "ATOMIC_DQ": atomic}, c.num_warps, c.num_stages,
                    ))  # fmt: skip
            out.append(Variant(f"{dt} hd={head_dim}", attn_bwd._bwd_preprocess,
                               {"Out": act, "DO": act, "Delta": "*fp32"}, {"HEAD_DIM": head_dim, "BLOCK_T": 128}, 4))
    out.append(Variant("mask", attn_fwd._dropout_mask_kernel, {"Mask": "*i8", "cu_seqlens": "*i32"},
                       {"BLOCK_M": 128, "BLOCK_N": 128}, 8))
    return out


def gemm_variants(dtypes: list[str], quick: bool) -> list[Variant]:
    """linear_gelu, both variants: every autotune config (fp16 / bf16) or the fixed fp32 config, inference (y only)
    and training (z stored too), at BERT's FFN shapes (K and N multiples of 16; the tiled kernel's launcher passes
    unit K strides as constants; the persistent kernel takes TMA descriptors whose boxes are the config's tiles)."""
    out = []
    for dt in dtypes:
        act = DTYPES[dt]
        precision = {"DOT_PRECISION": "ieee" if dt == "fp32" else "tf32"}
        variants = [("tiled", gemm.CONFIGS)] + ([] if dt == "fp32" else [("persistent", gemm.PERSISTENT_CONFIGS)])
        for variant, configs in variants:  # fp32 always runs the tiled kernel
            if dt == "fp32":
                configs = [("fixed", gemm.FP32_CONFIG)]
            else:
                configs = list(enumerate(configs[:1] if quick else configs))
            for (name, c), store_z in itertools.product(configs, (False, True)):
                label = f"{dt} {variant} store_z={store_z} config {name} {c.kwargs}"
                consts = {"HAS_BIAS": True, "STORE_Z": store_z, "APPROX_TANH": False, **precision, **c.kwargs}
                if variant == "tiled":
                    out.append(Variant(
                        label, gemm._linear_gelu_kernel,
                        {"X": act, "W": act, "BIAS": "*fp32", "Y": act, "Z": act if store_z else None},
                        {**consts, "EVEN_K": True, "stride_xk": 1, "stride_wk": 1},
                        c.num_warps, c.num_stages, aligned_args=("N", "K", "stride_xm", "stride_wn"),
                    ))  # fmt: skip
                    continue
                bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
                out_box = f"tensordesc<{dt}[{bm}, {bn}]>"
                out.append(Variant(
                    label, gemm._linear_gelu_persistent_kernel,
                    {"x_desc": f"tensordesc<{dt}[{bm}, {bk}]>", "w_desc": f"tensordesc<{dt}[{bn}, {bk}]>",
                     "y_desc": out_box, "z_desc": out_box if store_z else None, "BIAS": "*fp32"},
                    {**consts, "NUM_PROGRAMS": 132}, c.num_warps, c.num_stages, aligned_args=("N", "K"),
                ))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first attention config of each group only")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32")
    parser.add_argument("--head-dims", default=",".join(map(str, attn_fwd.HEAD_DIMS)))
    parser.add_argument("--hidden-sizes", default=",".join(map(str, HIDDEN_SIZES)))
    parser.add_argument("--only", choices=("elementwise", "attention", "gemm"), help="one kernel family")
    parser.add_argument("--out", type=Path, help="write one JSON row per variant here")
    parser.add_argument("--save", action="store_true", help="append the rows to bench/results/compile_sm90.jsonl")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    variants = []
    if args.only in (None, "elementwise"):
        variants += elementwise_variants(dtypes, [int(n) for n in args.hidden_sizes.split(",")])
    if args.only in (None, "attention"):
        variants += attention_variants(dtypes, [int(d) for d in args.head_dims.split(",")], args.quick)
    if args.only in (None, "gemm"):
        variants += gemm_variants(dtypes, args.quick)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            row = compile_variant(v, Path(tmp))
            rows.append(row)
            status = "ok  " if row["ok"] else "FAIL"
            detail = row["error"] if row.get("error") else ""
            print(
                f"{status} {row['kernel']:42s} {row['variant']:70s} w={v.num_warps:2d} s={v.num_stages} "
                f"regs={row.get('registers', '-'):>3} spill={row.get('spill_bytes', '-'):>4} "
                f"smem={row.get('shared_bytes', '-'):>6} ld16B={row.get('loads_16B', '-'):>3} "
                f"cp16B={row.get('async_copies_16B', '-'):>3} tma={row.get('tma', '-'):>2} wgmma={row.get('wgmma', '-'):>3} "
                f"{detail}",
                flush=True,
            )
    for row in rows:
        row["target"] = "sm_90a"
    if args.out:
        meta = {"triton": triton.__version__}
        args.out.write_text("".join(json.dumps({**meta, **row}) + "\n" for row in rows))
    if args.save:
        print(f"rows appended to {save_rows('compile_sm90', rows)}")
    print(format_table(summarize(rows), ["kernel", "dtype", "variants", "failed", "spilling", "max_registers",
                                         "max_spill_bytes", "max_shared_bytes"]))  # fmt: skip
    failed = [r for r in rows if not r["ok"]]
    print(f"triton {triton.__version__}: {len(rows)} variants compiled for sm_90a, {len(failed)} failed")
    return 1 if failed else 0


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (kernel, dtype): how many variants, how many failed or spill, the worst registers / smem."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["kernel"], row["variant"].split()[0]), []).append(row)
    return [
        {
            "kernel": kernel, "dtype": dtype if dtype in DTYPES else "-", "variants": len(group),
            "failed": sum(not r["ok"] for r in group), "spilling": sum(bool(r.get("spill_bytes")) for r in group),
            "max_registers": max(r.get("registers", 0) for r in group),
            "max_spill_bytes": max(r.get("spill_bytes", 0) for r in group),
            "max_shared_bytes": max(r.get("shared_bytes", 0) for r in group),
        }
        for (kernel, dtype), group in groups.items()
    ]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
