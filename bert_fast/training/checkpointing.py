"""Training checkpoints: whole folders written atomically, the last K kept, the newest found again on resume.

A checkpoint is a folder `step-00001000/` under the checkpoints folder. It is written as `.tmp-step-00001000-*`,
every file flushed to disk, and renamed into place only when complete: a crash, a kill or a full disk mid-write
leaves at most a temporary folder (removed on the next save), never a half-written checkpoint, and never touches
the checkpoints already there. Older checkpoints are deleted only after the new one is in place.

Used by pretraining and fine-tuning alike: the caller passes a function that fills the folder.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointWriteError

logger = logging.getLogger("bert_fast")

_NAME = re.compile(r"^step-(\d{8,})$")
COMPLETE_MARKER = "COMPLETE"


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    def __init__(self, folder: str | Path, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last = keep_last

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir() and (p / COMPLETE_MARKER).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> tuple[int, Path] | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Fill a temporary folder with `write(folder)`, then rename it to step-N and prune old checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".tmp-step-*"):  # left by a crash of an earlier run
            shutil.rmtree(stale, ignore_errors=True)
        final = self.path(step)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.folder))
        try:
            write(tmp)
            (tmp / COMPLETE_MARKER).write_text(f"{step}\n")
            _fsync_tree(tmp)
            if final.exists():  # the same step saved again (a resumed run): swap, then drop the old copy
                old = final.with_name(f".tmp-old-{final.name}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                latest = self.latest()
                kept = f"the last complete checkpoint, {latest[1]}, is intact" if latest else "no earlier checkpoint"
                reason = "the disk is full" if e.errno == errno.ENOSPC else str(e)
                raise CheckpointWriteError(e.errno, f"could not write checkpoint step {step} to {final}: {reason}; "
                                                    f"{kept}") from e
            raise
        self.prune()
        return final

    def prune(self) -> None:
        for _, path in self.checkpoints()[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
