"""Training records: metrics as JSON lines (and TensorBoard when installed), and a progress bar.

Each record is one line of metrics.jsonl: {"step": ..., "split": "train"|"eval", ...numbers}. The file is
appended to and flushed per record, so a killed run keeps what it logged, and a resumed run appends after it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

logger = logging.getLogger("bert_fast")


class MetricsLogger:
    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard_dir is not None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(tensorboard_dir))
                except ImportError:  # tensorboard is optional
                    self._tb = None

    def log(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3)}
        for k, v in values.items():
            record[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v is not None:
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run repeats the steps after its checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
    """A tqdm bar (a plain log line every few seconds when tqdm is missing or stderr is not a terminal)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "pretrain"):
        self.enabled = enabled
        self._bar = None
        self._last_print = 0.0
        self.total = total
        self.step = initial
        self.desc = desc
        self._started = False

    def _start(self) -> None:
        """The bar appears with the first update, not when the object is made."""
        self._started = True
        try:
            from tqdm.auto import tqdm

            if sys.stderr.isatty():
                self._bar = tqdm(total=self.total, initial=self.step, desc=self.desc, dynamic_ncols=True,
                                 smoothing=0.1)
        except ImportError:
            pass

    def update(self, step: int, **fields) -> None:
        if not self.enabled:
            return
        if not self._started:
            self._start()
        shown = {k: v for k, v in fields.items() if v is not None}
        if self._bar is not None:
            self._bar.update(step - self.step)
            self._bar.set_postfix(shown, refresh=False)
        elif time.time() - self._last_print > 5 or step == self.total:
            self._last_print = time.time()
            parts = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"step {step}/{self.total} {parts}", file=sys.stderr, flush=True)
        self.step = step

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
