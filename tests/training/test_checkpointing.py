import errno

import pytest

from bert_fast.errors import CheckpointWriteError
from bert_fast.training.checkpointing import CheckpointManager


def _writer(payload: bytes):
    def write(folder):
        (folder / "weights.bin").write_bytes(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "state.txt").write_text("ok")
    return write


def test_keeps_the_last_k(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (10, 20, 30):
        manager.save(step, _writer(bytes([step]) * 100))
    assert [s for s, _ in manager.checkpoints()] == [20, 30]
    step, path = manager.latest()
    assert step == 30 and (path / "weights.bin").read_bytes() == bytes([30]) * 100
    assert (path / "sub" / "state.txt").read_text() == "ok"


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=1)
    manager.save(100, _writer(b"good" * 1000))
    before = {p.name: p.read_bytes() for p in manager.path(100).rglob("*") if p.is_file()}

    def write_then_fill_the_disk(folder):
        (folder / "weights.bin").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="step 200 .*the disk is full.*step-00000100.* is intact") as info:
        manager.save(200, write_then_fill_the_disk)
    assert info.value.errno == errno.ENOSPC
    assert [s for s, _ in manager.checkpoints()] == [100]  # keep_last=1 did not prune the only good one
    after = {p.name: p.read_bytes() for p in manager.path(100).rglob("*") if p.is_file()}
    assert after == before
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))  # the partial folder is gone
    assert not manager.path(200).exists()


def test_incomplete_folders_are_ignored_and_cleaned(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=3)
    manager.save(1, _writer(b"a"))
    (tmp_path / "ckpt" / "step-00000002").mkdir()  # no COMPLETE marker: a copy interrupted by hand, say
    (tmp_path / "ckpt" / ".tmp-step-00000003-x").mkdir()  # a crashed write
    assert manager.latest()[0] == 1
    manager.save(4, _writer(b"b"))
    assert not (tmp_path / "ckpt" / ".tmp-step-00000003-x").exists()
    assert [s for s, _ in manager.checkpoints()] == [1, 4]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(5, _writer(b"old"))
    manager.save(5, _writer(b"new"))
    assert (manager.path(5) / "weights.bin").read_bytes() == b"new"
    assert [s for s, _ in manager.checkpoints()] == [5]
