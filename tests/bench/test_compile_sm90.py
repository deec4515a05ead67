"""Every kernel compiles for Hopper (sm_90a) within its limits, checked without a GPU.

The interpreter runs the kernels' Python, not Triton's compiler, so a kernel can pass every CPU test and still
fail to compile, or ask for more shared memory or registers than an H100 gives a block. These tests run
bench/compile_sm90.py (in a subprocess: it switches the interpreter off) on the BERT-base shapes: the elementwise
kernels at hidden 768 and 3072, the attention kernels at head dim 64 in bf16 (first autotune config) and in fp32
(its fixed config), with and without dropout, and the fused FFN GEMM (linear_gelu, both variants) in bf16 and
fp32. `python -m bench.compile_sm90` sweeps every config and dtype.
The numerical GPU tests are the ones marked gpu.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = [
    pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the gpu-marked tests compile the real thing"),
    pytest.mark.slow,
]


def compile_rows(tmp_path, *args: str) -> list[dict]:
    pytest.importorskip("triton.backends.nvidia")
    out = tmp_path / "rows.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # find the packages as this process does
    cmd = [sys.executable, "-m", "bench.compile_sm90", *args, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_elementwise_kernels_compile_with_16_byte_loads(tmp_path):
    rows = compile_rows(tmp_path, "--only", "elementwise", "--dtypes", "bf16", "--hidden-sizes", "768,3072")
    assert len(rows) == 17
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    for row in rows:
        if not row["kernel"].endswith("_dropout_mask_kernel"):  # it only stores
            assert row["loads_16B"] > 0, row
        assert row["spill_bytes"] == 0, row


def test_attention_kernels_compile_within_hopper_limits(tmp_path):
    rows = compile_rows(tmp_path, "--quick", "--only", "attention", "--dtypes", "bf16,fp32", "--head-dims", "64")
    kernels = {row["kernel"] for row in rows}
    assert kernels == {"attention_fwd._fwd_kernel", "attention_bwd._bwd_kernel", "attention_bwd._bwd_preprocess",
                       "attention_fwd._dropout_mask_kernel"}
    assert len(rows) == 15  # 2 dtypes x dropout on / off x (fwd, bwd, bwd with atomic dQ), 2 preprocess, the mask
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    tiles = [row for row in rows if row["kernel"].endswith(("_fwd_kernel", "_bwd_kernel"))]
    assert len(tiles) == 12 and all(0 < row["shared_bytes"] <= 232_448 for row in tiles)
    # fp32 runs its dots on CUDA cores with the operands in registers: its fixed tiles are sized not to spill (on
    # the default, deterministic path; the atomic-dQ backward may spill a few bytes)
    fp32 = [row for row in tiles if row["variant"].startswith("fp32") and "atomic_dq=True" not in row["variant"]]
    assert len(fp32) == 4 and all(row["spill_bytes"] == 0 for row in fp32), fp32


def test_linear_gelu_compiles_to_tensor_core_pipelines(tmp_path):
    """The fused FFN GEMM: half precision on Hopper's wgmma, fed by 16-byte async copies (tiled) or TMA
    (persistent); fp32 (tiled only) on CUDA cores."""
    rows = compile_rows(tmp_path, "--quick", "--only", "gemm", "--dtypes", "bf16,fp32")
    assert len(rows) == 6  # (bf16 tiled, bf16 persistent, fp32 tiled) x (y only, y and z)
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    for row in rows:
        persistent = " persistent " in row["variant"]
        assert (row["tma"] > 0) == persistent and (row["async_copies_16B"] > 0) != persistent, row
        assert (row["wgmma"] > 0) == row["variant"].startswith("bf16"), row
        assert 0 < row["shared_bytes"] <= 232_448, row
