"""Stopping a training run on Ctrl-C, SIGTERM or a hang-up without losing the steps since the last checkpoint.

A notebook's "interrupt", Ctrl-C in a terminal, `timeout`, `kill`, a scheduler's preemption notice (SLURM
`--signal=TERM@...`) all end in SIGINT or SIGTERM; an ssh session dropped without tmux/nohup in SIGHUP, after
which the terminal is gone (output to it is then discarded instead of failing the run). Stopping at the signal
itself could leave G updated and D not, or Adam half-stepped, so a checkpoint written then would not resume to
the same weights. Instead:

* before the first training step (data caching, model build, sanity validation) a signal stops the run at once:
  there is no progress to keep;
* during training the first signal asks for a stop: the current step finishes, `last.ckpt` is written at that
  step (atomically, like every checkpoint) and the run ends with `TrainingInterrupted`; `resume=auto` then
  continues from exactly there;
* a second Ctrl-C stops at once; the previous `last.ckpt` stays intact.

`callbacks.GracefulStop` does the saving; this module stays free of Lightning so that the CLI can import it
cheaply. Under DDP the request is shared between processes each step, so all of them stop after the same step (a
process that stopped alone would leave the others waiting in the next gradient all-reduce).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class TrainingInterrupted(BaseException):
    """A run stopped by a signal. A BaseException like KeyboardInterrupt: no `except Exception` swallows it,
    and Lightning re-raises it unchanged (a KeyboardInterrupt it would turn into `sys.exit(1)`)."""

    def __init__(self, signal_name: str, step: int | None = None, checkpoint: Path | None = None,
                 sweep_dir: Path | None = None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.sweep_dir = sweep_dir  # set by the train command when the run is one job of a sweep
        at = f" after step {step}" if step is not None else ""
        super().__init__(f"interrupted by {signal_name}{at}")

    def __reduce__(self):  # whole through pickling, as from a joblib-launched sweep job to the main process
        return type(self), (self.signal_name, self.step, self.checkpoint, self.sweep_dir)

    @property
    def exit_code(self) -> int:
        """The shell's 128 + signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + signal.Signals[self.signal_name].value


def terminal_fds(fds: tuple[int, ...] = (1, 2)) -> tuple[int, ...]:
    """Those of `fds` that are a terminal. Asked while the terminal is there: after a hang-up `isatty` fails too."""
    return tuple(fd for fd in fds if os.isatty(fd))


def detach_from_terminal(fds: tuple[int, ...]) -> None:
    """Point `fds` (a lost terminal's) at /dev/null: after a hang-up every write to the terminal fails (EIO)
    and would end the run mid-step. Files and pipes (nohup, `> log`, Hydra's train.log) are not among them."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class StopRequests:
    """SIGINT/SIGTERM/SIGHUP handlers for the duration of a training run (a context manager).

    Until `defer()` a signal raises `TrainingInterrupted` where the program is; afterwards the first one is
    only recorded in `requested` (for `callbacks.GracefulStop` to act on after the step) and a second SIGINT raises.
    Handlers can only be set from the main thread; elsewhere this does nothing and Python's defaults apply.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}
        self._terminal = terminal_fds()

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def defer(self) -> None:
        self._deferring = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if name == "SIGHUP":
            detach_from_terminal(self._terminal)
        if not self._deferring or (self.requested and name == "SIGINT"):
            raise TrainingInterrupted(name)
        if not self.requested:
            self.requested = name
            again = "; Ctrl-C again to stop at once" if name == "SIGINT" else ""
            print(f"\n{name}: stopping after this step and saving last.ckpt{again}", file=sys.stderr, flush=True)
