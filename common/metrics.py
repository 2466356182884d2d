"""Training metrics between two log lines: sums stay on the device, one all-reduce per line.

    window = MetricsWindow(unit="tokens")
    ...
    result = step.finish()
    window.add_step(result, items=batch_tokens)           # no host sync
    window.add("nll", nll_sum, weight=target_tokens)       # recipe-specific averages
    if step % log_interval == 0:
        logger.log(step, window.line(prec))                # one all-reduce, one host read

The names every recipe logs (docs/TOOLKIT.md):

    loss           mean over the window's steps and all ranks of the loss each step
                   optimised (what backward() saw, summed over micro-batches)
    lr             the learning rate of the window's last step
    grad_norm      mean L2 norm of all gradients before clipping, at true scale
    loss_scale     fp16 loss scale after the last step (fp16 only)
    skipped_steps  steps skipped by fp16 loss scaling since the run began (fp16 only)
    <unit>/s       items (tokens or sequences) per second over all ranks
    step_ms        wall-clock milliseconds per step
    peak_mem_gib   this rank's peak GPU memory since the last line (GPU only)

plus each `add`-ed name as sum(value) / sum(weight) over the window and all ranks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from common import distributed
from common.precision import Precision
from common.step import StepResult


class MetricsWindow:
    def __init__(self, unit: str = "tokens", device: torch.device | str | None = None) -> None:
        self.unit = unit
        self.device = torch.device(device) if device is not None else None
        self._lines = 0
        self._first = (0.0, 0.0)  # (items, seconds) of the first window: warm-up
        self._timed = (0.0, 0.0)  # of every later window
        self._reset()

    @property
    def throughput(self) -> float:
        """Items per second over all ranks for the run so far, the first window (compile,
        allocator and data warm-up) left out unless it is the only one."""
        items, seconds = self._timed if self._timed[1] > 0 else self._first
        return items / seconds if seconds > 0 else 0.0

    def _reset(self) -> None:
        self.steps = 0
        self.items = 0.0
        self.lr = 0.0
        self._sums: dict[str, list[Any]] = {}  # name -> [value sum, weight sum]
        self._start = time.perf_counter()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def add(
        self, name: str, value: torch.Tensor | float, weight: torch.Tensor | float = 1.0
    ) -> None:
        """Accumulate `value` and `weight` for `name` (tensors stay on their device)."""
        if isinstance(value, torch.Tensor):
            value = value.detach().double()
        if isinstance(weight, torch.Tensor):
            weight = weight.detach().double()
        entry = self._sums.get(name)
        if entry is None:
            self._sums[name] = [value, weight]
        else:
            entry[0] = entry[0] + value
            entry[1] = entry[1] + weight

    def add_step(self, result: StepResult, items: float | int) -> None:
        """One optimizer step of this rank: its loss, gradient norm, learning rate and
        the items (tokens or sequences) it processed. A step that fp16 loss scaling
        skipped (its norm is inf or nan) is left out of the mean gradient norm."""
        self.steps += 1
        self.items += float(items)
        self.lr = result.lr
        self.add("loss", result.loss)
        kept = 1.0 - result.skipped
        self.add("grad_norm", torch.where(kept > 0, result.grad_norm, 0.0), weight=kept)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the block's wall time out of the window (evaluation, checkpoints)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._start += time.perf_counter() - start

    def line(self, precision: Precision | None = None) -> dict[str, float]:
        """The window's values, agreed over all ranks (a collective: every rank calls it),
        then a fresh window."""
        if self.steps == 0:
            raise RuntimeError("MetricsWindow.line() with no step in the window")
        names = list(self._sums)
        entries = [x for name in names for x in self._sums[name]] + [self.items]
        device = next((e.device for e in entries if isinstance(e, torch.Tensor)), None)
        vector = torch.stack(
            [torch.as_tensor(e, dtype=torch.float64, device=device).reshape(()) for e in entries]
        )
        totals = distributed.all_reduce_sum(vector).tolist()  # the one host read
        # The window ends when every rank's work is done: time it after the reduction.
        seconds = time.perf_counter() - self._start
        values: dict[str, float] = {}
        for i, name in enumerate(names):
            value, weight = totals[2 * i], totals[2 * i + 1]
            values[name] = value / weight if weight else float("nan")
        self._lines += 1
        if self._lines == 1:
            self._first = (totals[-1], seconds)
        else:
            self._timed = (self._timed[0] + totals[-1], self._timed[1] + seconds)
        values["lr"] = self.lr
        values[f"{self.unit}/s"] = totals[-1] / seconds
        values["step_ms"] = 1000.0 * seconds / self.steps
        if getattr(precision, "scaler", None) is not None:  # fp16's fields, in fp16 only
            values["loss_scale"] = precision.loss_scale
            values["skipped_steps"] = precision.skipped_steps
        if self.device is not None and self.device.type == "cuda":
            values["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._reset()
        return values
