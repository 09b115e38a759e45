"""RunCSVLogger: a resume continues metrics.csv; a fresh run in a used folder moves the old log aside."""
from __future__ import annotations

import csv

import pytest

from sr_lightning.csv_logger import RunCSVLogger


def _write(path, keys, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _read(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _logger(tmp_path):
    return RunCSVLogger(save_dir=str(tmp_path), name="", version="")


def test_resume_keeps_the_rows_before_the_checkpoint_and_drops_the_rest(tmp_path):
    metrics = tmp_path / "metrics.csv"
    _write(metrics, ["epoch", "step", "train/loss"], [{"epoch": 0, "step": s, "train/loss": 1.0 / (s + 1)}
                                                      for s in range(6)])
    logger = _logger(tmp_path)
    logger.continue_from(tmp_path, 3)  # the checkpoint was written at step 3; steps 3-5 are trained (and logged) again
    logger.log_metrics({"train/loss": 0.25, "val/psnr_y": 30.0}, step=3)  # a key the old header lacks
    logger.save()
    rows = _read(metrics)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[1]["train/loss"]) == pytest.approx(0.5)  # old values untouched
    assert rows[3]["val/psnr_y"] == "30.0" and rows[0]["val/psnr_y"] == ""  # header grew, old rows kept


def test_fresh_run_moves_an_old_log_aside_instead_of_deleting_it(tmp_path):
    metrics = tmp_path / "metrics.csv"
    for n, name in enumerate(["metrics.prev.csv", "metrics.prev-2.csv"]):
        _write(metrics, ["step", "train/loss"], [{"step": 0, "train/loss": n}])
        logger = _logger(tmp_path)
        with pytest.warns(UserWarning, match="moved it to"):
            logger.log_metrics({"train/loss": 9.0}, step=0)
        logger.save()
        assert _read(tmp_path / name) == [{"step": "0", "train/loss": str(n)}]
        assert [r["train/loss"] for r in _read(metrics)] == ["9.0"]


def test_resume_from_another_folder_copies_the_earlier_rows(tmp_path):
    earlier, now = tmp_path / "earlier", tmp_path / "now"
    earlier.mkdir()
    _write(earlier / "metrics.csv", ["step", "train/loss"], [{"step": s, "train/loss": s} for s in range(4)])
    logger = _logger(now)
    logger.continue_from(earlier, 2)
    logger.log_metrics({"train/loss": 20.0}, step=2)
    logger.save()
    assert [(r["step"], r["train/loss"]) for r in _read(now / "metrics.csv")] == [("0", "0"), ("1", "1"),
                                                                                  ("2", "20.0")]
    assert len(_read(earlier / "metrics.csv")) == 4  # the earlier folder is left as it was


def test_continue_from_must_come_before_the_first_write(tmp_path):
    logger = _logger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="before the logger writes"):
        logger.continue_from(tmp_path, 1)


@pytest.mark.slow
def test_validation_after_step_n_is_logged_as_step_n(cli, tmp_path):
    """val/* rows carry the step the validation ran after (2 and 4), as summary.json and the images do."""
    result = cli("train", "gen.blocks=1", "gen.channels=8", "crop=32", "batch_size=2", "trainer.max_steps=4",
                 "trainer.val_check_interval=2", "callbacks=none", "logger=csv", "precision=32-true",
                 f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _read(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows if r.get("val/psnr_y")] == [2, 4]
    assert sorted({p.name[:11] for p in (tmp_path / "images").glob("*.png")}) == ["step0000002", "step0000004"]
