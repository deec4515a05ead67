"""Fused bias + dropout + residual add + LayerNorm (BERT's post-LN block), forward and backward.

    h = dropout(x + x_bias) + residual          (x_bias, dropout, residual each optional)
    y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias       over the last dim

Dtypes: x, residual in float32 / float16 / bfloat16; weight, bias, x_bias may be wider than x (float32
parameters with half activations, as under autocast). Everything is computed in float32; y (and the pre-norm
sum h when return_residual=True) is stored in x's dtype, each gradient in its own tensor's dtype. The weight,
bias and x_bias gradients are reduced in float32: per-program partial sums, then one small torch reduction.

Dropout is drawn in the kernel: word k of Philox4x32-10 at counter (c // 4, row, 0, 0) under key `seed` decides
element (row, 4 * (c // 4) + k), kept when its low 31 bits are >= p * 2^31. The mask depends only on (seed,
row, column), so the backward regenerates it exactly and `add_layer_norm_dropout_mask` reproduces it.
The seed is a Python int or the first element of an int64 device tensor, which the kernel loads: a seed drawn on
the device costs no host sync, and a CUDA graph that draws it replays with a new one. With p = 0 the kernels are
compiled without any RNG code.

Saved for the backward: x, residual (inputs, no copies) and per-row mean and rstd (8 bytes a row); h is
recomputed rather than written. Without dropout dx and dresidual are one tensor (see grads_alias).
Limits: hidden size (last dim) 1..16384, one row held in registers (tuned up to 8192; above, the backward
spills registers: correct, slower). Rows: any number; any row stride; a strided last dim is copied first.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import EagerOp, cdiv, check_float_dtype, check_kernel_device, interpreting, seed_arguments
from ._launch import launch
from ._rowwise import as_rows, block_n, persistent_programs, row_stride, warps_for

MAX_COLS = 16384

# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _dropout_keep(seed, rows, threshold, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """(ROWS, BLOCK_N) keep mask. One Philox call yields 4 words, used by 4 neighbouring columns: the RNG costs
    a quarter of what one call per element would, which matters in a memory-bound kernel."""
    groups = tl.arange(0, BLOCK_N // 4)
    c0 = tl.zeros((ROWS, BLOCK_N // 4), dtype=tl.uint32) + groups[None, :].to(tl.uint32)
    c1 = tl.zeros((ROWS, BLOCK_N // 4), dtype=tl.uint32) + rows[:, None].to(tl.uint32)
    zero = tl.zeros((ROWS, BLOCK_N // 4), dtype=tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, zero, zero)
    # join twice then flatten: (ROWS, G, 2, 2) -> column 4g + 2a + b takes word (r0, r1, r2, r3)[2a + b]
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (ROWS, BLOCK_N))
    return (r.to(tl.int32, bitcast=True) & 0x7FFFFFFF) >= threshold


@triton.jit(do_not_specialize=["seed", "threshold"])
def _add_layer_norm_fwd_kernel(
    X,  # (n_rows, n_cols) input: a projection's output before its bias
    RES,  # (n_rows, n_cols) residual, or None
    W,  # (n_cols,) LayerNorm weight
    B,  # (n_cols,) LayerNorm bias, or None
    XB,  # (n_cols,) bias added to X before dropout, or None
    Y,  # (n_rows, n_cols) output, X's dtype
    RES_OUT,  # (n_rows, n_cols) pre-norm sum h, X's dtype (STORE_RESIDUAL)
    MEAN,  # (n_rows,) float32
    RSTD,  # (n_rows,) float32
    n_rows,
    n_cols,
    stride_x,
    stride_res,
    stride_y,
    stride_res_out,
    eps,
    seed,
    SEED,  # (1,) int64 seed, read instead of `seed` when SEED_IN_MEMORY
    threshold,  # int(p * 2^31): a Philox word's low 31 bits below it drop the element
    scale,  # 1 / (1 - p)
    HAS_RESIDUAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_XBIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    SEED_IN_MEMORY: tl.constexpr,
    STORE_RESIDUAL: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    r64 = rows.to(tl.int64)[:, None]  # row offsets can pass 2^31 elements

    h = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_XBIAS:
        h += tl.load(XB + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_DROPOUT:
        if SEED_IN_MEMORY:
            seed = tl.load(SEED)
        keep = _dropout_keep(seed, rows, threshold, ROWS, BLOCK_N)
        h = tl.where(keep, h * scale, 0.0)
    if HAS_RESIDUAL:
        h += tl.load(RES + r64 * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if STORE_RESIDUAL:
        tl.store(RES_OUT + r64 * stride_res_out + cols[None, :], h.to(RES_OUT.dtype.element_ty), mask=mask)

    # two passes over registers: subtracting the mean before squaring keeps var accurate when |mean| >> std
    mean = tl.sum(h, axis=1) / n_cols
    hc = tl.where(mask, h - mean[:, None], 0.0)
    var = tl.sum(hc * hc, axis=1) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = hc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=row_ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit(do_not_specialize=["seed", "threshold"])
def _add_layer_norm_bwd_kernel(
    DY,  # (n_rows, n_cols) gradient of y
    DRES_OUT,  # (n_rows, n_cols) gradient of the returned pre-norm sum, or None
    X,  # (n_rows, n_cols) forward input
    RES,  # (n_rows, n_cols) forward residual, or None
    W,  # (n_cols,)
    XB,  # (n_cols,) or None
    MEAN,  # (n_rows,) float32
    RSTD,  # (n_rows,) float32
    DX,  # (n_rows, n_cols) gradient of x, X's dtype (STORE_DX)
    DRES,  # (n_rows, n_cols) gradient of residual = dh, RES's dtype (STORE_DRES)
    PART,  # (slots, programs, n_cols) float32 partial sums of dweight / dbias / dx_bias
    n_rows,
    n_cols,
    stride_dy,
    stride_dres_out,
    stride_x,
    stride_res,
    stride_dx,
    stride_dres,
    seed,
    SEED,  # (1,) int64, read instead of `seed` when SEED_IN_MEMORY
    threshold,
    scale,
    HAS_RESIDUAL: tl.constexpr,
    HAS_XBIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    SEED_IN_MEMORY: tl.constexpr,
    HAS_DRES_OUT: tl.constexpr,
    STORE_DX: tl.constexpr,
    STORE_DRES: tl.constexpr,
    DW_SLOT: tl.constexpr,  # slot of PART for each reduced gradient, -1 when not wanted
    DB_SLOT: tl.constexpr,
    DXB_SLOT: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Persistent: a fixed number of programs stride over the row tiles, keeping the column sums in registers.
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_XBIAS:
        xb = tl.load(XB + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if SEED_IN_MEMORY:  # only with dropout
        seed = tl.load(SEED)
    dw_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    db_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    dxb_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)

    # Software pipelining by hand: each step issues the loads of the program's next tile before the math of this
    # one, so a tile is always in flight (Triton pipelines loops around tl.dot, not this one).
    rows0 = pid * ROWS + tl.arange(0, ROWS)
    mask0 = (rows0 < n_rows)[:, None] & col_ok[None, :]
    r64_0 = rows0.to(tl.int64)[:, None]
    dy_next = tl.load(DY + r64_0 * stride_dy + cols[None, :], mask=mask0, other=0.0)
    x_next = tl.load(X + r64_0 * stride_x + cols[None, :], mask=mask0, other=0.0)
    if HAS_RESIDUAL:
        res_next = tl.load(RES + r64_0 * stride_res + cols[None, :], mask=mask0, other=0.0)
    mean_next = tl.load(MEAN + rows0, mask=rows0 < n_rows, other=0.0)
    rstd_next = tl.load(RSTD + rows0, mask=rows0 < n_rows, other=0.0)

    for tile in range(pid, tl.cdiv(n_rows, ROWS), n_programs):
        rows = tile * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        r64 = rows.to(tl.int64)[:, None]
        dy = dy_next.to(tl.float32)
        h = x_next.to(tl.float32)
        if HAS_RESIDUAL:
            res = res_next.to(tl.float32)
        mean = mean_next
        rstd = rstd_next

        rows_n = rows + n_programs * ROWS  # this program's next tile (all masked off after the last)
        mask_n = (rows_n < n_rows)[:, None] & col_ok[None, :]
        r64_n = rows_n.to(tl.int64)[:, None]
        dy_next = tl.load(DY + r64_n * stride_dy + cols[None, :], mask=mask_n, other=0.0)
        x_next = tl.load(X + r64_n * stride_x + cols[None, :], mask=mask_n, other=0.0)
        if HAS_RESIDUAL:
            res_next = tl.load(RES + r64_n * stride_res + cols[None, :], mask=mask_n, other=0.0)
        mean_next = tl.load(MEAN + rows_n, mask=rows_n < n_rows, other=0.0)
        rstd_next = tl.load(RSTD + rows_n, mask=rows_n < n_rows, other=0.0)

        # recompute h exactly as the forward did (same fp32 operations, same mask)
        if HAS_XBIAS:
            h += xb
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, rows, threshold, ROWS, BLOCK_N)
            h = tl.where(keep, h * scale, 0.0)
        if HAS_RESIDUAL:
            h += res

        xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w * dy
        c1 = tl.sum(xhat * wdy, axis=1) / n_cols
        c2 = tl.sum(wdy, axis=1) / n_cols
        dh = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DRES_OUT:
            dh += tl.load(DRES_OUT + r64 * stride_dres_out + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if STORE_DRES:
            tl.store(DRES + r64 * stride_dres + cols[None, :], dh.to(DRES.dtype.element_ty), mask=mask)
        if HAS_DROPOUT:
            dx = tl.where(keep, dh * scale, 0.0)
        else:
            dx = dh
        if STORE_DX:
            tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if DW_SLOT >= 0:
            dw_acc += dy * xhat
        if DB_SLOT >= 0:
            db_acc += dy
        if DXB_SLOT >= 0:
            dxb_acc += tl.where(mask, dx, 0.0)

    if DW_SLOT >= 0:
        tl.store(PART + (DW_SLOT * n_programs + pid) * n_cols + cols, tl.sum(dw_acc, axis=0), mask=col_ok)
    if DB_SLOT >= 0:
        tl.store(PART + (DB_SLOT * n_programs + pid) * n_cols + cols, tl.sum(db_acc, axis=0), mask=col_ok)
    if DXB_SLOT >= 0:
        tl.store(PART + (DXB_SLOT * n_programs + pid) * n_cols + cols, tl.sum(dxb_acc, axis=0), mask=col_ok)


@triton.jit(do_not_specialize=["seed", "threshold"])
def _dropout_mask_kernel(
    KEEP,  # (n_rows, n_cols) uint8 keep mask
    n_rows,
    n_cols,
    seed,
    SEED,  # (1,) int64, read instead of `seed` when SEED_IN_MEMORY
    threshold,
    SEED_IN_MEMORY: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    if SEED_IN_MEMORY:
        seed = tl.load(SEED)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    keep = _dropout_keep(seed, rows, threshold, ROWS, BLOCK_N)
    tl.store(KEEP + rows.to(tl.int64)[:, None] * n_cols + cols[None, :], keep.to(tl.uint8), mask=mask)


# --------------------------------------------------------------------------------------------------------------
# Launchers (no autograd: benchmarks time these directly). `add_layer_norm_fwd` / `add_layer_norm_bwd` validate
# their inputs; the underscored ones trust their caller (the public function validated already).
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _fwd_config(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, ROWS, num_warps): one row per program from 1024 columns up, several rows below that."""
    bn = block_n(n_cols)
    rows = max(1, 1024 // bn)
    if interpreting():
        rows = max(rows, 4096 // bn)  # fewer, larger programs: the interpreter pays per program, not per element
    return bn, rows, warps_for(bn * rows)


@functools.cache
def _bwd_config(n_cols: int) -> tuple[int, int, int]:
    """Backward tiles of at least 2048 elements (2 rows a loop step at hidden 768/1024), ~8 values a thread:
    the loop body keeps ~9 fp32 values an element live (three of them accumulators), so this stays near 100
    registers a thread and two 8-warp programs fit on an SM."""
    bn = block_n(n_cols)
    rows = max(1, 2048 // bn)
    return bn, rows, min(16, max(4, bn * rows // 256))


def check_dropout(dropout_p: float) -> None:
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"add_layer_norm: dropout_p must be in [0, 1), got {dropout_p}")


def _dropout_constants(dropout_p: float) -> tuple[int, float]:
    """(threshold, scale) of the kernels' dropout: drop where the low 31 bits of a word are below threshold."""
    return (int(dropout_p * 2**31), 1.0 / (1.0 - dropout_p)) if dropout_p > 0.0 else (0, 1.0)


def _check_vector(name: str, t: torch.Tensor | None, n_cols: int) -> None:
    if t is None:
        return
    check_float_dtype("add_layer_norm", name, t)
    if t.shape != (n_cols,):
        raise ValueError(f"add_layer_norm: {name} has shape {tuple(t.shape)}, expected ({n_cols},)")


def _vector(v: torch.Tensor | None) -> torch.Tensor | None:
    return v if v is None or v.is_contiguous() else v.contiguous()


def check_inputs(x, residual, weight, bias, x_bias, dropout_p: float = 0.0) -> int:
    """Every check of an add_layer_norm call (no device sync); returns the hidden size."""
    if x.dim() == 0:
        raise ValueError("add_layer_norm: x must have at least one dimension")
    check_float_dtype("add_layer_norm", "x", x)
    n_cols = x.shape[-1]
    if not 1 <= n_cols <= MAX_COLS:
        raise ValueError(f"add_layer_norm: hidden size (last dim) {n_cols} is outside 1..{MAX_COLS}")
    if residual is not None:
        check_float_dtype("add_layer_norm", "residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"add_layer_norm: residual has shape {tuple(residual.shape)}, x {tuple(x.shape)}")
    if weight is None:
        raise ValueError("add_layer_norm: weight is required")
    _check_vector("weight", weight, n_cols)
    _check_vector("bias", bias, n_cols)
    _check_vector("x_bias", x_bias, n_cols)
    check_dropout(dropout_p)
    check_kernel_device("add_layer_norm", x, residual, weight, bias, x_bias)
    return n_cols


def _fwd(x, residual, weight, bias, x_bias, eps, dropout_p, seed, seed_tensor, return_residual):
    """Forward launch on validated inputs: (y, residual_out or None, mean, rstd); mean and rstd (rows,) float32."""
    n_cols = x.shape[-1]
    x2 = as_rows(x, n_cols)
    res2 = as_rows(residual, n_cols) if residual is not None else None
    n_rows = x2.shape[0]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    res_out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if return_residual else None
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows == 0:
        return y, res_out, mean, rstd
    bn, rows, warps = _fwd_config(n_cols)
    threshold, scale = _dropout_constants(dropout_p)
    # Both kernels are built without FMA contraction (enable_fp_fusion=False). With it, the backward's
    # `wdy - c2` becomes fma(w, dy, -c2): the unrounded product less its own rounded mean. In a row with no
    # variance (hidden size 1, a constant row) rstd is 1/sqrt(eps) = 1e6, and that rounding comes out as a
    # visible dx where the exact answer is 0. The forward is built the same way so the backward's recomputed h
    # matches it bit for bit. Both are memory-bound: the extra multiplies are free.
    launch(
        _add_layer_norm_fwd_kernel, (cdiv(n_rows, rows),),
        x2, res2, _vector(weight), _vector(bias), _vector(x_bias), y, res_out, mean, rstd,
        n_rows, n_cols, x2.stride(0), row_stride(res2), n_cols, n_cols,
        eps, seed, seed_tensor, threshold, scale,
        HAS_RESIDUAL=res2 is not None, HAS_BIAS=bias is not None, HAS_XBIAS=x_bias is not None,
        HAS_DROPOUT=dropout_p > 0.0, SEED_IN_MEMORY=seed_tensor is not None, STORE_RESIDUAL=return_residual,
        ROWS=rows, BLOCK_N=bn, num_warps=warps, enable_fp_fusion=False,
    )  # fmt: skip
    return y, res_out, mean, rstd


def add_layer_norm_fwd(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-12,
    x_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = None,
    return_residual: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Forward launch. Returns (y, residual_out or None, mean, rstd); mean and rstd are (rows,) float32."""
    check_inputs(x, residual, weight, bias, x_bias, dropout_p)
    if dropout_p > 0.0 and seed is None:
        raise ValueError("add_layer_norm: dropout_p > 0 needs a seed")
    seed, seed_tensor = seed_arguments(seed, x.device) if dropout_p > 0.0 else (0, None)
    return _fwd(x, residual, weight, bias, x_bias, eps, dropout_p, seed, seed_tensor, return_residual)


@functools.cache
def _param_slots(need_dweight: bool, need_dbias: bool, need_dx_bias: bool) -> dict[str, int]:
    """Rows of the (slots, n_cols) float32 buffer that holds the reduced parameter gradients."""
    names = [name for name, wanted in (("dw", need_dweight), ("db", need_dbias), ("dxb", need_dx_bias)) if wanted]
    return {name: i for i, name in enumerate(names)}


def _bwd(dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, seed, seed_tensor,
         need_dx, need_dresidual, need_dweight, need_dbias, need_dx_bias):  # fmt: skip
    """Backward launch on validated inputs. Returns (dx, dresidual, param_grads): dx and dresidual are None where
    not needed, never one tensor (the caller decides whether dx serves as both: `grads_alias`); param_grads is
    (slots, n_cols) float32 with a row for each of dweight, dbias, dx_bias that is wanted, in that order (one
    tensor: one reduction, and a custom op may not return views of each other)."""
    n_cols = x.shape[-1]
    need_dresidual = need_dresidual and residual is not None
    slots = _param_slots(bool(need_dweight), bool(need_dbias and bias is not None),
                         bool(need_dx_bias and x_bias is not None))
    dy2 = as_rows(dy, n_cols)
    x2 = as_rows(x, n_cols)
    res2 = as_rows(residual, n_cols) if residual is not None else None
    dro2 = as_rows(dresidual_out, n_cols) if dresidual_out is not None else None
    n_rows = x2.shape[0]
    dres = torch.empty(x.shape, dtype=residual.dtype, device=x.device) if need_dresidual else None
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else None

    bn, rows, warps = _bwd_config(n_cols)
    programs = persistent_programs(x.device, cdiv(n_rows, rows), warps) if n_rows else 0
    part = torch.empty((len(slots), programs, n_cols), dtype=torch.float32, device=x.device)
    if programs:
        threshold, scale = _dropout_constants(dropout_p)
        launch(
            _add_layer_norm_bwd_kernel, (programs,),
            dy2, dro2, x2, res2, _vector(weight), _vector(x_bias), mean, rstd,
            dx, dres, part if slots else None,
            n_rows, n_cols, dy2.stride(0), row_stride(dro2), x2.stride(0), row_stride(res2), n_cols, n_cols,
            seed, seed_tensor, threshold, scale,
            HAS_RESIDUAL=res2 is not None, HAS_XBIAS=x_bias is not None, HAS_DROPOUT=dropout_p > 0.0,
            SEED_IN_MEMORY=seed_tensor is not None, HAS_DRES_OUT=dro2 is not None, STORE_DX=need_dx,
            STORE_DRES=need_dresidual, DW_SLOT=slots.get("dw", -1), DB_SLOT=slots.get("db", -1),
            DXB_SLOT=slots.get("dxb", -1), ROWS=rows, BLOCK_N=bn, num_warps=warps, enable_fp_fusion=False,
        )  # fmt: skip
    return dx, dres, part.sum(dim=1)  # zeros when there are no rows


def add_layer_norm_bwd(
    dy, x, residual, weight, bias, mean, rstd, x_bias=None, dropout_p=0.0, seed=None, dresidual_out=None,
    need_dx=True, need_dresidual=True, need_dweight=True, need_dbias=True, need_dx_bias=True,
):  # fmt: skip
    """Backward launch for the forward that gave mean and rstd with the same arguments. Returns (dx, dresidual,
    param_grads) as `_bwd` does (`split_param_grads` turns param_grads into dweight, dbias, dx_bias)."""
    check_inputs(x, residual, weight, bias, x_bias, dropout_p)
    if dy.shape != x.shape:
        raise ValueError(f"add_layer_norm backward: dy has shape {tuple(dy.shape)}, x {tuple(x.shape)}")
    if dresidual_out is not None and dresidual_out.shape != x.shape:
        raise ValueError(f"add_layer_norm backward: dresidual_out shape {tuple(dresidual_out.shape)} != x's")
    if dropout_p > 0.0 and seed is None:
        raise ValueError("add_layer_norm backward: dropout_p > 0 needs the forward's seed")
    seed, seed_tensor = seed_arguments(seed, x.device) if dropout_p > 0.0 else (0, None)
    return _bwd(dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, seed, seed_tensor,
                need_dx, need_dresidual, need_dweight, need_dbias, need_dx_bias)


def split_param_grads(param_grads, weight, bias, x_bias, need_dweight=True, need_dbias=True, need_dx_bias=True):
    """(dweight, dbias, dx_bias), each in its parameter's dtype or None, from the backward's param_grads rows."""
    slots = _param_slots(bool(need_dweight), bool(need_dbias and bias is not None),
                         bool(need_dx_bias and x_bias is not None))
    dweight = _row(param_grads, slots.get("dw"), weight)
    dbias = _row(param_grads, slots.get("db"), bias)
    dx_bias = _row(param_grads, slots.get("dxb"), x_bias)
    return dweight, dbias, dx_bias


def _row(param_grads: torch.Tensor, slot: int | None, param: torch.Tensor | None) -> torch.Tensor | None:
    if slot is None:
        return None
    row = param_grads[slot]
    return row if row.dtype == param.dtype else row.to(param.dtype)


def grads_alias(x: torch.Tensor, residual: torch.Tensor | None, dropout_p: float, need_dx: bool, need_dres: bool):
    """Without dropout, dx and dresidual are the same numbers: write them once and hand one tensor back for
    both. Safe for the same reason aten.add's backward may do it: autograd never accumulates into a gradient
    in place while another reference to it is alive."""
    return dropout_p == 0.0 and residual is not None and need_dx and need_dres and residual.dtype == x.dtype


def gradients(backward, dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, seed,
              seed_tensor, needs):  # fmt: skip
    """The backward formula, the one place that applies `grads_alias`: (dx, dresidual, dweight, dbias, dx_bias),
    None where `needs` (five flags in that order) says no. `backward` is the op (autograd, which may be traced) or
    `_bwd` (eager callers)."""
    need_dx, need_dres, need_dw, need_db, need_dxb = needs
    need_dres = need_dres and residual is not None
    alias = grads_alias(x, residual, dropout_p, need_dx, need_dres)
    if dy is None:  # only the returned residual is used downstream
        dy = torch.zeros_like(x)
    dx, dres, param_grads = backward(dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p,
                                     seed, seed_tensor, need_dx, need_dres and not alias, need_dw, need_db, need_dxb)
    dweight, dbias, dx_bias = split_param_grads(param_grads, weight, bias, x_bias, need_dw, need_db, need_dxb)
    dx = dx if need_dx else None  # the op hands back (0,) tensors for "none"
    dres = dx if alias else (dres if need_dres else None)
    return dx, dres, dweight, dbias, dx_bias


def add_layer_norm_dropout_mask(
    seed: int | torch.Tensor, n_rows: int, n_cols: int, p: float, device: torch.device | str = "cuda"
) -> torch.Tensor:
    """The (n_rows, n_cols) bool keep-mask the kernels draw for this seed (an int, or an int64 tensor whose first
    element is the seed) and p (rows of the 2-D view of x).

    Pass it, reshaped to x's shape, as add_layer_norm_ref(dropout_mask=...) to reproduce the kernel's dropout.
    """
    device = torch.device(device)
    check_dropout(p)
    keep = torch.ones((n_rows, n_cols), dtype=torch.uint8, device=device)
    if p == 0.0 or n_rows == 0 or n_cols == 0:
        return keep.view(torch.bool)
    check_kernel_device("add_layer_norm_dropout_mask", keep)
    seed, seed_tensor = seed_arguments(seed, keep.device)
    bn = block_n(n_cols)
    rows = max(1, 4096 // bn)
    _dropout_mask_kernel[(cdiv(n_rows, rows),)](
        keep, n_rows, n_cols, seed, seed_tensor, _dropout_constants(p)[0], SEED_IN_MEMORY=seed_tensor is not None,
        ROWS=rows, BLOCK_N=bn, num_warps=warps_for(bn * rows),
    )  # fmt: skip
    return keep.view(torch.bool)


# --------------------------------------------------------------------------------------------------------------
# Autograd, as torch custom ops (torch.compile sees one opaque op instead of a graph break); eager calls skip the
# custom-op dispatch (EagerOp)
# --------------------------------------------------------------------------------------------------------------


def _empty(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(0)  # custom ops return tensors, not None; a (0,) tensor stands for "none"


def _fwd_impl(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    x_bias: torch.Tensor | None,
    eps: float,
    dropout_p: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    return_residual: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y, res_out, mean, rstd = _fwd(x, residual, weight, bias, x_bias, eps, dropout_p, seed, seed_tensor,
                                  return_residual)
    return y, (res_out if res_out is not None else _empty(x)), mean, rstd


_fwd_op = torch.library.custom_op("bert_fast::add_layer_norm_fwd", mutates_args=())(_fwd_impl)


@_fwd_op.register_fake
def _(x, residual, weight, bias, x_bias, eps, dropout_p, seed, seed_tensor, return_residual):
    n_rows = x.numel() // x.shape[-1]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    res_out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if return_residual else _empty(x)
    stats = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    return y, res_out, stats, torch.empty_like(stats)


def _bwd_impl(
    dy: torch.Tensor,
    dresidual_out: torch.Tensor | None,
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    x_bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    dropout_p: float,
    seed: int,
    seed_tensor: torch.Tensor | None,
    need_dx: bool,
    need_dresidual: bool,
    need_dweight: bool,
    need_dbias: bool,
    need_dx_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dres, param_grads = _bwd(dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, seed,
                                 seed_tensor, need_dx, need_dresidual, need_dweight, need_dbias, need_dx_bias)
    return (dx if dx is not None else _empty(x)), (dres if dres is not None else _empty(x)), param_grads


_bwd_op = torch.library.custom_op("bert_fast::add_layer_norm_bwd", mutates_args=())(_bwd_impl)


@_bwd_op.register_fake
def _(dy, dresidual_out, x, residual, weight, bias, x_bias, mean, rstd, dropout_p, seed, seed_tensor, need_dx,
      need_dresidual, need_dweight, need_dbias, need_dx_bias):  # fmt: skip
    need_dres = need_dresidual and residual is not None
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else _empty(x)
    dres = torch.empty(x.shape, dtype=residual.dtype, device=x.device) if need_dres else _empty(x)
    n_slots = len(_param_slots(bool(need_dweight), bool(need_dbias and bias is not None),
                               bool(need_dx_bias and x_bias is not None)))
    return dx, dres, torch.empty((n_slots, x.shape[-1]), dtype=torch.float32, device=x.device)


_backward_op = EagerOp(_bwd_op, _bwd_impl)


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, x_bias, _eps, dropout_p, seed, seed_tensor, return_residual = inputs
    _, _, mean, rstd = output
    ctx.save_for_backward(x, residual, weight, bias, x_bias, mean, rstd, seed_tensor)
    ctx.dropout_p, ctx.seed, ctx.return_residual = dropout_p, seed, return_residual


def _backward(ctx, dy, dresidual_out, _dmean, _drstd):
    x, residual, weight, bias, x_bias, mean, rstd, seed_tensor = ctx.saved_tensors
    needs = ctx.needs_input_grad[:5]
    dro = dresidual_out if ctx.return_residual else None
    grads = gradients(_backward_op, dy, dro, x, residual, weight, bias, x_bias, mean, rstd, ctx.dropout_p, ctx.seed,
                      seed_tensor, needs)
    return (*grads, None, None, None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)
_add_layer_norm = EagerOp(_fwd_op, _fwd_impl, _setup_context, _backward)


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-12,
    x_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = None,
    return_residual: bool = False,
):
    """y = LayerNorm(dropout(x + x_bias) + residual) * weight + bias over the last dim, in one kernel.

    residual, bias and x_bias may be None (residual=None is a plain LayerNorm). dropout_p > 0 drops elements
    of x + x_bias with the Philox mask of `seed`: an int, an int64 tensor on x's device (its first element), or
    None to draw one from torch's generator, so torch.manual_seed makes runs reproducible (on the device, with no
    host sync, where _common.device_seeds() says so; else on the host); pass dropout_p=0.0 in eval mode. With return_residual=True returns (y, h) where
    h = dropout(x + x_bias) + residual, in x's dtype. Differentiable in x, residual, weight, bias and x_bias.
    """
    check_inputs(x, residual, weight, bias, x_bias, dropout_p)  # here, so bad calls fail while tracing too
    seed, seed_tensor = seed_arguments(seed, x.device) if dropout_p > 0.0 else (0, None)
    y, res_out, _, _ = _add_layer_norm(x, residual, weight, bias, x_bias, eps, dropout_p, seed, seed_tensor,
                                       return_residual)
    return (y, res_out) if return_residual else y
