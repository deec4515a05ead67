"""Linear + bias + GELU as one Triton GEMM: BERT's FFN up-projection with the activation in its epilogue.

    y = gelu(x @ weight.T + bias)          x (..., K), weight (N, K) as nn.Linear holds it, bias (N,) or None

Why: the split form (a cuBLAS GEMM writing z = x W^T, then the bias_gelu kernel reading z and writing y) moves
the (tokens, 4 hidden) activation through memory twice more than needed. For BERT-base inference that is 24% of
the floor (bench/NOTES.md). cuBLASLt has a GELU epilogue, but only the tanh form; BERT's is exact (erf).

The GEMM is the classic tiled one (Triton's matmul tutorial): BLOCK_M x BLOCK_N output tiles, a K loop over
BLOCK_K slices with fp32 accumulation, programs ordered in groups of GROUP_M row tiles so neighbouring programs
share x tiles and weight tiles in L2. Row and column indices past the edge wrap around (mod M, mod N) for the
loads, so the main loop needs no row or column masks; the stores are masked.

Two kernels compute it (`variant`): "tiled", one program per output tile with cp.async loads, and "persistent",
one program per SM walking the tiles with TMA loads and stores, its tile and K loops pipelined as one so that a
tile's epilogue overlaps the next tile's loads (Hopper and newer, fp16 / bf16, 16-byte aligned rows; otherwise
the tiled kernel runs). bench/bench_linear_gelu.py times both against cuBLAS + bias_gelu.

Training: with store_preact the epilogue also writes z = x W^T (before the bias, x's dtype), exactly the tensor the
split form's GEMM writes, and the backward is the split form's: dz, dbias from the bias_gelu backward kernel, then
dx = dz W and dW = dz^T x on cuBLAS. So the fused forward saves one read of z and changes no gradient.

Dtype contract: x and weight share a dtype (fp16 / bf16 / fp32; under autocast `linear_gelu` casts both to the
autocast dtype, as F.linear does); bias may be wider. Dots accumulate in fp32; bias and GELU are applied to the fp32
accumulator and y is stored in x's dtype (one rounding, where the split form has two). fp32 inputs use exact fp32
dots (no tf32), as the attention kernels do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    EagerOp,
    autotune,
    cdiv,
    check_float_dtype,
    check_kernel_device,
    dot_precision,
    interpreting,
    launch_kwargs,
    next_power_of_2,
)
from ._launch import launch
from ._rowwise import as_rows, programs_per_sm
from .bias_gelu import APPROXIMATIONS, _gelu, bias_gelu_backward


@triton.jit(do_not_specialize=["M", "m_bucket"])  # packed batches change M every step: one compiled kernel for all
def _linear_gelu_kernel(
    X,  # (M, K)
    W,  # (N, K)
    BIAS,  # (N,) or None
    Y,  # (M, N) output, X's dtype
    Z,  # (M, N) pre-activation x W^T without the bias (STORE_Z), X's dtype
    M,
    N,
    K,
    m_bucket,  # autotune key only: next power of two of M
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    HAS_BIAS: tl.constexpr,
    STORE_Z: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    EVEN_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped launch order: GROUP_M row tiles sweep the column tiles together, so a wave of programs reads a
    # band of x and all of the weight (BERT's weights are 4.5-8 MiB, they stay in L2) instead of all of x.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_rows
    pid_n = (pid % (GROUP_M * tiles_n)) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Loads wrap around the edges (rows % M, cols % N): they read real memory the stores below then mask off.
    rows_in = rows % M
    cols_in = cols % N
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = X + rows_in.to(tl.int64)[:, None] * stride_xm + ks[None, :] * stride_xk
    w_ptrs = W + cols_in.to(tl.int64)[None, :] * stride_wn + ks[:, None] * stride_wk  # (BLOCK_K, BLOCK_N) of W^T

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(x_ptrs, mask=ks[None, :] < k_left, other=0.0)
            b = tl.load(w_ptrs, mask=ks[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    mask = (rows < M)[:, None] & (cols < N)[None, :]
    out_offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
    if STORE_Z:
        tl.store(Z + out_offsets, acc.to(Z.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + out_offsets, _gelu(acc, APPROX_TANH).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _linear_gelu_persistent_kernel(
    x_desc,  # TMA descriptors: x (M, K) in BLOCK_M x BLOCK_K boxes, weight (N, K) in BLOCK_N x BLOCK_K boxes,
    w_desc,  # y and z (M, N) in BLOCK_M x BLOCK_N boxes; z_desc is None unless STORE_Z
    y_desc,
    z_desc,
    BIAS,  # (N,) or None
    M,
    N,
    K,
    m_bucket,  # autotune key only: next power of two of M
    HAS_BIAS: tl.constexpr,
    STORE_Z: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    NUM_PROGRAMS: tl.constexpr,
):
    """The same GEMM and epilogue, persistent: one program per SM walks the output tiles (in the grouped order), and
    the tile and K loops are flattened into one software pipeline, so the next tile's TMA loads are in flight while
    this tile's epilogue runs. TMA boxes clip at the edges (loads fill zeros, stores drop what lies outside): no
    masks, and no wrap-around indices."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_steps = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, NUM_PROGRAMS, flatten=True):
        group = tile // (GROUP_M * tiles_n)
        first_m = group * GROUP_M
        group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
        off_m = (first_m + (tile % (GROUP_M * tiles_n)) % group_rows) * BLOCK_M
        off_n = ((tile % (GROUP_M * tiles_n)) // group_rows) * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_steps):
            a = x_desc.load([off_m, k * BLOCK_K])
            b = w_desc.load([off_n, k * BLOCK_K])
            acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION)
        if STORE_Z:
            z_desc.store([off_m, off_n], acc.to(z_desc.dtype))
        if HAS_BIAS:
            cols = off_n + tl.arange(0, BLOCK_N)
            acc += tl.load(BIAS + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        y_desc.store([off_m, off_n], _gelu(acc, APPROX_TANH).to(y_desc.dtype))


# Launch configurations. Hopper, bf16/fp16: the tile shapes of Triton's matmul tutorial for sm_90. The three that
# hold 128 accumulator values a thread spill 88-372 B in the GELU epilogue (once per tile, not in the K loop;
# bench/compile_sm90.py, bench/NOTES.md §5); the autotuner decides by time. The key is the GEMM shape with M
# bucketed (packed batches change M every step; a new M must not re-tune) and (implicitly) the dtype.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
AUTOTUNE_KEY = ["m_bucket", "N", "K", "HAS_BIAS", "STORE_Z"]
# fp32 on CUDA cores ("ieee" dots hold their operands in registers): a smaller fixed tile; the interpreter: few,
# large blocks (it pays per operation, not per element) that still leave edges in the tests' odd shapes.
FP32_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3)
INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2})
_kernel = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})(_linear_gelu_kernel)
_tuned = autotune(CONFIGS, AUTOTUNE_KEY)(_kernel)


def _launch(dtype: torch.dtype, config: triton.Config | None):
    """(kernel, fixed launch kwargs): the autotuned kernel on GPU in half precision, else a fixed config."""
    if config is None and not interpreting() and dtype != torch.float32:
        return _tuned, {}
    if config is None:
        config = INTERPRETER_CONFIG if interpreting() else FP32_CONFIG
    return _kernel, launch_kwargs(config)


def _set_boxes(nargs: dict) -> None:
    """Autotune pre-hook: the TMA descriptors' boxes follow the tile shape of the config being launched."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["x_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bn, bk]
    for out in ("y_desc", "z_desc"):
        if nargs[out] is not None:
            nargs[out].block_shape = [bm, bn]


# The persistent kernel's candidates: Hopper tiles with room in shared memory for the pipeline stages plus the
# staging of the output box a TMA store needs.
PERSISTENT_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3,
                  pre_hook=_set_boxes),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=4,
                  pre_hook=_set_boxes),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4,
                  pre_hook=_set_boxes),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4,
                  pre_hook=_set_boxes),
]  # fmt: skip
_tuned_persistent = autotune(PERSISTENT_CONFIGS, AUTOTUNE_KEY)(_linear_gelu_persistent_kernel)
VARIANTS = ("tiled", "persistent")
# The tiled kernel until a GPU run says otherwise (bench/bench_linear_gelu.py times both).
DEFAULT_VARIANT = "tiled"


def tma_ready(*tensors: torch.Tensor) -> bool:
    """TMA descriptors need a 16-byte aligned base, a unit last stride and 16-byte aligned row strides."""
    return all(
        t.data_ptr() % 16 == 0 and t.stride(-1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 for t in tensors
    )


def _launch_persistent(x2, weight, bias, y2, z2, approximate: str, config: triton.Config | None) -> None:
    from triton.tools.tensor_descriptor import TensorDescriptor

    (m, k), n = x2.shape, weight.shape[0]
    if config is None and not interpreting():  # half precision on a GPU: fp32 never comes here (linear_gelu_fwd)
        kernel, fixed = _tuned_persistent, {}
    else:
        kernel, fixed = _linear_gelu_persistent_kernel, launch_kwargs(config or INTERPRETER_CONFIG)
    bm, bn, bk = (fixed.get(name, 64) for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))  # the pre-hook resets these
    descs = [
        TensorDescriptor.from_tensor(x2, [bm, bk]),
        TensorDescriptor.from_tensor(weight, [bn, bk]),
        TensorDescriptor.from_tensor(y2, [bm, bn]),
        None if z2 is None else TensorDescriptor.from_tensor(z2, [bm, bn]),
    ]
    programs = programs_per_sm(x2.device)

    def grid(meta):
        return (min(programs, cdiv(m, meta["BLOCK_M"]) * cdiv(n, meta["BLOCK_N"])),)

    launch(
        kernel, grid,
        *descs, bias, m, n, k, next_power_of_2(m),
        HAS_BIAS=bias is not None, STORE_Z=z2 is not None, APPROX_TANH=approximate == "tanh",
        DOT_PRECISION=dot_precision(x2.dtype), NUM_PROGRAMS=programs, **fixed,
    )  # fmt: skip


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> tuple[int, int]:
    op = "linear_gelu"
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    check_float_dtype(op, "x", x)
    check_float_dtype(op, "weight", weight)
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension")
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be (out_features, in_features), got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ValueError(f"{op}: x has {x.shape[-1]} features in its last dim, weight {tuple(weight.shape)} takes {k}")
    if n == 0 or k == 0:
        raise ValueError(f"{op}: weight {tuple(weight.shape)} is empty")
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: x ({x.dtype}) and weight ({weight.dtype}) must share a dtype (or run under autocast)")
    if bias is not None:
        check_float_dtype(op, "bias", bias)
        if bias.shape != (n,):
            raise ValueError(f"{op}: bias has shape {tuple(bias.shape)}, expected ({n},)")
    check_kernel_device(op, x, weight, bias)
    return n, k


def _resolve_variant(variant: str | None) -> str:
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise ValueError(f"linear_gelu: variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def linear_gelu_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    approximate: str = "none",
    store_preact: bool = False,
    config: triton.Config | None = None,
    variant: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, z): y = gelu(x W^T + bias), and z = x W^T (before the bias) when store_preact, else None.

    No autograd (benchmarks time this directly). `config` pins one launch configuration (tests, benchmarks).
    `variant`: "tiled" (one program per output tile) or "persistent" (one program per SM, TMA loads and stores;
    Hopper and newer; fp16 / bf16); None is DEFAULT_VARIANT. The tiled kernel takes the persistent one's place for
    fp32 and when the tensors do not meet TMA's alignment rules.
    """
    n, k = _check(x, weight, bias, approximate)
    variant = _resolve_variant(variant)
    x2 = as_rows(x, k)
    m = x2.shape[0]
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    z = torch.empty_like(y) if store_preact else None
    if m == 0:
        return y, z
    bias = bias.contiguous() if bias is not None else None
    if variant == "persistent" and (x.dtype != torch.float32 or interpreting()):  # the interpreter: tests in fp32
        if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device)[0] < 9:
            raise ValueError("linear_gelu: variant='persistent' needs TMA (compute capability 9.0 or newer)")
        outputs = [y.view(m, n)] + ([z.view(m, n)] if z is not None else [])
        if tma_ready(x2, weight, *outputs):
            _launch_persistent(x2, weight, bias, y.view(m, n), None if z is None else z.view(m, n), approximate,
                               config)
            return y, z
    kernel, fixed = _launch(x.dtype, config)

    def grid(meta):
        return (cdiv(m, meta["BLOCK_M"]) * cdiv(n, meta["BLOCK_N"]),)

    launch(
        kernel, grid,
        x2, weight, bias, y, z, m, n, k, next_power_of_2(m),
        x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1),
        HAS_BIAS=bias is not None, STORE_Z=store_preact, APPROX_TANH=approximate == "tanh",
        DOT_PRECISION=dot_precision(x.dtype), **fixed,
    )  # fmt: skip
    return y, z


# --------------------------------------------------------------------------------------------------------------
# Autograd, as a torch custom op (torch.compile sees one opaque op instead of a graph break)
# --------------------------------------------------------------------------------------------------------------


def _linear_gelu_fwd_impl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str, store_preact: bool,
    variant: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    y, z = linear_gelu_fwd(x, weight, bias, approximate, store_preact, variant=variant)
    return y, (z if z is not None else x.new_empty(0))


_linear_gelu_fwd_op = torch.library.custom_op("bert_fast::linear_gelu_fwd", mutates_args=())(_linear_gelu_fwd_impl)


@_linear_gelu_fwd_op.register_fake
def _(x, weight, bias, approximate, store_preact, variant):
    y = x.new_empty((*x.shape[:-1], weight.shape[0]))
    return y, (torch.empty_like(y) if store_preact else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, approximate, store_preact, _variant = inputs
    _, z = output
    ctx.save_for_backward(x, weight, bias, z)
    ctx.approximate = approximate
    ctx.store_preact = store_preact


def _backward(ctx, dy, _dz):
    x, weight, bias, z = ctx.saved_tensors
    if not ctx.store_preact:
        raise RuntimeError(
            "linear_gelu: backward through a call that did not store its pre-activation (no input required grad, "
            "or grad mode was off, when it ran)"
        )
    need_dbias = bias is not None and ctx.needs_input_grad[2]
    dz, dbias = bias_gelu_backward(dy, z, bias, ctx.approximate, need_dbias)
    n, k = weight.shape
    dz2 = dz.reshape(-1, n)
    dx = (dz2 @ weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
    dweight = dz2.t() @ x.reshape(-1, k) if ctx.needs_input_grad[1] else None
    return dx, dweight, (dbias if need_dbias else None), None, None, None


_linear_gelu_fwd_op.register_autograd(_backward, setup_context=_setup_context)
_linear_gelu = EagerOp(_linear_gelu_fwd_op, _linear_gelu_fwd_impl, _setup_context, _backward)


def linear_gelu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    approximate: str = "none",
    variant: str | None = None,
) -> torch.Tensor:
    """y = gelu(x @ weight.T + bias) as one Triton GEMM; differentiable in x, weight and bias (bias may be None).

    Under autocast, x and weight are cast to the autocast dtype first (what F.linear does); bias may stay wider.
    `variant`: "tiled" or "persistent" (see linear_gelu_fwd); None is DEFAULT_VARIANT.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
    _check(x, weight, bias, approximate)  # here too, so a bad call fails while torch.compile traces
    store_preact = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    variant = _resolve_variant(variant)  # here too, so a bad name fails while torch.compile traces
    y, _ = _linear_gelu(x, weight, bias, approximate, store_preact, variant)
    return y
