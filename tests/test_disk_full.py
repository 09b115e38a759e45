"""A full disk while saving a checkpoint (issue 15): one `error:` line naming the folder and the bytes needed,
no partial temporary file, the previous checkpoint intact, summary.json "failed", error.log not empty."""
from __future__ import annotations

import errno
import functools
import json
from pathlib import Path

import pytest
import torch
from disk_full_at_step import full_disk_save

from sr_lightning.checkpoint import DiskFullError, checkpoint_size
from sr_lightning.checkpoint_io import AtomicCheckpointIO

from helpers import REPO_ROOT, TINY, TINY_NET


def _checkpoint(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((64, 64), float(step))}}


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk quota exceeded")])
def test_a_full_disk_names_the_folder_and_size_and_leaves_no_partial_file(tmp_path, monkeypatch, code, words):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(_checkpoint(1), path)
    monkeypatch.setattr(torch, "save", functools.partial(full_disk_save, error=code))
    with pytest.raises(DiskFullError) as info:
        io.save_checkpoint(_checkpoint(2), path)
    monkeypatch.undo()
    message = info.value.strerror
    needed = checkpoint_size(_checkpoint(2))
    assert info.value.errno == code and words in message
    assert str(path.parent) in message and f"{needed:,} bytes" in message and "are free" in message
    assert "previous last.ckpt is kept" in message and "resume=auto" in message
    assert "\n" not in message
    assert list(path.parent.iterdir()) == [path]  # no .last.ckpt.tmp keeping the disk full
    previous = torch.load(path, weights_only=True)
    assert previous["global_step"] == 1 and torch.equal(previous["state_dict"]["w"], torch.full((64, 64), 1.0))


def test_one_write_beside_the_target(tmp_path, monkeypatch):
    """The checkpoint is serialised once, straight into `.last.ckpt.tmp` next to it (no system temp folder,
    no in-memory copy), then renamed."""
    seen = []
    real = torch.save

    def recording_save(obj, f, *args, **kwargs):
        seen.append(Path(f.name) if hasattr(f, "name") else f)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(3), path)
    assert seen == [tmp_path / ".last.ckpt.tmp"]
    assert torch.load(path, weights_only=True)["global_step"] == 3 and list(tmp_path.iterdir()) == [path]


def test_error_log_is_never_left_empty(tmp_path, monkeypatch):
    """On a full disk opening error.log succeeds (an empty file) and the long traceback does not fit."""
    from sr_lightning.commands.train import _write_small

    real = Path.write_text

    def tight_write(self, text, *args, **kwargs):
        if len(text) > 40:
            real(self, "")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", tight_write)
    _write_small(tmp_path / "error.log", "Traceback ...\n" * 100, fallback="disk full\n")
    assert (tmp_path / "error.log").read_text() == "disk full\n"
    _write_small(tmp_path / "error.log", "Traceback ...\n" * 100, fallback="x" * 100)
    assert not (tmp_path / "error.log").exists()  # nothing fitted: no empty file either


def test_the_checkpoint_message_wins_over_later_disk_errors():
    from sr_lightning.commands.train import _disk_full, _one_line

    ours = DiskFullError(errno.ENOSPC, "disk full while saving last.ckpt in /run/checkpoints: ...")
    try:
        try:
            raise ours
        except DiskFullError:
            raise OSError(errno.ENOSPC, "No space left on device", "/run/metrics.csv")  # noqa: B904 - implicit chain is the point
    except OSError as later:
        assert _disk_full(later) is ours
    assert _one_line(ours).startswith("disk full while saving last.ckpt")
    other = OSError(errno.ENOSPC, "No space left on device", "/run/metrics.csv")
    assert _disk_full(other) is other and "/run/metrics.csv" in _one_line(other)
    assert _disk_full(ValueError("x")) is None


def _train_until_the_disk_is_full(cli, tmp_path, full_at_step: int, *overrides: str) -> str:
    """A 4-step tiny run whose disk fills at `full_at_step` (tests/disk_full_at_step.py); its one `error:` line."""
    args = [*TINY, *TINY_NET, "trainer.max_steps=4", *overrides,
            "+callbacks.disk_full._target_=disk_full_at_step.DiskFullAtStep",
            f"+callbacks.disk_full.step={full_at_step}", f"hydra.run.dir={tmp_path}"]
    result = cli("train", *args, env={"PYTHONPATH": str(REPO_ROOT / "tests")})
    assert result.returncode == 2, result.stderr[-3000:]
    # (stdout may end inside a progress bar line: keep the streams apart)
    errors = [line for line in (result.stdout + "\n" + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.slow
def test_train_on_a_full_disk_through_the_cli(cli, tmp_path):
    error = _train_until_the_disk_is_full(cli, tmp_path, 3, "trainer.val_check_interval=2",
                                          "checkpoint_every_n_steps=2")
    assert f"in {tmp_path / 'checkpoints'}:" in error and " bytes)" in error and "disk full" in error
    checkpoints = tmp_path / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp"))
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2  # the step-2 save
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("disk full while saving last.ckpt")
    assert "DiskFullError" in (tmp_path / "error.log").read_text()


@pytest.mark.slow
def test_a_full_disk_while_saving_the_slim_best_ckpt(cli, tmp_path):
    """best.ckpt is written by its own code path (slim): the same atomic write and the same one-line error."""
    error = _train_until_the_disk_is_full(cli, tmp_path, 2, "trainer.val_check_interval=1",
                                          "checkpoint_every_n_steps=100")
    assert error.startswith(f"error: disk full while saving best.ckpt in {tmp_path / 'checkpoints'}:")
    assert "the previous best.ckpt is kept" in error
    checkpoints = tmp_path / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp"))
    previous = torch.load(checkpoints / "best.ckpt", weights_only=True)  # step 1's, untouched
    assert previous["global_step"] == 1 and previous["sr_lightning_slim"] is True
