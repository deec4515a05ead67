"""Shared benchmark plumbing: where results go, what each row records, and timing.

Every row carries the GPU, the library versions, the git sha and the date, so committed numbers can be
traced to the run that produced them. Results append to bench/results/<name>.jsonl.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def git_sha() -> str:
    if os.environ.get("BENCH_GIT_SHA"):  # a copy of the tree whose .git is not the one it came from (a GPU host)
        return os.environ["BENCH_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS_DIR.parent, check=True
        )
        dirty = subprocess.run(
            # the code, not the result rows runs are writing (tracked or not), decides whether the tree is "dirty"
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)bench/results"],
            capture_output=True, text=True, cwd=RESULTS_DIR.parent, check=False,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    """What a result row needs to be reproducible: device, versions, commit, date."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "device": gpu,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "cuda": torch.version.cuda,
        "git_sha": git_sha(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def environment_of(git_sha: str, results_dir: Path = RESULTS_DIR) -> dict:
    """The environment recorded by the committed rows of a commit's run (device, versions, date): for rows
    recovered later from that run's log, which must not carry the machine that parses it."""
    for path in sorted(results_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("git_sha") == git_sha:
                return {key: row.get(key) for key in environment()}
    raise ValueError(f"no result rows of commit {git_sha} under {results_dir}")


def save_rows(name: str, rows: list[dict], results_dir: Path = RESULTS_DIR, env: dict | None = None) -> Path:
    """Append rows (each merged with the environment, this machine's unless `env` is given) to
    results_dir/<name>.jsonl."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.jsonl"
    env = environment() if env is None else env
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({**env, **row}) + "\n")
    return path


def cpu_ms(fn, reps: int = 3) -> float:
    """CPU smoke runs only (no GPU): the median wall time of a few calls, in milliseconds. Not a benchmark."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_setting() -> tuple[bool, str, torch.dtype, object]:
    """(cuda, device, dtype, timer) of a benchmark run: bf16 timed with CUDA events on a GPU; without one, a smoke
    run in float32 (Triton's interpreter has no bfloat16) timed by the wall clock."""
    if torch.cuda.is_available():
        return True, "cuda", torch.bfloat16, bench_ms
    return False, "cpu", torch.float32, cpu_ms


def bench_ms(fn, warmup_ms: int = 50, rep_ms: int = 200) -> float:
    """Median milliseconds of fn() on the GPU (CUDA events via triton's do_bench)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def device_ms(fn, calls: int = 10, reps: int = 5) -> float | None:
    """Milliseconds of GPU time per fn() call with the host's launch overhead taken out, or None when fn cannot be
    captured in a CUDA graph (it waits on the host, e.g. a .item()).

    bench_ms times each call from the GPU's side, gaps included: where launching fn's kernels takes the host longer
    than the GPU takes to run them (small shapes, many small launches), it measures the host. Here `calls` calls of
    fn, each behind an L2 flush, are captured in one CUDA graph and replayed (no launches from Python), and a graph
    of the flushes alone is subtracted. Both numbers are worth having: bench_ms is what an eager caller gets,
    device_ms what the kernels cost.
    """
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the capture: compilation, autotuning, the allocator
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    def capture(with_fn: bool) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                flush.zero_()
                if with_fn:
                    fn()
        return graph

    try:
        both, flushes = capture(True), capture(False)
    except RuntimeError as e:  # e.g. "operation not permitted when stream is capturing"
        print(f"device_ms: not capturable ({type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr)
        torch.cuda.synchronize()
        return None

    def replay_ms(graph: torch.cuda.CUDAGraph) -> float:
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    return max(replay_ms(both) - replay_ms(flushes), 0.0) / calls


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain Markdown table of the given columns (floats to 3 significant digits)."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
