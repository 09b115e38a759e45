"""Checkpoint files: atomic writes and clear errors for unusable files."""
from __future__ import annotations

import pytest
import torch

from sr_lightning.checkpoint import CheckpointError, read_checkpoint
from sr_lightning.checkpoint_io import AtomicCheckpointIO
from sr_lightning.loading import load_generator


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # what a kill in the middle of torch.save leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    previous = torch.load(path, weights_only=False)
    assert previous["global_step"] == 1 and torch.equal(previous["w"], torch.ones(3))


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.ckpt"):
        read_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt.*corrupt"):
        read_checkpoint(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not written by `python -m sr_lightning train`"):
        load_generator(foreign)
