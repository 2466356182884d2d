"""Learning-rate schedules: warm-up then decay, and GNMT's step decay.

Each schedule is a pure function of the step (easy to test and to plot) wrapped in
`ScheduledLR`, a `torch.optim.lr_scheduler.LRScheduler` whose state is plain data
(so checkpoints load with `torch.load(weights_only=True)`).

Warm-up/decay family (`warmup_decay_lr`), with `t = step + 1` the 1-based index of
the optimizer update about to be made, `W` warm-up steps and `T` total steps:

    t <= W:   lr = base * t / W                               (linear warm-up)
    t >  W:   p = clamp((t - W) / (T - W), 0, 1)
        constant      base
        linear        eta_min + (base - eta_min) * (1 - p)
        polynomial    eta_min + (base - eta_min) * (1 - p) ** power
        cosine        eta_min + (base - eta_min) * (1 + cos(pi * p)) / 2
        inverse_sqrt  base * sqrt(W / t)      (base / sqrt(t) when W = 0; needs no T)

GNMT (`gnmt_lr`, as NVIDIA's PyTorch GNMT): exponential warm-up from base/100 over
`warmup_steps`, constant until `remain_steps`, then the rate is multiplied by
`decay_factor` every `decay_interval` steps, at most `decay_steps` times. Its `step` is
NVIDIA's scheduler count, which is stepped before each update: the optimizer update with
1-based index t runs at `gnmt_lr(t)`, so the first at base/100 ** ((W - 1) / W), the W-th
at base (`build_gnmt_scheduler` wires it so).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

DECAYS = ("constant", "linear", "polynomial", "cosine", "inverse_sqrt")


def warmup_decay_lr(
    step: int,
    base_lr: float,
    *,
    decay: str,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    power: float = 1.0,
    eta_min: float = 0.0,
) -> float:
    """Learning rate for the update that follows `step` updates (formulas above)."""
    t = step + 1
    if t <= warmup_steps:
        return base_lr * t / warmup_steps
    if decay == "constant":
        return base_lr
    if decay == "inverse_sqrt":
        return base_lr * math.sqrt(max(warmup_steps, 1) / t)
    if total_steps is None or total_steps <= warmup_steps:
        raise ValueError(f"{decay} decay needs total_steps > warmup_steps ({warmup_steps})")
    p = min(max((t - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    if decay == "linear":
        shape = 1.0 - p
    elif decay == "polynomial":
        shape = (1.0 - p) ** power
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        raise ValueError(f"unknown decay {decay!r}; choose one of {', '.join(DECAYS)}")
    return eta_min + (base_lr - eta_min) * shape


def _as_steps(value: float | int, total_steps: int) -> int:
    """GNMT's convention: a float is a fraction of the total steps, an int a step count."""
    return int(value * total_steps) if isinstance(value, float) else int(value)


def gnmt_lr(
    step: int,
    base_lr: float,
    *,
    total_steps: int,
    warmup_steps: float | int = 200,
    remain_steps: float | int = 0.666,
    decay_interval: float | int | None = None,
    decay_steps: int = 4,
    decay_factor: float = 0.5,
) -> float:
    """GNMT's warm-up / remain / step-decay learning rate at scheduler count `step`
    (the optimizer update with 1-based index `step` runs at it)."""
    warmup = _as_steps(warmup_steps, total_steps)
    remain = _as_steps(remain_steps, total_steps)
    warmup = min(warmup, remain)  # warm-up cannot outlast the constant phase
    if decay_interval is None:
        interval = max((total_steps - remain) // decay_steps, 1)
    else:
        interval = max(_as_steps(decay_interval, total_steps), 1)

    if step <= warmup:
        if warmup == 0:
            return base_lr
        # Rises geometrically from base/100 at step 0 to base at step `warmup`.
        return base_lr * 0.01 ** ((warmup - step) / warmup)
    if step >= remain:
        decays = min((step - remain) // interval + 1, decay_steps)
        return base_lr * decay_factor**decays
    return base_lr


class ScheduledLR(torch.optim.lr_scheduler.LRScheduler):
    """Sets each group's lr to `lr_fn(step, base_lr)`; call `.step()` after each update."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_fn: Callable[[int, float], float],
        last_epoch: int = -1,
    ) -> None:
        self.lr_fn = lr_fn
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.lr_fn(self.last_epoch, base) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "_step_count": self._step_count,
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._step_count = int(state_dict["_step_count"])
        self._last_lr = list(state_dict["_last_lr"])
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    decay: str,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    power: float = 1.0,
    eta_min: float = 0.0,
) -> ScheduledLR:
    """Linear warm-up followed by `decay` (one of DECAYS)."""
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; choose one of {', '.join(DECAYS)}")
    if decay not in ("constant", "inverse_sqrt") and (
        total_steps is None or total_steps <= warmup_steps
    ):
        raise ValueError(f"{decay} decay needs total_steps > warmup_steps ({warmup_steps})")
    fn = functools.partial(
        warmup_decay_lr,
        decay=decay,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        power=power,
        eta_min=eta_min,
    )
    return ScheduledLR(optimizer, fn)


def build_gnmt_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    *,
    warmup_steps: float | int = 200,
    remain_steps: float | int = 0.666,
    decay_interval: float | int | None = None,
    decay_steps: int = 4,
    decay_factor: float = 0.5,
) -> ScheduledLR:
    """GNMT's schedule; float arguments are fractions of `total_steps`. As ScheduledLR,
    stepped after each update; the update with 1-based index t runs at `gnmt_lr(t)`, as in
    NVIDIA's recipe, which steps its scheduler before the update."""
    fn = functools.partial(
        gnmt_lr,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        remain_steps=remain_steps,
        decay_interval=decay_interval,
        decay_steps=decay_steps,
        decay_factor=decay_factor,
    )
    return ScheduledLR(optimizer, lambda updates_done, base: fn(updates_done + 1, base))
