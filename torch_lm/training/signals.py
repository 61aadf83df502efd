"""How a training run stops early: SIGINT/SIGTERM (``stop_on_signals``, ``TrainingInterrupted``)
and a non-finite loss (``NonFiniteLossError``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class NonFiniteLossError(RuntimeError):
    """The training or held-out loss (or the weights) became NaN or infinite; training stopped."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM: ``last.pt`` was saved at ``step``; ``--resume`` continues from there.

    ``signum`` is the signal that stopped this process (SIGINT when another rank's vote did).
    """

    def __init__(self, step: int, checkpoint: Path, signum: int = signal.SIGINT):
        how = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        super().__init__(f"interrupted{how} at step {step}; saved {checkpoint} (continue with --resume)")
        self.step = step
        self.checkpoint = checkpoint
        self.signum = int(signum)


# Ctrl-C, and the polite stop of ``kill``, batch schedulers, ``docker stop`` and torchrun's agent.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, Any]]:
    """Within the block, SIGINT or SIGTERM sets ``flag["stop"]`` (and ``flag["signal"]``) instead
    of ending the process, so the loop can finish its step and save ``last.pt``; a second one
    raises KeyboardInterrupt at once. The previous handlers are restored on exit.

    Signal handlers can only be installed from the main thread; elsewhere the flag never flips.
    """
    flag: dict[str, Any] = {"stop": False, "signal": signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"], flag["signal"] = True, signum

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
