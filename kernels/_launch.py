"""Kernel launches without re-running Triton's Python launch path on every call.

`kernel[grid](*args, **kwargs)` goes through Autotuner.run (a dict of every argument, the tuning key rebuilt with a
hasattr test per argument) and JITFunction.run (device and stream lookups, the argument binder, a cache key built
from str(options), a check of the kernel's globals, the grid) before the compiled kernel's C launcher runs. On a
CPU with only the driver call stubbed out (`python -m bench.bench_launch --stub-driver`, triton 3.6) that is 54 µs
of the 84 µs an autotuned attention launch costs the host, against 30 µs for our own launcher code
(bench/NOTES.md §7). On the first H100 run, launch overhead was what bounded every small workload (§6).

`launch(kernel, grid, *args, **kwargs)` does the same launch. The first call of each kind takes Triton's own path,
which tunes, compiles and launches, and keeps what it chose:
- for an Autotuner, the config it picked, under the same key the Autotuner uses (the key arguments' values and the
  dtypes of the tensor arguments), so later calls skip Autotuner.run and pass the config's kwargs straight on;
- for the JITFunction, the compiled kernel, under the binder's own specialization (dtypes, 16-byte alignment,
  integer properties, constexpr values, exactly what Triton keys its cache on) and the launch options.
Later calls bind the arguments with Triton's binder and call the compiled kernel's launcher with the same argument
list JITFunction.run would pass (tests/kernels/test_launch.py checks that, call by call, under a stub driver).

It falls back to `kernel[grid](...)` whenever anything could make the two differ: Triton's interpreter, a Triton
release whose launch path it has not been checked against, launch hooks or debug mode switched on, pre-run hooks,
a config with its own pre_hook, arguments other than tensors, None and scalars (TMA descriptors), kernels wrapped in
anything but one Autotuner. `set_lean_launch(False)` (or BERT_FAST_LEAN_LAUNCH=0) turns it off.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.runtime.autotuner import Autotuner
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

# Releases whose JITFunction.run / CompiledKernel.run convention this module follows (read from their source and
# checked under the stub driver): the GPU image's 3.6 and the CPU tests' 3.9.
CHECKED_TRITON = ("3.6.", "3.9.")
_supported = triton.__version__.startswith(CHECKED_TRITON)
_enabled = os.environ.get("BERT_FAST_LEAN_LAUNCH", "1") != "0"
_USE_TRITON = object()  # a key whose launches go through Autotuner.run (a pre_hook, or a key we cannot rebuild)


def set_lean_launch(enabled: bool) -> bool:
    """Turn the cached launch path on or off (benchmarks compare the two); returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def lean_launch_active() -> bool:
    return _enabled and _supported


class _KernelState:
    """What one kernel object's first launches chose: tuning picks and compiled kernels."""

    def __init__(self, kernel):
        self.kernel = kernel  # keeps the object alive, so its id() stays this entry's
        self.tuner = kernel if isinstance(kernel, Autotuner) else None
        self.jit = kernel.fn if self.tuner is not None else kernel
        self.usable = isinstance(self.jit, JITFunction)
        if self.tuner is not None:
            names = self.tuner.arg_names
            self.arg_names = set(names)
            self.key_args = [(name, names.index(name)) for name in self.tuner.keys if name in self.arg_names]
        self.picks: dict = {}
        self.compiled: dict = {}

    def tuning_key(self, args, kwargs) -> tuple:
        """The information of Autotuner.run's key: the key arguments' values, then the dtype of each tensor.

        Autotuner.run takes the dtype of every argument that has one; our launchers pass tensors, None and Python
        scalars, of which only tensors do. `check_tuning_key` makes sure of that on each kernel's first call."""
        n = len(args)  # list comprehensions: cheaper than generators on this path
        values = [kwargs[name] if name in kwargs else args[i] for name, i in self.key_args if name in kwargs or i < n]
        values += [a.dtype for a in args if isinstance(a, torch.Tensor)]
        values += [v.dtype for v in kwargs.values() if isinstance(v, torch.Tensor)]
        return tuple(values)

    def check_tuning_key(self, args, kwargs) -> bool:
        """True when no argument but a tensor has a dtype (else the cached pick could miss part of the key)."""
        named = [*args, *(v for k, v in kwargs.items() if k in self.arg_names)]
        return all(isinstance(a, torch.Tensor) or not hasattr(a, "dtype") for a in named)


_states: dict[int, _KernelState] = {}


def _plain_argument(value) -> bool:
    """Tensors, None and Python scalars: the argument kinds the cached path was checked with. Others (TMA tensor
    descriptors, whose launcher builds a descriptor per call) keep Triton's path."""
    return value is None or isinstance(value, (torch.Tensor, int, float, bool, str))


def _hook_set(hook) -> bool:
    """A launch hook that would run. Triton keeps an empty HookChain where none is registered; Triton's own path
    then still builds launch metadata and calls the empty chains, which the cached path skips."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _hooks_active(jit: JITFunction) -> bool:
    runtime = triton.knobs.runtime
    return bool(
        _hook_set(runtime.launch_enter_hook)
        or _hook_set(runtime.launch_exit_hook)
        or runtime.debug
        or getattr(runtime, "add_stages_inspection_hook", None) is not None
        or getattr(jit, "pre_run_hooks", None)
    )


def launch(kernel, grid, *args, **kwargs) -> None:
    """kernel[grid](*args, **kwargs), with Triton's Python launch path run once per tuning key and specialization."""
    if not (_enabled and _supported):
        kernel[grid](*args, **kwargs)
        return
    state = _states.get(id(kernel))
    if state is None:
        state = _states[id(kernel)] = _KernelState(kernel)
    if not state.usable or _hooks_active(state.jit):
        kernel[grid](*args, **kwargs)
        return

    if state.tuner is not None:
        key = state.tuning_key(args, kwargs)
        pick = state.picks.get(key)
        if pick is None:
            kernel[grid](*args, **kwargs)  # tunes (or reads the pick from Triton's disk cache) and launches
            config = state.tuner.best_config
            exact = config.pre_hook is None and state.check_tuning_key(args, kwargs)
            state.picks[key] = config.all_kwargs() if exact else _USE_TRITON
            return
        if pick is _USE_TRITON:
            kernel[grid](*args, **kwargs)
            return
        kwargs = {**kwargs, **pick}

    jit = state.jit
    device = driver.active.get_current_device()
    binder = jit.device_caches[device][-1]
    bound_args, specialization, options = binder(*args, **kwargs)
    key = (device, tuple(specialization), tuple(options.items()))
    compiled = state.compiled.get(key)
    if compiled is None:
        compiled = jit.run(*args, grid=grid, warmup=False, **kwargs)  # compiles and launches
        state.compiled[key] = compiled if all(map(_plain_argument, bound_args.values())) else _USE_TRITON
        return
    if compiled is _USE_TRITON:
        jit[grid](*args, **kwargs)
        return
    if callable(grid):
        grid = grid(bound_args)
    grid_0, grid_1, grid_2 = (*grid, 1, 1)[:3]
    stream = driver.active.get_current_stream(device)
    compiled.run(grid_0, grid_1, grid_2, stream, compiled.function, compiled.packed_metadata, None, None, None,
                 *bound_args.values())
