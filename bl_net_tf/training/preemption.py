"""Stopping on SIGTERM or SIGINT with a checkpoint, so that the same command resumes.

Clusters preempt with SIGTERM and kill a few seconds later (Kubernetes' grace period is 30 s by
default; Slurm's ``--signal``, spot VMs). Once a process has run its first training step, the
first SIGTERM or SIGINT only records a request: the loop votes to stop with the next step's
all-reduce (or the next evaluation batch's), so every worker of a multi-worker run stops after the
same step, saves it and raises :class:`Stopped`. A second SIGTERM is ignored (the save in progress
finishes); a second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once: the checkpoint being
written is then left incomplete and the ``checkpoint`` state file still names the previous one,
which a restart restores.

Before the first step has finished (TensorFlow tracing and compiling it, which takes minutes with
XLA on a large model and cannot be interrupted from Python) the signals keep their usual effect
and end the process at once: nothing new exists to save.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(RuntimeError):
    """A signal stopped training after a checkpoint; the message says which step was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended (SIGTERM: 143)."""
        return 128 + self.signum


class StopRequest:
    """Turns SIGTERM and SIGINT into a stop request from :meth:`arm` on (in the main thread only:
    Python runs signal handlers there); the previous handlers come back when the ``with`` ends."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def arm(self) -> None:
        """Installs the handlers (once)."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def __enter__(self) -> "StopRequest":
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            logger.warning("%s: stopping after this step with a checkpoint%s", name,
                           " (Ctrl-C again: stop now, without it)" if signum == signal.SIGINT else "")
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            logger.warning("%s again: still saving the checkpoint before stopping", name)
