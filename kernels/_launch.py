"""Kernel launches without running Triton's Python launch path on every call: launch plans. Off by default.

`kernel[grid](*args, **kwargs)` goes through Autotuner.run (a dict of every argument, the tuning key rebuilt with a
hasattr test per argument) and JITFunction.run, whose argument binder specializes each of a kernel's 30 to 40
arguments, before the compiled kernel's C launcher runs. For our launchers that binding is most of a launch's host
time (bench/NOTES.md §7, §10).

`launch(kernel, grid, *args, **kwargs)` does the same launch through a plan kept per kernel and call shape (how
many positional arguments, which keywords). The first call of each kind takes Triton's path, which tunes, compiles
and launches, and the plan keeps what it chose:
- for an Autotuner, the config it picked, under the information of the Autotuner's key (the key arguments' values
  and the tensor arguments' dtypes);
- for the JITFunction, the compiled kernel, under a specialization key at least as fine as Triton's binder's: each
  tensor's dtype and 16-byte alignment, each integer's 32/64-bit range, whether it is 1 and whether 16 divides it
  (the range only, for arguments Triton does not specialize), every keyword's value.
Later calls compute that key in plain Python (no binder) and call the compiled kernel's launcher with the argument
list JITFunction.run would pass: the positional arguments, then the keyword ones in the kernel's order
(tests/kernels/test_launch.py checks that, call by call, under a stub driver).

It falls back to `kernel[grid](...)` whenever anything could make the two differ: Triton's interpreter, a Triton
release whose launch path it has not been checked against (CHECKED_TRITON, said once in the log), launch hooks or
debug mode switched on, pre-run hooks, a config with its own pre_hook, arguments other than tensors, None and
Python scalars (TMA descriptors), kernels wrapped in anything but one Autotuner, a parameter left to its default.

It has not run on a GPU yet, so it is off unless BERT_FAST_LEAN_LAUNCH=1 or `set_lean_launch(True)`; the GPU test
`test_cached_path_gives_bitwise_equal_results_on_the_gpu` decides whether it may become the default.
"""

from __future__ import annotations

import logging
import operator
import os

import torch
import triton
from triton.runtime.autotuner import Autotuner
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

logger = logging.getLogger("bert_fast")

# Releases whose JITFunction.run / CompiledKernel.run convention this module follows (read from their source and
# checked under the stub driver): the GPU image's 3.6 and the CPU tests' 3.9.
CHECKED_TRITON = ("3.6.", "3.9.")
_supported = triton.__version__.startswith(CHECKED_TRITON)
_enabled = os.environ.get("BERT_FAST_LEAN_LAUNCH", "0") == "1"
_told = False
_USE_TRITON = object()  # a kind of launch that goes through Triton's path on every call


def set_lean_launch(enabled: bool) -> bool:
    """Turn the planned launch path on or off (benchmarks compare the two); returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def lean_launch_active() -> bool:
    return _enabled and _supported


def _say_unsupported_once() -> None:
    global _told
    if not _told:
        _told = True
        logger.info("bert_fast: the planned launch path is off: triton %s is not one of the checked releases %s",
                    triton.__version__, ", ".join(v + "x" for v in CHECKED_TRITON))


class _Plan:
    """How to launch one kernel for one call shape: the kernel's parameters in order, the compiled kernels by
    specialization key, and for an Autotuner its picks by tuning key."""

    def __init__(self, kernel, n_args: int, keywords: tuple[str, ...]):
        self.kernel = kernel  # keeps the object alive, so its id() stays this plan's
        self.tuner = tuner = kernel if isinstance(kernel, Autotuner) else None
        self.jit = jit = kernel.fn if tuner is not None else kernel
        self.usable = isinstance(jit, JITFunction)
        if not self.usable:
            return
        params = jit.params
        names = [p.name for p in params]
        # per positional argument: whether Triton specializes it on its value, and a pointer on its alignment
        self.specialize = [not getattr(params[i], "do_not_specialize", False) for i in range(min(n_args, len(params)))]
        self.align = [not getattr(params[i], "do_not_specialize_on_alignment", False)
                      for i in range(min(n_args, len(params)))]
        self.constexpr_positions = [i for i in range(min(n_args, len(params))) if params[i].is_constexpr]
        self.keywords = keywords
        self.tuned_names: tuple[str, ...] = ()
        if tuner is not None:
            tuned = {name for config in tuner.configs for name in config.all_kwargs()}
            self.tuned_names = tuple(n for n in names if n in tuned and n not in keywords)
            arg_names = tuner.arg_names
            self.key_args = [(name, arg_names.index(name)) for name in tuner.keys if name in arg_names]
        given = set(names[:n_args]) | set(keywords) | set(self.tuned_names)
        self.usable = n_args <= len(params) and set(names) <= given  # no parameter left to its default
        self.param_keywords = [n for n in names[n_args:] if n in keywords or n in self.tuned_names]
        self.picks: dict = {}
        self.compiled: dict = {}
        self._specialize = None
        self.keyword_values = operator.itemgetter(*self.param_keywords) if self.param_keywords else None

    def tuning_key(self, args, kwargs) -> tuple:
        """The information of Autotuner.run's key: the key arguments' values, then the dtype of each tensor."""
        n = len(args)
        values = [kwargs[name] if name in kwargs else args[i] for name, i in self.key_args if name in kwargs or i < n]
        values += [a.dtype for a in args if isinstance(a, torch.Tensor)]
        values += [v.dtype for v in kwargs.values() if isinstance(v, torch.Tensor)]
        return tuple(values)

    def specialization(self, args) -> tuple | None:
        """The key of the compiled kernel for these positional arguments; None for arguments of other kinds than
        the planned path handles (they take Triton's path)."""
        if self._specialize is None:
            self._specialize = _specialization_function(args, self.specialize, self.align, self.constexpr_positions)
            if self._specialize is None:
                return None
        try:
            return self._specialize(*args)
        except _OtherKind:
            return None


class _OtherKind(Exception):
    pass


def _other(value):
    raise _OtherKind


def _specialization_function(args, specialize, align, constexpr_positions):
    """A function of the positional arguments, generated for the kinds the first call passed (a pointer, which may
    be None, an int, a float), that returns the specialization key in one expression: no loop, no calls but the
    tensors' data_ptr(). A value of another kind than its position's first one raises _OtherKind."""
    terms = []
    for i, a in enumerate(args):
        name = f"a{i}"
        if i in constexpr_positions:
            terms.append(name)
        elif a is None or isinstance(a, torch.Tensor):
            aligned = f", not {name}.data_ptr() & 15" if align[i] else ""
            terms.append(f"(({name}.dtype{aligned}) if type({name}) in _TENSORS else _other({name}))"
                         f" if {name} is not None else None")
        elif type(a) is int:
            detail = f", {name} == 1, not {name} % 16" if specialize[i] else ""
            terms.append(f"(-2147483648 <= {name} < 2147483648, {name} < 9223372036854775808{detail})"
                         f" if type({name}) is int else _other({name})")
        elif type(a) is float:
            terms.append(f"0.5 if type({name}) is float else _other({name})")
        else:
            return None
    names = ", ".join(f"a{i}" for i in range(len(args)))
    source = f"def specialization({names}):\n    return ({', '.join(terms)},)\n"
    namespace = {"_other": _other, "_TENSORS": (torch.Tensor, torch.nn.Parameter)}
    exec(source, namespace)  # noqa: S102 (generated from the kernel's own parameter list)
    return namespace["specialization"]


_plans: dict[tuple, _Plan] = {}  # by (id(kernel), number of positional arguments, keyword names)


def _hook_set(hook) -> bool:
    """A launch hook that would run. Triton keeps an empty HookChain where none is registered; Triton's own path
    then still builds launch metadata and calls the empty chains, which the planned path skips."""
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
    """kernel[grid](*args, **kwargs), with Triton's Python launch path run once per kind of call."""
    if not _enabled:
        kernel[grid](*args, **kwargs)
        return
    if not _supported:
        _say_unsupported_once()
        kernel[grid](*args, **kwargs)
        return
    shape = (id(kernel), len(args), tuple(kwargs))
    plan = _plans.get(shape)
    if plan is None:
        plan = _plans[shape] = _Plan(kernel, len(args), tuple(kwargs))
    if not plan.usable or _hooks_active(plan.jit):
        kernel[grid](*args, **kwargs)
        return

    if plan.tuner is not None:
        tuning_key = plan.tuning_key(args, kwargs)
        pick = plan.picks.get(tuning_key)
        if pick is None:
            kernel[grid](*args, **kwargs)  # tunes (or reads the pick from Triton's disk cache) and launches
            config = plan.tuner.best_config
            exact = config.pre_hook is None and all(
                isinstance(a, torch.Tensor) or not hasattr(a, "dtype") for a in (*args, *kwargs.values()))
            plan.picks[tuning_key] = config.all_kwargs() if exact else _USE_TRITON
            return
        if pick is _USE_TRITON:
            kernel[grid](*args, **kwargs)
            return
        kwargs = {**kwargs, **pick}

    specialization = plan.specialization(args)
    if specialization is None:
        kernel[grid](*args, **kwargs)
        return
    key = (specialization, *kwargs.values())
    compiled = plan.compiled.get(key)
    if compiled is None:
        plan.compiled[key] = plan.jit.run(*args, grid=grid, warmup=False, **kwargs)  # compiles (or finds), launches
        return
    if callable(grid):
        grid = grid(kwargs)  # our grids read constexprs only (the block sizes)
    grid_0, grid_1, grid_2 = (*grid, 1, 1)[:3]
    device = driver.active.get_current_device()
    stream = driver.active.get_current_stream(device)
    keywords = plan.keyword_values(kwargs) if plan.keyword_values is not None else ()
    if len(plan.param_keywords) == 1:
        keywords = (keywords,)
    compiled.run(grid_0, grid_1, grid_2, stream, compiled.function, compiled.packed_metadata, None, None, None,
                 *args, *keywords)


def picks_of(kernel) -> dict:
    """{tuning key: picked config kwargs} the plans of an Autotuner keep (tests and benchmarks)."""
    picks = {}
    for shape, plan in _plans.items():
        if shape[0] == id(kernel) and plan.usable:
            picks.update(plan.picks)
    return picks
