"""Launch plumbing shared by the row-wise kernels (bias_gelu, add_layer_norm): 2-D views and launch configs.

The configs are picked by rule, not autotuned: the kernels are memory-bound, the rule is what Hopper wants
(16-byte vector loads, one row per program up to 8192 columns, warps scaled with the row), and autotuning
under the CPU interpreter would be slow for nothing.
"""

from __future__ import annotations

import functools

import torch

from ._common import interpreting, next_power_of_2

MIN_BLOCK_N = 16  # the dropout draws 4 words per Philox call, so a row tile holds at least 4 columns


def as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(..., n_cols) -> a (rows, n_cols) view with a unit column stride (copies only if no such view exists).

    Any row stride is fine (the kernels take it as an argument), so a column slice of a wider matrix or a
    transposed leading layout costs no copy; only a strided last dim does.
    """
    t2 = t.reshape(-1, n_cols)
    if t2.stride(-1) != 1 and n_cols > 1:
        t2 = t2.contiguous()
    return t2


def row_stride(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.stride(0)


def warps_for(elements: int) -> int:
    """Warps for a tile of this many elements: 4 up to 1024, 8 up to 4096, 16 above (8-16 values per thread)."""
    if elements <= 1024:
        return 4
    if elements <= 4096:
        return 8
    return 16


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def persistent_programs(
    device: torch.device, n_tiles: int, num_warps: int, resident_warps: int = 16, parallel: int = 1
) -> int:
    """Programs (along one grid axis) for a persistent kernel that loops over tiles and keeps fp32 partial sums
    in registers.

    About `resident_warps` warps on each SM to hide latency (16 for the backward kernels, which hold 100+
    registers a thread), but no more programs than that, since each writes one row of partial sums that a
    final reduction reads back. `parallel` programs along another grid axis share the budget. Under the
    interpreter a few programs, so the tile loop runs more than once in tests.
    """
    if device.type != "cuda" or interpreting():
        return max(1, min(n_tiles, 3))
    index = device.index if device.index is not None else torch.cuda.current_device()
    budget = _sm_count(index) * resident_warps // (num_warps * parallel)
    return max(1, min(n_tiles, budget))


def programs_per_sm(device: torch.device) -> int:
    """Programs for a persistent kernel that keeps one program on each SM (three under the interpreter, so the
    tile loop of each runs more than once in tests)."""
    if device.type != "cuda" or interpreting():
        return 3
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def block_n(n_cols: int) -> int:
    return max(MIN_BLOCK_N, next_power_of_2(n_cols))
