"""Small helpers shared by the kernel modules: input validation, dropout seeds, launch environment."""

from __future__ import annotations

import os

import torch
import triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_requested() -> bool:
    """TRITON_INTERPRET=1 in the environment right now."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# triton.jit reads TRITON_INTERPRET when it decorates a kernel, so whether our kernels run interpreted is fixed when
# their modules import (this one first): read once, not on every launch.
_INTERPRETING = interpreter_requested()


def interpreting() -> bool:
    """True when our kernels run in Triton's CPU interpreter."""
    return _INTERPRETING


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


# Host-side integer helpers. triton.cdiv and triton.next_power_of_2 are constexpr functions: called from Python
# they unwrap their arguments, a cost a launch would pay several times (bench/NOTES.md §7).


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for non-negative ints; triton.cdiv's result."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n (0 for 0); triton.next_power_of_2's result."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: fp32 inputs use exact fp32 dots; half inputs ignore it (fp16 / bf16 tensor cores)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def launch_kwargs(config) -> dict:
    """A triton.Config as the keyword arguments of a launch that pins it (tests, benchmarks, untuned paths)."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def autotune(configs, key, prune=None, **kwargs):
    """triton.autotune, with each key's pick kept in Triton's on-disk cache (cache_results): a new process reuses
    it instead of timing every config again, seconds per key that short runs (a fine-tune, a test) would pay each
    time. Configs with a pre_hook are timed afresh every process; Triton cannot store them. `prune(configs,
    named_args)` drops the configs a key's shape rules out before any is compiled or timed."""
    if prune is not None:
        kwargs["prune_configs_by"] = {"early_config_prune": lambda configs, named_args, **_: prune(configs, named_args)}
    return triton.autotune(configs=configs, key=key, cache_results=True, **kwargs)


SEED_HIGH = 2**62  # device-drawn seeds lie in [0, SEED_HIGH); int seeds in [0, 2^63)


def draw_seeds(count: int, device: torch.device) -> torch.Tensor:
    """`count` dropout seeds as an int64 tensor on `device`, drawn from torch's generator for that device.

    No host sync, and inside a captured CUDA graph every replay draws new ones (PyTorch advances the generator's
    offset on the device), so replayed steps get fresh masks; torch.manual_seed still reproduces them all."""
    return torch.randint(0, SEED_HIGH, (count,), dtype=torch.int64, device=device)


# Seeds drawn on the device (no host sync, fresh on every CUDA-graph replay) have not run on a GPU yet. Until their
# GPU tests pass there, a seed left to the kernels is drawn on the host on CUDA (one .item() per call, as before)
# and on the device under the interpreter, where the CPU tests run them. BERT_FAST_DEVICE_SEEDS=1 or 0, or
# set_device_seeds(), chooses either way; a captured training step turns them on (a host seed would repeat on
# every replay).
_device_seeds: bool | None = {"1": True, "0": False}.get(os.environ.get("BERT_FAST_DEVICE_SEEDS", ""))


def set_device_seeds(enabled: bool | None) -> bool | None:
    """Draw the seeds the kernels are left to draw on the device (True), on the host (False), or by the default
    (None: on the device only under the interpreter). Returns the previous setting."""
    global _device_seeds
    previous, _device_seeds = _device_seeds, enabled
    return previous


def device_seeds() -> bool:
    return _INTERPRETING if _device_seeds is None else _device_seeds


def seed_arguments(seed, device: torch.device) -> tuple[int, torch.Tensor | None]:
    """A dropout seed as the kernels take it: (int seed, None) for an int, (0, tensor) for a tensor whose first
    element is the seed. A seed of None is drawn: on `device` (a tensor) where device_seeds(), else on the host from
    torch's CPU generator (an int). The kernels load a tensor seed on the device."""
    if seed is None:
        if device_seeds():
            return 0, draw_seeds(1, device)
        return int(torch.randint(0, SEED_HIGH, (1,)).item()), None
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() < 1 or seed.device != device:
            raise ValueError(f"a seed tensor must be int64 on {device} with at least one element, got "
                             f"{seed.dtype} {tuple(seed.shape)} on {seed.device}")
        return 0, seed
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    return int(seed), None


def _plain_eager(args) -> bool:
    """No tracing of any kind: plain tensors (not fake or functional ones) and no dispatch mode active."""
    if torch._C._len_torch_dispatch_stack():
        return False
    return all(type(a) in (torch.Tensor, torch.nn.Parameter) for a in args if isinstance(a, torch.Tensor))


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


class EagerOp:
    """A torch custom op's two faces. While anything traces (torch.compile, AOT autograd, fake tensors, a dispatch
    mode), the registered op: one opaque node in the graph, its fake implementation for shapes. In plain eager
    mode, the op's Python implementation called directly, through a plain autograd.Function when a backward is
    given (the same setup_context and backward the op registers).

    Why: a call through torch.library's custom-op machinery costs the host more than our kernels' launches at BERT
    sizes (measured in bench/NOTES.md §6). The numbers are the same either way: both faces run the same
    implementation.
    """

    def __init__(self, op, impl, setup_context=None, backward=None):
        self.op, self.impl = op, impl
        self.function = None
        if backward is not None:

            class _Function(torch.autograd.Function):
                @staticmethod
                def forward(ctx, *args):
                    ctx.set_materialize_grads(False)  # unused outputs (statistics, placeholders) get None, not zeros
                    output = impl(*args)
                    setup_context(ctx, args, output)
                    return output

                @staticmethod
                def backward(ctx, *grads):
                    return backward(ctx, *grads)

            _Function.__name__ = _Function.__qualname__ = f"{impl.__name__}_function"
            self.function = _Function

    def __call__(self, *args):
        if torch.compiler.is_compiling() or not _plain_eager(args):
            return self.op(*args)
        if self.function is None or not _needs_grad(args):
            return self.impl(*args)  # inference: no autograd.Function to build
        return self.function.apply(*args)
