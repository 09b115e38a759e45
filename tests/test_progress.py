"""The training progress bar counts toward whatever stops the run: max_steps, or the max_time budget (issue 14)."""
from __future__ import annotations

import re

import pytest

from sr_lightning.progress import format_duration, progress_view

from helpers import TINY


def test_time_budget_that_runs_out_first_drives_the_bar():
    """The quickstart's case: 4 min 15 s and max_steps=100000; not `1% 750/100000 <9:21:28`."""
    view = progress_view(step=750, max_steps=100_000, elapsed=187.0, max_time=255.0)
    assert view.limit == "time"
    assert (view.n, view.total) == (187.0, 255.0)
    assert view.text == "time 3:07/4:15 (1:08 left), step 750 (max 100000)"


def test_only_max_time_counts_time():
    view = progress_view(step=10, max_steps=-1, elapsed=30.0, max_time=120.0)
    assert view.limit == "time" and view.total == 120.0
    assert view.text == "time 0:30/2:00 (1:30 left), step 10"


def test_steps_that_run_out_first_drive_the_bar_and_the_budget_is_still_shown():
    # 50% of the steps but 49% of the budget: the steps stop the run; ETA at this session's 4 steps/s.
    view = progress_view(step=500, max_steps=1000, elapsed=125.0, max_time=255.0)
    assert view.limit == "steps"
    assert (view.n, view.total) == (500, 1000)
    assert view.text == "step 500/1000 (2:05 left), time budget 2:05/4:15"


def test_only_max_steps_counts_steps_as_before():
    view = progress_view(step=500, max_steps=1000, elapsed=100.0, max_time=None)
    assert (view.limit, view.n, view.total) == ("steps", 500, 1000)
    assert view.text == "step 500/1000 (1:40 left)"


def test_resumed_run_estimates_from_this_sessions_speed():
    # Resumed at step 800 after 400 s (slow machine); now 10 steps/s: 100 steps left take 10 s, not 50 s.
    view = progress_view(step=900, max_steps=1000, elapsed=410.0, max_time=None, start_step=800, start_elapsed=400.0)
    assert view.text == "step 900/1000 (0:10 left)"


def test_eta_unknown_before_the_first_step_and_no_limit_at_all():
    assert progress_view(step=0, max_steps=1000, elapsed=0.0, max_time=None).text == "step 0/1000 (? left)"
    view = progress_view(step=7, max_steps=None, elapsed=65.0, max_time=None)
    assert (view.limit, view.total) == (None, None)
    assert view.text == "step 7, 1:05"


def test_time_past_the_budget_is_clamped():
    view = progress_view(step=1000, max_steps=100_000, elapsed=256.4, max_time=255.0)
    assert view.n == view.total == 255.0
    assert "(0:00 left)" in view.text


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (59.6, "1:00"), (255, "4:15"), (3600, "1:00:00"),
                                           (33_688, "9:21:28"), (None, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_cli_bar_shows_the_time_budget(cli, tmp_path):
    """Through the real CLI with the default callbacks: max_time set, so the bar shows elapsed / budget."""
    overrides = [o for o in TINY if not o.startswith(("callbacks=", "trainer.max_steps"))]
    result = cli("train", *overrides, "callbacks=default", "callbacks.progress.refresh_rate=1",
                 "trainer.max_steps=3", "trainer.max_time=00:01:00:00", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    # one hour of budget and 3 steps: the steps stop the run, the budget is shown beside them
    assert re.search(r"step 3/3 \(\S+ left\), time budget \d+:\d\d/1:00:00", out), out[-2000:]
    assert "/100000" not in out


def test_step_text_keeps_the_count_that_scripts_look_for():
    """tests/test_interrupt.py waits for ` N/100000 ` on the terminal: the step count stays space-delimited."""
    assert " 10/100000 " in progress_view(step=10, max_steps=100_000, elapsed=5.0, max_time=None).text
