"""Triton's compiled launch path on a machine without a GPU: the host side of every launch, with the GPU stubbed out.

Kernels compile for sm_90 (Hopper) exactly as on an H100, Triton's JITFunction.run and Autotuner.run run as they
would there, and only the last step, the compiled kernel's C launcher calling into the CUDA driver, is replaced
by a recorder of its arguments. Autotuning times nothing: it picks a config that depends on the tuning key (so
that different keys get different picks, as they may on a GPU). Tensors are
CPU tensors (the device checks of our launchers are switched off); nothing is computed.

What it is for: measuring the host cost of launches without a GPU (`python -m bench.bench_launch --stub-driver`),
and checking that bert_fast_kernels' cached launch path (_launch.py) hands the launcher the same arguments as
Triton's own path (tests/kernels/test_launch.py). Call `install()` in a fresh process without TRITON_INTERPRET, before
anything imports bert_fast_kernels.
"""

from __future__ import annotations

import importlib
import os
import sys

KERNEL_MODULES = ("bias_gelu", "add_layer_norm", "attention_fwd", "attention_bwd", "varlen_attention", "linear_gelu")
launches: list[tuple] = []  # while `recording`, the arguments of each stubbed launch (grid, stream, ..., kernel args)
recording = False  # off for timing: a growing list of tensors would make the garbage collector part of the numbers
compile_while_tuning = False  # compile every config the autotuner "times", as it does on a GPU (first-call costs)
compiled: list = []  # every kernel Triton compiled in this process
installed = False


class StubDriver:
    """The calls Triton's launch path makes of its driver, answered for one sm_90 device."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def is_active(self):
        return True


def _record(*args):
    if recording:
        launches.append(args)


def _keyed_timing(tuner, *args, config, **kwargs) -> list[float]:
    """A stand-in for timing a config: a rotation of the config list that depends on the key's values."""
    if compile_while_tuning:
        tuner.fn.run(*args, **{**kwargs, **config.all_kwargs(), "warmup": True})
    key = tuple(tuner.nargs.get(name, kwargs.get(name)) for name in tuner.keys)
    shift = sum(v for v in key if isinstance(v, int))
    return [float((tuner.configs.index(config) + shift) % len(tuner.configs))]


def install() -> None:
    global installed
    if installed:
        return
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("bench.stub_driver: unset TRITON_INTERPRET; the stub driver runs Triton's compiled path")
    if "bert_fast_kernels" in sys.modules:
        raise RuntimeError("bench.stub_driver: install() must run before bert_fast_kernels is imported")
    from triton.runtime import autotuner, jit
    from triton.runtime.driver import driver

    driver.set_active(StubDriver())
    do_compile = jit.JITFunction._do_compile

    def compile_and_stub(self, *args, **kwargs):
        kernel = do_compile(self, *args, **kwargs)
        kernel._run, kernel.module, kernel.function = _record, 0, 0  # no module to load: launches are recorded
        compiled.append(kernel)
        return kernel

    jit.JITFunction._do_compile = compile_and_stub
    autotuner.Autotuner._bench = _keyed_timing
    for name in KERNEL_MODULES:  # CPU tensors stand in for CUDA ones
        module = importlib.import_module(f"bert_fast_kernels.{name}")
        if hasattr(module, "check_kernel_device"):
            module.check_kernel_device = lambda *args, **kwargs: None
    from bert_fast import ops  # the model's impl="triton" runs on these CPU tensors too

    ops.kernels_usable = lambda device: True
    installed = True
