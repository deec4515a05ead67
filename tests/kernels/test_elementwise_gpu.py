"""The elementwise kernels compile for Hopper (sm_90) with 16-byte vector loads, checked without a GPU.

The interpreter runs the kernels' Python, not Triton's compiler, so a kernel can pass every CPU test and still
fail to compile for a GPU. This test compiles the BERT-shape variants ahead of time for sm_90 in a subprocess
(the interpreter is switched on in this one) and checks the PTX loads 16 bytes at a time. The numerical GPU
tests are the ones marked gpu in test_bias_gelu.py and test_add_layer_norm.py.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import importlib
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ln = importlib.import_module("bert_fast_kernels.add_layer_norm")
    gelu = importlib.import_module("bert_fast_kernels.bias_gelu")

    def compile_sm90(fn, types, constants, num_warps):
        # every argument not in `constants` is typed by its name; pointers and strides are 16-aligned, as at
        # the BERT shapes (the launcher specializes on that)
        sig = {}
        for name in fn.arg_names:
            if name in constants:
                sig[name] = "constexpr"
            elif name in types:
                sig[name] = types[name]
            elif name in ("eps", "scale"):
                sig[name] = "fp32"
            else:
                sig[name] = "i32"
        aligned = [i for i, n in enumerate(fn.arg_names)
                   if sig[n].startswith("*") or n.startswith(("stride", "n_cols"))]
        src = ASTSource(fn, sig, constants, {(i,): [["tt.divisibility", 16]] for i in aligned})
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}).asm["ptx"]
        assert ".v4." in ptx and "ld.global" in ptx, f"{fn.__name__}: no 16-byte loads"
        print(fn.__name__, "ok")

    act = "*bf16"
    n = 768
    bn, rows, warps = ln._fwd_config(n)
    compile_sm90(ln._add_layer_norm_fwd_kernel,
                 {k: act for k in ("X", "RES", "Y")} | {k: "*fp32" for k in ("W", "B", "XB", "MEAN", "RSTD")},
                 {"RES_OUT": None, "HAS_RESIDUAL": True, "HAS_BIAS": True, "HAS_XBIAS": True, "HAS_DROPOUT": True,
                  "STORE_RESIDUAL": False, "ROWS": rows, "BLOCK_N": bn}, warps)
    bn, rows, warps = ln._bwd_config(n)
    compile_sm90(ln._add_layer_norm_bwd_kernel,
                 {k: act for k in ("DY", "X", "RES", "DX", "DRES")}
                 | {k: "*fp32" for k in ("W", "XB", "MEAN", "RSTD", "PART")},
                 {"DRES_OUT": None, "HAS_RESIDUAL": True, "HAS_XBIAS": True, "HAS_DROPOUT": True,
                  "HAS_DRES_OUT": False, "STORE_DX": True, "STORE_DRES": True, "DW_SLOT": 0, "DB_SLOT": 1,
                  "DXB_SLOT": 2, "ROWS": rows, "BLOCK_N": bn}, warps)
    bm, bn, warps = gelu._config(16384, 3072)
    compile_sm90(gelu._bias_gelu_fwd_kernel, {"X": act, "Y": act, "BIAS": "*fp32"},
                 {"HAS_BIAS": True, "APPROX_TANH": False, "BLOCK_M": bm, "BLOCK_N": bn}, warps)
    compile_sm90(gelu._bias_gelu_bwd_kernel, {"DY": act, "X": act, "DX": act, "BIAS": "*fp32", "DBIAS_PART": "*fp32"},
                 {"HAS_BIAS": True, "COMPUTE_DBIAS": True, "APPROX_TANH": False, "BLOCK_M": bm, "BLOCK_N": bn}, warps)
    """
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the gpu-marked tests compile the real thing")
def test_kernels_compile_for_sm90_with_vector_loads():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # find bert_fast_kernels as this process does
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    cmd = [sys.executable, "-c", SCRIPT]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count(" ok") == 4, proc.stdout
