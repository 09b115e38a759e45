"""Stopping a training run on Ctrl-C or SIGTERM without losing the steps since the last checkpoint.

A notebook's "interrupt", Ctrl-C in a terminal, `timeout`, `kill`, a scheduler's preemption notice (SLURM
`--signal=TERM@...`) all end in SIGINT or SIGTERM. Stopping at the signal itself could leave G updated and D
not, or Adam half-stepped, so a checkpoint written then would not resume to the same weights. Instead:

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

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number


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
        return EXIT_CODES.get(self.signal_name, 130)


class StopRequests:
    """SIGINT/SIGTERM handlers for the duration of a training run (a context manager).

    Until `defer()` a signal raises `TrainingInterrupted` where the program is; afterwards the first one is
    only recorded in `requested` (for `callbacks.GracefulStop` to act on after the step) and a second SIGINT raises.
    Handlers can only be set from the main thread; elsewhere this does nothing and Python's defaults apply.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

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
        if not self._deferring or (self.requested and name == "SIGINT"):
            raise TrainingInterrupted(name)
        if not self.requested:
            self.requested = name
            again = "; Ctrl-C again to stop at once" if name == "SIGINT" else ""
            print(f"\n{name}: stopping after this step and saving last.ckpt{again}", file=sys.stderr, flush=True)
