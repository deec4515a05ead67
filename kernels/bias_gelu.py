"""Fused bias + GELU (after BERT's FFN up-projection), forward and backward.

    y = gelu(x + bias)          bias broadcast over the last dim, optional
    exact:  gelu(h) = h * Phi(h) = 0.5 * h * (1 + erf(h / sqrt(2)))                  (approximate="none", BERT)
    tanh:   gelu(h) = 0.5 * h * (1 + tanh(sqrt(2 / pi) * (h + 0.044715 * h^3)))     (approximate="tanh")

Bytes: the forward reads x and writes y; the backward reads dy and x (gelu' is recomputed from x + bias, nothing
else is saved) and writes dx, with dbias = sum over rows of dx reduced in float32 in the same pass (per-program
partial sums, then one small torch reduction).

Dtypes: x in float32 / float16 / bfloat16, bias may be wider (float32 under autocast). Computed in float32;
y and dx are stored in x's dtype, dbias in bias's dtype. Any leading shape, any hidden size.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import EagerOp, cdiv, check_float_dtype, check_kernel_device, next_power_of_2
from ._launch import launch
from ._rowwise import as_rows, persistent_programs, warps_for

APPROXIMATIONS = ("none", "tanh")

# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _tanh(u):
    # tl has no tanh that also runs in the interpreter; this form never overflows: e = exp(-2|u|) is in (0, 1]
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def _gelu(h, APPROX_TANH: tl.constexpr):
    if APPROX_TANH:
        t = _tanh(0.7978845608028654 * (h + 0.044715 * h * h * h))
        y = 0.5 * h * (1.0 + t)
    else:
        y = 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
    return y


@triton.jit
def _gelu_grad(h, APPROX_TANH: tl.constexpr):
    """d gelu(h) / dh."""
    if APPROX_TANH:
        t = _tanh(0.7978845608028654 * (h + 0.044715 * h * h * h))
        g = 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * h * h)
    else:
        # Phi(h) + h * phi(h), phi the standard normal density
        g = 0.5 * (1.0 + tl.math.erf(h * 0.7071067811865476)) + h * 0.3989422804014327 * tl.exp(-0.5 * h * h)
    return g


@triton.jit
def _bias_gelu_fwd_kernel(
    X,  # (n_rows, n_cols) input
    BIAS,  # (n_cols,) or None
    Y,  # (n_rows, n_cols) output, X's dtype
    n_rows,
    n_cols,
    stride_x,
    stride_y,
    HAS_BIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    r64 = rows.to(tl.int64)[:, None]
    h = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        h += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    y = _gelu(h, APPROX_TANH)
    tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(
    DY,  # (n_rows, n_cols) gradient of y
    X,  # (n_rows, n_cols) forward input
    BIAS,  # (n_cols,) or None
    DX,  # (n_rows, n_cols) gradient of x, X's dtype
    DBIAS_PART,  # (row programs, n_cols) float32 partial sums of dx (COMPUTE_DBIAS)
    n_rows,
    n_cols,
    stride_dy,
    stride_x,
    stride_dx,
    HAS_BIAS: tl.constexpr,
    COMPUTE_DBIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Grid (row programs, column blocks); each row program strides over the row tiles of its column block and
    # keeps the column sums of dx in float32 registers.
    pid_m = tl.program_id(0)
    n_programs_m = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    if HAS_BIAS:
        bias = tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Software pipelining by hand: the loads of the next tile are issued before the math of this one.
    rows0 = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask0 = (rows0 < n_rows)[:, None] & col_ok[None, :]
    r64_0 = rows0.to(tl.int64)[:, None]
    dy_next = tl.load(DY + r64_0 * stride_dy + cols[None, :], mask=mask0, other=0.0)
    x_next = tl.load(X + r64_0 * stride_x + cols[None, :], mask=mask0, other=0.0)
    for tile in range(pid_m, tl.cdiv(n_rows, BLOCK_M), n_programs_m):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        r64 = rows.to(tl.int64)[:, None]
        dy = dy_next.to(tl.float32)
        h = x_next.to(tl.float32)
        rows_n = rows + n_programs_m * BLOCK_M  # this program's next tile (all masked off after the last)
        mask_n = (rows_n < n_rows)[:, None] & col_ok[None, :]
        r64_n = rows_n.to(tl.int64)[:, None]
        dy_next = tl.load(DY + r64_n * stride_dy + cols[None, :], mask=mask_n, other=0.0)
        x_next = tl.load(X + r64_n * stride_x + cols[None, :], mask=mask_n, other=0.0)
        if HAS_BIAS:
            h += bias
        dx = dy * _gelu_grad(h, APPROX_TANH)  # zero where masked, since dy is
        tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DBIAS:
            acc += dx
    if COMPUTE_DBIAS:
        tl.store(DBIAS_PART + pid_m * n_cols + cols, tl.sum(acc, axis=0), mask=col_ok)


# --------------------------------------------------------------------------------------------------------------
# Launchers (no autograd: benchmarks time these directly)
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): tiles of ~4096 elements (8 KiB in bf16, 16 values a thread at 8 warps).

    Column blocks up to 1024 wide, preferring a width that divides the hidden size (768 -> 256: no masked lanes).
    """
    for bn in (1024, 512, 256, 128):
        if n_cols % bn == 0:
            break
    else:
        bn = min(1024, next_power_of_2(n_cols))
    bm = min(max(1, 4096 // bn), next_power_of_2(max(n_rows, 1)))
    return bm, bn, warps_for(bm * bn)


def check_inputs(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> int:
    """Every check of a bias_gelu call (no device sync); returns the hidden size."""
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"bias_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if x.dim() == 0:
        raise ValueError("bias_gelu: x must have at least one dimension")
    check_float_dtype("bias_gelu", "x", x)
    n_cols = x.shape[-1]
    if n_cols == 0:
        raise ValueError("bias_gelu: the last dim of x is empty")
    if bias is not None:
        check_float_dtype("bias_gelu", "bias", bias)
        if bias.shape != (n_cols,):
            raise ValueError(f"bias_gelu: bias has shape {tuple(bias.shape)}, expected ({n_cols},)")
    check_kernel_device("bias_gelu", x, bias)
    return n_cols


def _fwd(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    """Forward launch on validated inputs."""
    n_cols = x.shape[-1]
    x2 = as_rows(x, n_cols)
    bias = bias if bias is None or bias.is_contiguous() else bias.contiguous()
    n_rows = x2.shape[0]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if n_rows == 0:
        return y
    bm, bn, warps = _config(n_rows, n_cols)
    launch(
        _bias_gelu_fwd_kernel, (cdiv(n_rows, bm), cdiv(n_cols, bn)),
        x2, bias, y, n_rows, n_cols, x2.stride(0), n_cols,
        HAS_BIAS=bias is not None, APPROX_TANH=approximate == "tanh", BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
    )  # fmt: skip
    return y


def _bwd(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str, need_dbias: bool
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward launch on validated inputs: (dx, dbias); dbias is None without a bias or when not needed."""
    n_cols = x.shape[-1]
    need_dbias = need_dbias and bias is not None
    dy2, x2 = as_rows(dy, n_cols), as_rows(x, n_cols)
    bias = bias if bias is None or bias.is_contiguous() else bias.contiguous()
    n_rows = x2.shape[0]
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    bm, bn, warps = _config(n_rows, n_cols)
    n_col_blocks = cdiv(n_cols, bn)
    programs = persistent_programs(x.device, cdiv(n_rows, bm), warps, parallel=n_col_blocks) if n_rows else 0
    part = torch.empty((programs if need_dbias else 0, n_cols), dtype=torch.float32, device=x.device)
    if programs:
        launch(
            _bias_gelu_bwd_kernel, (programs, n_col_blocks),
            dy2, x2, bias, dx, part if need_dbias else None, n_rows, n_cols, dy2.stride(0), x2.stride(0), n_cols,
            HAS_BIAS=bias is not None, COMPUTE_DBIAS=need_dbias, APPROX_TANH=approximate == "tanh",
            BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
        )  # fmt: skip
    dbias = part.sum(dim=0) if need_dbias else None
    return dx, (dbias.to(bias.dtype) if dbias is not None and dbias.dtype != bias.dtype else dbias)


def bias_gelu_fwd(x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """Forward launch (validates its inputs)."""
    check_inputs(x, bias, approximate)
    return _fwd(x, bias, approximate)


def bias_gelu_bwd(
    dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none", need_dbias: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward launch (validates its inputs). Returns (dx, dbias); dbias is None without a bias or when not
    needed."""
    check_inputs(x, bias, approximate)
    if dy.shape != x.shape:
        raise ValueError(f"bias_gelu backward: dy has shape {tuple(dy.shape)}, x {tuple(x.shape)}")
    return _bwd(dy, x, bias, approximate, need_dbias)


# --------------------------------------------------------------------------------------------------------------
# Autograd, as torch custom ops (torch.compile sees one opaque op instead of a graph break); eager calls skip the
# custom-op dispatch (EagerOp)
# --------------------------------------------------------------------------------------------------------------


def _bias_gelu_fwd_impl(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    return _fwd(x, bias, approximate)


_bias_gelu_fwd_op = torch.library.custom_op("bert_fast::bias_gelu_fwd", mutates_args=())(_bias_gelu_fwd_impl)


@_bias_gelu_fwd_op.register_fake
def _(x, bias, approximate):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _bias_gelu_bwd_impl(
    dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str, need_dbias: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dbias = _bwd(dy, x, bias, approximate, need_dbias)
    return dx, (dbias if dbias is not None else x.new_empty(0))


_bias_gelu_bwd_op = torch.library.custom_op("bert_fast::bias_gelu_bwd", mutates_args=())(_bias_gelu_bwd_impl)
bias_gelu_backward = EagerOp(_bias_gelu_bwd_op, _bias_gelu_bwd_impl)  # also linear_gelu's backward


@_bias_gelu_bwd_op.register_fake
def _(dy, x, bias, approximate, need_dbias):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return dx, (torch.empty_like(bias) if need_dbias and bias is not None else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, bias, approximate = inputs
    ctx.save_for_backward(x, bias)
    ctx.approximate = approximate


def _backward(ctx, dy):
    x, bias = ctx.saved_tensors
    need_dbias = bias is not None and ctx.needs_input_grad[1]
    dx, dbias = bias_gelu_backward(dy, x, bias, ctx.approximate, need_dbias)
    return dx, (dbias if need_dbias else None), None


_bias_gelu_fwd_op.register_autograd(_backward, setup_context=_setup_context)
_bias_gelu = EagerOp(_bias_gelu_fwd_op, _bias_gelu_fwd_impl, _setup_context, _backward)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """y = gelu(x + bias) over the last dim, in one kernel; differentiable in x and bias (bias may be None)."""
    check_inputs(x, bias, approximate)  # here, so a bad call fails while torch.compile traces too
    return _bias_gelu(x, bias, approximate)
