"""Device names as the commands and runs take them, checked before any work starts."""

from __future__ import annotations

import torch

from .errors import DeviceError


def resolve_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """`name` (None, "" or "auto": CUDA when a GPU is visible, else the CPU) as a torch.device.

    A bare "cuda" becomes this process's GPU (`local_rank` under torchrun). Asking for a GPU that is not there is
    a DeviceError naming it, not a failure deep inside the first CUDA call.
    """
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"{name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(f"device {name!r} asked for, but no CUDA GPU is visible (torch {torch.__version__}, "
                          f"{build}); use --device cpu")
    if device.index is None:
        device = torch.device("cuda", local_rank)
    if device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    return device
