"""Where a training step's time goes: torch.profiler over a few steps once the run has warmed up.

`train.profile_steps = N` (CLI: `--set train.profile_steps=N`) profiles the N optimizer steps after the first
SKIP + WARMUP of the run (the first ones compile and autotune kernels and fill the allocator's cache; the profiler
discards its own first WARMUP) and writes to RUN_DIR/profile/:
  ops.txt     the operators and kernels, by host time (self CPU) and by device time (self CUDA, on a GPU)
  trace.json  the timeline, for chrome://tracing or Perfetto
Each step is cut into "data", "forward", "backward" and "optimizer" ranges, so the tables and the timeline show
which part of the step a kernel or a gap belongs to.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from ..errors import SettingError

SKIP = 10  # steps before the profile: compilation, autotuning, the allocator's first requests
WARMUP = 2  # steps the profiler runs but discards (its own start-up)
PARTS = ("data", "forward", "backward", "optimizer")


class StepProfiler:
    """Profiles `steps` optimizer steps after SKIP + WARMUP; does nothing when steps is 0. Call step() after each
    optimizer step and close() at the end (a run shorter than the window is profiled as far as it went)."""

    def __init__(self, steps: int, out_dir: Path, device: torch.device, enabled: bool = True):
        if steps < 0:
            raise SettingError(f"train.profile_steps must be 0 (off) or a number of steps, got {steps}")
        self.out_dir = out_dir
        self.cuda = device.type == "cuda"
        self.profiler = None
        self.written = False
        if steps > 0 and enabled:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            self.profiler = profile(activities=activities,
                                    schedule=schedule(wait=SKIP, warmup=WARMUP, active=steps, repeat=1),
                                    on_trace_ready=self._write)

    def start(self) -> None:
        """Begin counting steps (call once, right before the first)."""
        if self.profiler is not None:
            self.profiler.start()

    def range(self, name: str):
        """A named range of the step (recorded only while profiling)."""
        return record_function(name) if self.profiler is not None else contextlib.nullcontext()

    def step(self) -> None:
        if self.profiler is not None:
            self.profiler.step()

    def close(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()  # a window cut short by the end of the run is written here
            self.profiler = None

    def _write(self, prof) -> None:
        if self.written:
            return
        self.written = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        averages = prof.key_averages()
        tables = ["# the step's parts, ms per occurrence: host (CPU total) and device (the kernels they launch)"]
        for event in averages:
            if event.key in PARTS:
                device_ms = event.device_time_total / 1e3 / event.count if self.cuda else 0.0
                tables.append(f"{event.key:10s} host {event.cpu_time_total / 1e3 / event.count:9.3f} ms   "
                              f"device {device_ms:9.3f} ms   ({event.count} times)")
        tables += ["", "# host time (self CPU)", averages.table(sort_by="self_cpu_time_total", row_limit=40)]
        if self.cuda:
            by_device = averages.table(sort_by="self_device_time_total", row_limit=40)
            tables += ["", "# device time (self CUDA: the kernels)", by_device]
        (self.out_dir / "ops.txt").write_text("\n".join(tables) + "\n")
        prof.export_chrome_trace(str(self.out_dir / "trace.json"))
