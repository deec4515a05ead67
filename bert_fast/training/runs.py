"""What pretraining and fine-tuning runs do the same way: the run folder, the micro-batches, resuming.

- A run folder that holds another run's results is never written into silently: a run refuses it unless it
  resumes that run or is told to overwrite it. A run that fails before writing anything leaves no empty folder.
- A step's examples are split into micro-batches: `micro_batch_size` per rank and forward, accumulated.
- Resuming reads the run's own settings. Settings given again must agree with them, except the few that cannot
  change what a step computes (logging, checkpoint cadence) and the total steps (said out loud).
- A checkpoint's `state.pt` holds every rank's random generators; a run on another number of ranks cannot
  restore them and says what that costs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import ResumeError, RunFolderError, SettingError
from . import distributed as D
from .rng import set_rng_state

logger = logging.getLogger("bert_fast")

# The resume state inside a checkpoint folder (beside model/). Pretraining checkpoints written before the name
# was shared used the second.
STATE_FILE = "state.pt"
_OLDER_STATE_FILES = ("trainer_state.pt",)


def state_file(checkpoint: Path) -> Path:
    """The resume state of a checkpoint folder, under its current or its older name."""
    for name in (STATE_FILE, *_OLDER_STATE_FILES):
        if (checkpoint / name).is_file():
            return checkpoint / name
    raise ResumeError(f"{checkpoint} holds no {STATE_FILE}: it is not a checkpoint this library wrote")


# --- the run folder --------------------------------------------------------------------------------------


def _outputs_present(folder: Path, outputs: Sequence[str]) -> list[Path]:
    return sorted({path for pattern in outputs for path in folder.glob(pattern)})


@contextlib.contextmanager
def run_folder(folder: Path, outputs: Sequence[str], resume: bool, overwrite: bool,
               is_main: bool = True) -> Iterator[Path]:
    """Claim `folder` for a run whose results match the glob patterns `outputs`.

    A folder holding results of another run is refused, unless `resume` (continue it) or `overwrite` (its
    results are removed first). If the body fails and the folder was created here and holds no file, it is
    removed: a failed run leaves no empty folder behind. Only the main rank touches the file system.
    """
    folder = Path(folder)
    present = _outputs_present(folder, outputs) if folder.is_dir() else []
    if present and not resume and not overwrite:
        shown = ", ".join(p.name for p in present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise RunFolderError(f"{folder} already holds a run ({shown}): pass --resume to continue it, --overwrite to "
                             "replace it, or choose another --out (nothing was overwritten)")
    created = not folder.exists()
    if is_main:
        if present and overwrite and not resume:
            logger.warning("bert_fast: --overwrite: removing the earlier run's %s from %s",
                           ", ".join(p.name for p in present), folder)
            for path in present:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if is_main and created and folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
        raise


# --- micro-batches ---------------------------------------------------------------------------------------


def accumulation_steps(batch_size: int, micro_batch_size: int | None, world_size: int) -> int:
    """Forwards per rank and optimizer step, for `batch_size` examples a step over all ranks."""
    micro = micro_batch_size or batch_size // world_size
    if micro < 1 or batch_size % (micro * world_size):
        raise SettingError(f"batch_size={batch_size} is not a multiple of micro_batch_size={micro} x {world_size} "
                           "rank(s)")
    return batch_size // (micro * world_size)


# --- resuming --------------------------------------------------------------------------------------------


def settings_for_resume(saved: Mapping[str, object], given: Mapping[str, object], quiet: Sequence[str],
                        loud: Mapping[str, str]) -> list[str]:
    """Check the settings given again on resume (`given`, flat names) against the run's own (`saved`).

    Equal values are fine. A `quiet` setting may change (it does not change what a step computes); a `loud` one
    may too, and the returned notes say what the change means. Any other change is a ResumeError naming each.
    """
    notes, refused = [], []
    for name, value in given.items():
        old = saved.get(name)
        if value == old:
            continue
        if name in loud:
            notes.append(f"{name}: {old!r} -> {value!r} ({loud[name]})")
        elif name not in quiet:
            refused.append(f"{name} (the run has {old!r}, this command gives {value!r})")
    if refused:
        raise ResumeError("cannot resume with other settings: " + "; ".join(refused) + ". Resuming reads the "
                          "run's own settings: leave these out, or start a new run with another --out")
    return notes


def restore_rng(states: list[dict], env: D.DistEnv) -> None:
    """Every rank's random generators as the checkpoint saved them (dropout masks continue exactly)."""
    if len(states) == env.world_size:
        set_rng_state(states[env.rank])
        return
    logger.warning("bert_fast: the checkpoint was written by %d process(es), this run has %d: the random generators "
                   "(dropout) are not restored, so losses will differ slightly from an uninterrupted run",
                   len(states), env.world_size)
