"""Stop cleanly on SIGTERM (SLURM pre-emption, time limit, `scancel`, Kubernetes).

    guard = PreemptionGuard()
    ...
    if guard.requested:              # this process got SIGTERM, SIGUSR1 (or Ctrl-C)
        save checkpoint; stop

The handler only sets a flag: the training loop decides when it is safe to save. Loops
use it through common.run_control.RunControl, which also agrees on it across ranks.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionGuard:
    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> None:
        self.received: int | None = None
        self._first_at = 0.0
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # A second Ctrl-C stops at once. Under torchrun one Ctrl-C reaches a worker twice
        # (from the terminal and forwarded by the agent) within a moment: that is one.
        again = time.monotonic() - self._first_at > 1.0 if self.received is not None else False
        if signum == signal.SIGINT and again:
            raise KeyboardInterrupt
        if self.received is None:
            self._first_at = time.monotonic()
            again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
            print(
                f"received {signal.Signals(signum).name}: saving a checkpoint at the end of "
                f"this step, then exiting{again}",
                file=sys.stderr,
                flush=True,
            )
        self.received = signum

    @property
    def requested(self) -> bool:
        """True once this process got a stop signal."""
        return self.received is not None

    def close(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
