"""When a training run stops and saves: pre-emption, --max-steps, save cadence, and an
end that is always resumable, as one context manager.

    with RunControl(save, step, max_steps=args.max_steps, save_every=args.save_freq) as run:
        while ...:
            ...one optimizer step...
            step += 1
            if run.after_step(step):     # saved on cadence; True: stop here
                break
    # leaving the block normally saves, unless this step is saved already

SIGTERM and SIGUSR1 (SLURM pre-emption, `scancel`, time limits) and a first Ctrl-C only
set a flag; a second Ctrl-C interrupts at once. Every step looks at the flag on the
host, which costs nothing; with several processes the ranks agree on it (one small
all-reduce) every `agree_every` steps (at most 10, so that a stop fits the 30 s SLURM
and torchrun give a signalled job), so that a signal that reached one rank stops all of
them at the same step, each with its part of the checkpoint.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import TracebackType
from typing import Any

from common import distributed
from common.preemption import DEFAULT_SIGNALS, PreemptionGuard

MAX_AGREE_EVERY = 10  # steps between two agreements on a stop signal, at most


class RunControl:
    def __init__(
        self,
        save: Callable[..., Any],
        step: int = 0,
        *,
        max_steps: int | None = None,
        save_every: int = 0,
        agree_every: int = MAX_AGREE_EVERY,
        window: Any = None,
        signals: tuple[signal.Signals, ...] = (*DEFAULT_SIGNALS, signal.SIGINT),
    ) -> None:
        """`save(**kwargs)` writes a checkpoint of the current state (a collective with
        several processes); `step` is the step the run starts from; `save_every` <= 0
        saves only at the end; the ranks agree on signals every `agree_every` steps (at
        most MAX_AGREE_EVERY); a metrics `window` is paused while saving."""
        if agree_every < 1:
            raise ValueError("agree_every must be at least 1")
        # SLURM and torchrun kill a signalled job after about 30 s: agree often enough.
        agree_every = min(agree_every, MAX_AGREE_EVERY)
        self._save, self.step, self.last_saved = save, step, step
        self.max_steps, self.save_every, self.agree_every = max_steps, save_every, agree_every
        self.signals, self.window = signals, window
        self.reason: str | None = None  # "max_steps" or "signal" once the run must stop
        self.guard: PreemptionGuard | None = None

    def __enter__(self) -> RunControl:
        self.guard = PreemptionGuard(self.signals)
        if self.max_steps is not None and self.step >= self.max_steps:
            self.reason = "max_steps"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.last_saved != self.step:
                self.save()  # the end of a run is always resumable
        finally:
            if self.guard is not None:
                self.guard.close()

    @property
    def signalled(self) -> bool:
        """True once this process got a stop signal (not yet agreed with the others)."""
        return self.guard is not None and self.guard.requested

    def save(self, step: int | None = None, **kwargs: Any) -> Any:
        """Save now, as of `step` (default: the last step recorded by `after_step`), for
        example after an evaluation or at the end of an epoch (with is_best=...)."""
        if step is not None:
            self.step = step
        if self.window is not None:
            with self.window.paused():  # a save is not training time
                result = self._save(**kwargs)
        else:
            result = self._save(**kwargs)
        self.last_saved = self.step
        return result

    def agreed_signal(self, step: int) -> bool:
        """Whether to stop for a signal at `step`: the host flag alone for one process;
        with several, the ranks' flags combined every `agree_every` steps."""
        if not distributed.is_initialized():
            return self.signalled
        if step % self.agree_every:
            return False
        return bool(distributed.all_reduce_max(1.0 if self.signalled else 0.0).item())

    def after_step(self, step: int) -> bool:
        """Record that `step` finished; save on the cadence or when stopping. Returns True
        when the run must stop now (`reason` says why)."""
        self.step = step
        if self.max_steps is not None and step >= self.max_steps:
            self.reason = "max_steps"
        elif self.agreed_signal(step):
            self.reason = "signal"
        cadence = self.save_every > 0 and step % self.save_every == 0
        due = self.reason == "signal" or cadence
        if due and self.last_saved != step:
            self.save()
        return self.reason is not None


def stopped_line(step: int, resume_flag: str = "--resume") -> str:
    """What every trainer prints when a signal (SIGTERM, SIGUSR1, Ctrl-C) stopped it."""
    return f"stopped at step {step}; continue with {resume_flag}"
