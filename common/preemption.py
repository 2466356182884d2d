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
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionGuard:
    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> None:
        self.received: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        if self.received is None:
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
