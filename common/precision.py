"""Numeric precision as one switch: fp32, tf32, fp16 or bf16.

`Precision` bundles the autocast context, the loss scaler (fp16 only) and the matmul
settings, so a training loop reads the same whatever the precision:

    prec = Precision.create(args.math, device)
    with prec.autocast():
        loss = model(batch)
    prec.backward(loss)
    prec.unscale_(optimizer)          # before gradient clipping, if any
    stepped = prec.step(optimizer)    # False when fp16 gradients overflowed

Asking for something the device cannot do is a `PrecisionError`, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from common.errors import UserError

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


class PrecisionError(UserError, ValueError):
    """The requested precision is unknown or not supported by the device."""


def check_supported(
    mode: str, device: torch.device, flag: str = "--math", typed: str | None = None
) -> None:
    """Raise `PrecisionError` when `device` cannot train in `mode`.

    The message names the flag the user typed (`typed`, default "FLAG MODE", for
    example "--fp16") and suggests values of `flag`, the entry point's precision flag.
    """
    typed = typed or f"{flag} {mode}"
    if mode not in PRECISIONS:
        raise PrecisionError(f"{typed}: unknown precision; choose {flag} {' / '.join(PRECISIONS)}")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if mode == "tf32" and major < 8:
            raise PrecisionError(
                f"{typed}: TF32 needs an Ampere or newer GPU (compute capability >= 8.0); "
                f"{name} has {major}.{minor}. Use {flag} fp32 or {flag} fp16."
            )
        if mode == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise PrecisionError(
                f"{typed}: {name} has no native bf16. Use {flag} fp16 or {flag} fp32."
            )
    elif device.type == "cpu":
        if mode == "fp16":
            raise PrecisionError(
                f"{typed}: fp16 needs a CUDA GPU (fp16 kernels, loss scaling); "
                f"on the CPU use {flag} bf16 or {flag} fp32."
            )
        if mode == "tf32":
            raise PrecisionError(
                f"{typed}: TF32 is a feature of NVIDIA GPUs; on the CPU use {flag} fp32 or "
                f"{flag} bf16."
            )
    elif mode != "fp32":
        raise PrecisionError(f"{typed}: not supported on device type {device.type!r}")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own units (AVX-512 and newer; it honours
    ONEDNN_MAX_CPU_ISA). Elsewhere bf16 matrix products are emulated, many times
    slower than fp32 (docs/PERFORMANCE.md)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def set_matmul_precision(mode: str, device: torch.device) -> None:
    """fp32 means true fp32 matmuls; tf32 lets cuBLAS/cuDNN use TensorFloat-32."""
    allow_tf32 = mode == "tf32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")


def full_precision_mode(device: torch.device | str) -> str:
    """The recipes' default without mixed precision: TF32 on GPUs that have it (compute
    capability 8.0 and newer), fp32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return "tf32"
    return "fp32"


@dataclass
class LossScaler:
    """Dynamic loss scaling for fp16 with skipped-step accounting.

    Wraps `torch.amp.GradScaler`: the scale is multiplied by `backoff_factor` on a step
    whose gradients hold inf/nan (that step is skipped) and by `growth_factor` after
    `growth_interval` clean steps in a row.
    """

    device_type: str = "cuda"
    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    skipped_before: int = 0  # skipped in earlier runs of a resumed job
    _scaler: torch.amp.GradScaler = field(init=False, repr=False)
    _skipped: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._scaler = torch.amp.GradScaler(
            self.device_type,
            init_scale=self.init_scale,
            growth_factor=self.growth_factor,
            backoff_factor=self.backoff_factor,
            growth_interval=self.growth_interval,
        )

    @property
    def scale(self) -> float:
        return float(self._scaler.get_scale())

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return self._scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self._scaler.unscale_(optimizer)

    def step_skipped(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Step unless gradients overflowed and update the scale, without waiting for the
        device. Returns 1.0 (a device tensor) when the step was skipped, else 0.0."""
        before = self._scaler._scale.clone()
        self._scaler.step(optimizer)
        self._scaler.update()
        # The scaler only ever lowers the scale on an overflow, so a drop means a skip.
        skipped = (self._scaler._scale < before).float().reshape(())
        self._skipped = skipped if self._skipped is None else self._skipped + skipped
        return skipped

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step unless gradients overflowed; update the scale. Returns True if stepped
        (reading the answer waits for the device: loops use `step_skipped`)."""
        return not bool(self.step_skipped(optimizer).item())

    @property
    def skipped_steps(self) -> int:
        """Steps skipped so far (reads the device counter: call at log time)."""
        counted = int(self._skipped.item()) if self._skipped is not None else 0
        return self.skipped_before + counted

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self._scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._scaler.load_state_dict(state["scaler"])
        self.skipped_before, self._skipped = int(state["skipped_steps"]), None


@dataclass
class Precision:
    """Autocast context, optional loss scaler and matmul settings for one mode."""

    mode: str
    device: torch.device
    scaler: LossScaler | None = None

    @classmethod
    def create(
        cls,
        mode: str,
        device: torch.device | str,
        flag: str = "--math",
        typed: str | None = None,
        **scaler_kwargs: Any,
    ) -> Precision:
        """Validate `mode` for `device` (errors name `typed`, see `check_supported`),
        apply matmul settings, build the scaler for fp16."""
        device = torch.device(device)
        check_supported(mode, device, flag, typed)
        if mode == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "bf16 on this CPU (no AVX-512) is emulated: expect it many times slower than "
                "fp32 (docs/PERFORMANCE.md); it is correct, but fp32 is the fast choice here",
                stacklevel=2,
            )
        set_matmul_precision(mode, device)
        scaler = LossScaler(device.type, **scaler_kwargs) if mode == "fp16" else None
        return cls(mode, device, scaler)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.mode)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed-precision region for the forward pass (a no-op for fp32/tf32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale_loss(loss) if self.scaler else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to true scale (call once per step, before clipping)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Optimizer step; with fp16 an overflowing step is skipped and counted."""
        if self.scaler:
            return self.scaler.step(optimizer)
        optimizer.step()
        return True

    def step_skipped(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """`step` without waiting for the device: 1.0 (a tensor) if fp16 skipped it."""
        if self.scaler:
            return self.scaler.step_skipped(optimizer)
        optimizer.step()
        return self._never_skipped

    @functools.cached_property
    def _never_skipped(self) -> torch.Tensor:
        """0.0 on the device, made once (no allocation or copy per step)."""
        return torch.zeros((), device=self.device)

    @property
    def loss_scale(self) -> float:
        return self.scaler.scale if self.scaler else 1.0

    @property
    def skipped_steps(self) -> int:
        return self.scaler.skipped_steps if self.scaler else 0

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
