"""Small helpers shared by the kernel modules: input validation, dropout seeds, launch environment."""

from __future__ import annotations

import os

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_kernel_device(op: str, *tensors: torch.Tensor) -> None:
    """Kernels run on CUDA, or on the CPU under the interpreter; every tensor on the same device."""
    device = tensors[0].device
    for t in tensors:
        if t is not None and t.device != device:
            raise ValueError(f"{op}: tensors are on different devices ({device} and {t.device})")
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{op}: Triton kernels need CUDA tensors (got {device}); set TRITON_INTERPRET=1 to run them on the CPU"
        )


def check_float_dtype(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; expected one of float32, float16, bfloat16")


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: fp32 inputs use exact fp32 dots; half inputs ignore it (fp16 / bf16 tensor cores)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def launch_kwargs(config) -> dict:
    """A triton.Config as the keyword arguments of a launch that pins it (tests, benchmarks, untuned paths)."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def draw_seed(seed: int | None) -> int:
    """A dropout seed: the caller's, or one drawn from torch's default generator (so torch.manual_seed rules)."""
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
