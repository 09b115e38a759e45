"""Ctrl-C, SIGTERM or a hang-up during training: the step finishes, last.ckpt is written at it, resume continues
exactly; under DDP every process stops after the same step; a sweep stops and resumes with the command it prints."""
from __future__ import annotations

import json
import os
import pickle
import shlex
import signal

import lightning.pytorch as pl
import pytest
import torch
from signal_at_step import SignalAtStep

from sr_lightning.callbacks import GracefulStop
from sr_lightning.interrupt import StopRequests, TrainingInterrupted, detach_from_terminal, terminal_fds
from sr_lightning.run_folder import completed_summary

from helpers import REPO_ROOT, TINY, TINY_NET, TinyData, build


def test_before_training_a_signal_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop, StopRequests():
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler should have raised")  # pragma: no cover
    assert stop.value.signal_name == "SIGTERM" and stop.value.exit_code == 143 and stop.value.step is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_interruption_survives_pickling_between_processes(tmp_path):
    stop = pickle.loads(pickle.dumps(TrainingInterrupted("SIGINT", 7, tmp_path / "last.ckpt", tmp_path)))
    assert (stop.signal_name, stop.step, stop.checkpoint, stop.sweep_dir, stop.exit_code) == (
        "SIGINT", 7, tmp_path / "last.ckpt", tmp_path, 130)
    assert str(stop) == "interrupted by SIGINT after step 7"


def test_a_hang_up_is_a_stop_request_and_output_to_the_lost_terminal_is_discarded():
    import pty

    master, terminal = pty.openpty()
    read_end, pipe = os.pipe()
    try:
        os.set_blocking(master, False)
        assert terminal_fds((terminal, pipe)) == (terminal,)  # a pipe (nohup, `> log`) keeps its output
        detach_from_terminal((terminal,))
        os.write(terminal, b"lost")  # no EIO: it goes to /dev/null now
        with pytest.raises(OSError):  # nothing reached the terminal (empty, or no longer open at all: EIO)
            os.read(master, 16)
    finally:
        for fd in (master, terminal, read_end, pipe):
            os.close(fd)
    assert TrainingInterrupted("SIGHUP").exit_code == 129
    assert signal.SIGHUP in StopRequests.SIGNALS


def test_during_training_the_first_signal_is_recorded_and_a_second_ctrl_c_raises():
    with StopRequests() as requests:
        requests.defer()
        os.kill(os.getpid(), signal.SIGINT)
        assert requests.requested == "SIGINT"  # no exception: the step in progress finishes
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.requested == "SIGINT"  # the first request is the one reported
        with pytest.raises(TrainingInterrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.value.exit_code == 130


def _fit(module, trainer, **kwargs):
    with StopRequests() as requests:
        checkpointer = next(c for c in trainer.callbacks if type(c).__name__ == "SRCheckpoint")
        trainer.callbacks.append(GracefulStop(requests, checkpointer))
        trainer.fit(module, datamodule=TinyData(n=4, batch_size=2), **kwargs)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_interrupt_saves_last_ckpt_at_the_step_and_resume_matches_a_straight_run(tmp_path, signum):
    pl.seed_everything(0)
    straight, trainer = build(tmp_path / "a", max_steps=4)
    trainer.fit(straight, datamodule=TinyData(n=4, batch_size=2))

    pl.seed_everything(0)
    first, trainer = build(tmp_path / "b", max_steps=4, every=1000)  # no periodic last.ckpt before the end
    trainer.callbacks.insert(0, SignalAtStep(2, signum))
    with pytest.raises(TrainingInterrupted) as stop:
        _fit(first, trainer)
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert (stop.value.signal_name, stop.value.step, stop.value.checkpoint) == (signum, 2, last)
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 2 == first.global_step
    for key, value in first.gen.state_dict().items():  # the checkpoint holds the weights after step 2
        assert torch.equal(saved["state_dict"][f"gen.{key}"], value), key

    pl.seed_everything(123)  # the checkpoint restores the RNG states
    resumed, trainer = build(tmp_path / "b", max_steps=4)
    _fit(resumed, trainer, ckpt_path=str(last))
    assert trainer.global_step == 4
    for name in ("gen", "disc", "gen_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"


def test_second_ctrl_c_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path):
    module, trainer = build(tmp_path, max_steps=4, every=1)
    trainer.callbacks.insert(0, SignalAtStep(3, "SIGINT", times=2))  # before the checkpointer sees step 3
    with pytest.raises(TrainingInterrupted) as stop:
        _fit(module, trainer)
    assert stop.value.checkpoint is None
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_resume_auto_skips_a_run_that_already_reached_max_steps(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "global_step": 6}))
    assert completed_summary(tmp_path, max_steps=6).global_step == 6
    assert completed_summary(tmp_path, max_steps=10) is None  # longer: train on
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted", "global_step": 6}))
    assert completed_summary(tmp_path, max_steps=6) is None


def test_sigterm_stops_a_sweep_and_its_resume_command_finishes_it(cli, tmp_path):
    """SIGTERM in job 0 of a 2-job sweep: exit 143, job 0 saved at the step, job 1 never starts. The printed
    command resumes job 0 from that step and then runs job 1."""
    sweep = tmp_path / "sweep"
    env = {"PYTHONPATH": str(REPO_ROOT / "tests")}
    args = ["-m", "gen.blocks=1,2", "gen.channels=8", *[o for o in TINY if not o.startswith("trainer.")],
            "trainer.max_steps=5", "trainer.val_check_interval=5", "checkpoint_every_n_steps=1000",
            f"hydra.sweep.dir={sweep}"]
    signal_at_3 = ["+callbacks.signal._target_=signal_at_step.SignalAtStep", "+callbacks.signal.step=3",
                   "+callbacks.signal.job=0"]
    run = cli(*args, *signal_at_3, env=env)
    assert run.returncode == 143, run.stderr[-3000:]
    job0 = json.loads((sweep / "0" / "summary.json").read_text())
    assert (job0["status"], job0["signal"], job0["global_step"]) == ("interrupted", "SIGTERM", 3)
    assert torch.load(sweep / "0" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert not (sweep / "1").exists()

    resume = run.stderr.split("resume it with: ")[1].splitlines()[0]
    resume_args = shlex.split(resume)[3:]  # after "python -m sr_lightning"
    assert f"hydra.sweep.dir={sweep}" in resume_args and "resume=auto" in resume_args
    again = cli(*resume_args, env=env)  # the signal callback does not fire again: job 0 goes on from step 4
    assert again.returncode == 0, again.stderr[-3000:]
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert (summary["status"], summary["global_step"]) == ("completed", 5), job
    assert "resume=auto: resuming from" in again.stdout

    finished = {job: (sweep / job / "summary.json").read_text() for job in ("0", "1")}
    third = cli(*resume_args, env=env)  # a finished sweep resumed again: nothing is trained or rewritten
    assert third.returncode == 0 and third.stdout.count("already completed 5 steps; nothing to do") == 2
    assert finished == {job: (sweep / job / "summary.json").read_text() for job in ("0", "1")}


def test_ctrl_c_in_one_ddp_process_stops_both_after_the_same_step(cli, tmp_path):
    """trainer=ddp_cpu (2 gloo processes), SIGINT to rank 0 only: the request is shared, both processes save and
    stop after step 3 instead of rank 1 waiting forever in the next all-reduce. The printed command resumes."""
    run_dir = tmp_path / "run"
    args = [*TINY_NET, *[o for o in TINY if not o.startswith("trainer.")], "trainer=ddp_cpu",
            "trainer.max_steps=5", "trainer.val_check_interval=5", "checkpoint_every_n_steps=1000",
            f"hydra.run.dir={run_dir}"]
    signal_rank0 = ["+callbacks.signal._target_=signal_at_step.SignalAtStep", "+callbacks.signal.step=3",
                    "+callbacks.signal.rank=0", "+callbacks.signal.signum=SIGINT"]
    env = {"PYTHONPATH": str(REPO_ROOT / "tests")}
    run = cli("train", *args, *signal_rank0, env=env, timeout=300)
    assert run.returncode == 130, run.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["signal"], summary["global_step"]) == ("interrupted", "SIGINT", 3)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert run.stderr.count("interrupted by SIGINT after step 3") == 1  # reported once, by the first process

    resume = shlex.split(summary["resume_command"])
    assert resume[:4] == ["python", "-m", "sr_lightning", "train"]  # the run's own overrides, in its folder:
    assert {"trainer=ddp_cpu", "gen.blocks=1", f"hydra.run.dir={run_dir}", "resume=auto"} <= set(resume)
    again = cli(*resume[3:], env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["global_step"]) == ("completed", 5)


def test_second_ctrl_c_in_the_first_ddp_process_stops_the_other_too(cli, tmp_path):
    """Rank 0 stops mid-step without saving; rank 1, which saw no signal, is stopped with it. Left alone it would
    wait in the next collective: with gloo it then crashes with "Connection closed by peer" (checked below), with
    NCCL it can wait until the watchdog timeout."""
    run_dir = tmp_path / "run"
    args = [*TINY_NET, *[o for o in TINY if not o.startswith("trainer.")], "trainer=ddp_cpu",
            "trainer.max_steps=50", "trainer.val_check_interval=50", "checkpoint_every_n_steps=2",
            f"hydra.run.dir={run_dir}", "+callbacks.signal._target_=signal_at_step.SignalAtStep",
            "+callbacks.signal.step=3", "+callbacks.signal.rank=0", "+callbacks.signal.signum=SIGINT",
            "+callbacks.signal.times=2"]
    run = cli("train", *args, env={"PYTHONPATH": str(REPO_ROOT / "tests")}, timeout=200)
    assert run.returncode == 130, run.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["global_step"]) == ("interrupted", None)
    assert "last.ckpt kept from step 2" in run.stderr
    assert "Connection closed by peer" not in run.stderr  # rank 1 was stopped, not left to crash
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_a_dropped_terminal_saves_the_step_and_exits_129(tmp_path):
    """A run whose terminal hangs up (ssh dropped without tmux): SIGHUP, and every later write to the terminal
    would fail with EIO. The run still finishes its step, saves last.ckpt there and records the interruption."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import sys
    import termios
    import time

    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "sr_lightning", "train", "gen.blocks=1", "gen.channels=8",
            *[o for o in TINY if not o.startswith("trainer.")], "callbacks=default", "trainer.max_steps=100000",
            "checkpoint_every_n_steps=100000", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pid, master = pty.fork()
    if pid == 0:  # the child: the CLI on a new terminal (pty.fork makes it the controlling one)
        os.chdir(REPO_ROOT)
        os.execve(sys.executable, args, env)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # else tqdm draws 0 columns
    seen, deadline = b"", time.time() + 240
    training = re.compile(rb" [1-9][0-9]*/100000 ")  # the progress bar past step 0
    while not training.search(seen) and time.time() < deadline:
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    assert training.search(seen), seen.decode(errors="replace")[-2000:]
    os.close(master)  # hang up
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129, seen.decode(errors="replace")[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["signal"]) == ("interrupted", "SIGHUP") and summary["global_step"] >= 1
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == summary["global_step"]
