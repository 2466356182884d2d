"""One optimizer step over micro-batches, the same in every recipe and benchmark.

    step = OptimizerStep(model, optimizer, prec, scheduler, clip_norm=5.0)
    for batch in step.micro_batches(batches):     # DDP syncs gradients on the last only
        with prec.autocast():
            loss = loss_fn(model(batch)) / len(batches)
        step.backward(loss)                        # scaled for fp16; summed for the step
    result = step.finish()                         # unscale, clip, step, schedule, zero
    result.loss, result.grad_norm, result.lr, result.skipped

Nothing here waits for the device: the loss, the gradient norm and the skipped flag stay
device tensors until a metrics window (common.metrics) reads them at a log line. (With
fp16, torch's GradScaler itself reads the overflow flag on the host unless the optimizer
applies the scaling, as fused Adam does.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from common import distributed
from common.precision import Precision

T = TypeVar("T")


@dataclass
class StepResult:
    """What one optimizer step did; tensors live on the device (no host sync)."""

    loss: torch.Tensor  # sum of the losses given to backward() in this step
    grad_norm: torch.Tensor  # L2 norm of all gradients before clipping (true scale)
    lr: float  # the learning rate this step used (the scheduler moves on after it)
    skipped: torch.Tensor  # 1.0 when fp16 loss scaling skipped the update, else 0.0


class OptimizerStep:
    """Accumulation, loss scaling, clipping, optimizer and scheduler: one step's parts.

    `clip_norm` > 0 clips the gradients of `clip_params` (default: every parameter of
    the optimizer) to that global norm; 0 leaves clipping to the optimizer (LAMB clips
    inside its step and reports the norm it saw as `optimizer.grad_norm`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        scheduler: Any = None,
        clip_norm: float = 0.0,
        clip_params: Iterable[torch.nn.Parameter] | None = None,
    ) -> None:
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.scheduler, self.clip_norm = scheduler, clip_norm
        params = clip_params if clip_params is not None else self._optimizer_params()
        self.clip_params = list(params)
        self._loss: torch.Tensor | None = None

    def _optimizer_params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def micro_batches(self, batches: Sequence[T]) -> Iterator[T]:
        """Yield `batches`; DDP's gradient all-reduce is held back until the last."""
        last = len(batches) - 1
        for i, batch in enumerate(batches):
            with distributed.no_sync(self.model, enabled=i < last):
                yield batch

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss (already divided by the accumulation)."""
        self.precision.backward(loss)
        detached = loss.detach().float()
        self._loss = detached if self._loss is None else self._loss + detached

    def finish(self) -> StepResult:
        """Unscale, clip, step (skipped on fp16 overflow), schedule, zero the gradients."""
        if self._loss is None:
            raise RuntimeError("OptimizerStep.finish() without a backward() in this step")
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.precision.unscale_(self.optimizer)
        if self.clip_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip_norm)
        else:
            grad_norm = None
        skipped = self.precision.step_skipped(self.optimizer)
        if grad_norm is None:
            grad_norm = getattr(self.optimizer, "grad_norm", None)
        if grad_norm is None:
            grads = [p.grad for p in self.clip_params if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, self._loss = self._loss, None
        return StepResult(loss, grad_norm.detach().float(), lr, skipped)
