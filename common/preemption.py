"""Stop cleanly on SIGTERM (SLURM pre-emption, time limit, `scancel`, Kubernetes).

    guard = PreemptionGuard()
    for step in ...:
        train_step()
        if guard.should_stop():      # agreed by all ranks
            save checkpoint; break

The handler only sets a flag: the training loop decides when it is safe to save.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from common import distributed

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

    def should_stop(self) -> bool:
        """True on every rank once any rank got a stop signal (a collective call)."""
        if not distributed.is_initialized():
            return self.requested
        return bool(distributed.all_reduce_max(1.0 if self.requested else 0.0).item())

    def close(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
