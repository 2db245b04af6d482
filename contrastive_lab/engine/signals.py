"""Stopping on a signal: Ctrl-C, SLURM's time-limit warning or a preemption ends a run cleanly.

SIGINT (Ctrl-C), SIGTERM (what SLURM sends at the time limit and on preemption, and what torchrun
forwards to its workers) and SIGUSR1 (what ``sbatch --signal=USR1@120`` sends ahead of the limit) all
do the same: the current optimizer step finishes, a checkpoint is written, and the run returns with
``stop_reason == "interrupted"``. The CLI then exits with 128 + the signal number (130 for SIGINT,
143 for SIGTERM, 138 for SIGUSR1), the shell convention, so a script or scheduler can tell an
interrupted run from a finished one and resubmit it with ``--resume``. A second Ctrl-C aborts at
once. Under DDP every rank gets the signal (torchrun forwards it); the loop takes the OR over ranks
so they all stop after the same step. Chapter 13 shows the SLURM side.
"""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


class StopSignals:
    """Context manager: while inside, the stop signals set ``requested`` (and ``signum``) instead of
    killing the process; on exit the previous handlers come back."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if sys.platform != "win32" and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, self.signum or signum
        name = signal.Signals(signum).name
        print(f"\n{name}: finishing this step, saving a checkpoint, then stopping.", flush=True)

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop as a signal would (tests, ``--stop-at-step``)."""
        self.requested, self.signum = True, self.signum or signum

    def __exit__(self, *exc) -> bool:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False


def exit_code(signum: int | None) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
    return 128 + int(signum or signal.SIGINT)
