"""Atomic file writes: readers see the old file or the new one, never half of one, and a failed write leaves
the old file in place (a full disk mid-write costs nothing already saved)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) on a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """A JSON file's value; a file that is not JSON (truncated by a crash, say) raises `error` naming the file and
    where the parse failed, not a bare JSONDecodeError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): the file is damaged "
                    "or truncated") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not a UTF-8 text file") from None
