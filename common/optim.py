"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2019).

The semantics are those of apex's FusedLAMB in AdamW mode, per `step()`:

1. `n` = L2 norm of all gradients of all groups together; when `max_grad_norm > 0`
   and `n > max_grad_norm` every gradient is divided by `n / max_grad_norm`.
2. `m = b1*m + (1-b1 if grad_averaging else 1)*g`, `v = b2*v + (1-b2)*g*g`.
3. with bias correction `m_hat = m/(1-b1^t)`, `v_hat = v/(1-b2^t)` (t counts from 1).
4. `u = m_hat/(sqrt(v_hat)+eps) + weight_decay*p`.
5. the trust ratio `r = lr*||p||/||u||` (or `lr` when a norm is zero) applies when
   `use_nvlamb` or the group's weight decay is non-zero; otherwise `r = lr`.
   Then `p = p - r*u`.

The gradients themselves are left untouched (clipping works on copies). The update
runs as multi-tensor `torch._foreach_*` operations per parameter group; on CUDA with
apex installed the same update runs in apex's fused `multi_tensor_lamb` kernel.

fp16 loss scaling: LAMB applies the scaling itself (`_step_supports_amp_scaling`), so
`torch.amp.GradScaler.step` calls `step()` every time instead of reading the overflow
flag on the host. The scaler sets two attributes for the call: `grad_scale` (the scale
of the gradients, None when `unscale_` already divided it out) and `found_inf` (a
device tensor, non-zero when a gradient is inf/nan). The gradients are unscaled on
copies (multiplied by the reciprocal of the scale, as `unscale_` does), and where
`found_inf` is set the update is discarded on the device with `torch.where`: moments,
parameters and the group's step count stay exactly as they were, with no host read
(apex's kernel has no input for the flag: with it, the flag is read on the host).
The step count then lives on the device (a float64 0-dim tensor in the param group,
counting the steps taken) so the bias correction sees only the steps taken;
`state_dict()` writes it as an int, as always.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def _load_apex_lamb() -> tuple[Any, Any] | None:
    try:
        import amp_C  # type: ignore[import-not-found]
        from apex.multi_tensor_apply import multi_tensor_applier  # type: ignore[import-not-found]
    except ImportError:
        return None
    return amp_C.multi_tensor_lamb, multi_tensor_applier


class LAMB(torch.optim.Optimizer):
    # GradScaler.step() hands the scale and the overflow flag to step() (see the module
    # docstring) instead of reading the flag on the host and skipping the call.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        bias_correction: bool = True,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        use_nvlamb: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            grad_averaging=grad_averaging,
            step=0,
        )
        super().__init__(params, defaults)
        # Clipping is global across groups, so these two are optimizer-wide settings.
        self.max_grad_norm = max_grad_norm
        self.use_nvlamb = use_nvlamb
        self._apex = _load_apex_lamb()

    def _state_for(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["exp_avg"], state["exp_avg_sq"]

    def _global_grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        device = grads[0].device
        # At least fp32 (half-precision gradients), float64 when the model is float64.
        dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        norms = [n.to(device=device, dtype=dtype) for n in torch._foreach_norm(grads)]
        return torch.linalg.vector_norm(torch.stack(norms))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Set by torch.amp.GradScaler.step() for this call only (None otherwise).
        grad_scale: torch.Tensor | None = getattr(self, "grad_scale", None)
        found_inf: torch.Tensor | None = getattr(self, "found_inf", None)

        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LAMB does not support sparse gradients")
            groups.append((group, params, [p.grad for p in params]))
        all_grads = [g for _, _, grads in groups for g in grads]
        if not all_grads:
            return loss
        if grad_scale is not None:
            # Unscaled copies, as GradScaler.unscale_ would make them in place.
            inv_scale = grad_scale.double().reciprocal().float().to(all_grads[0].device)
            all_grads = torch._foreach_mul(all_grads, inv_scale)
            unscaled = iter(all_grads)
            groups = [(g, ps, [next(unscaled) for _ in ps]) for g, ps, _ in groups]

        global_norm = self._global_grad_norm(all_grads)
        self.grad_norm = global_norm.detach()  # before clipping, for logging (device tensor)
        use_apex = self._apex is not None and all(g.is_cuda for g in all_grads)
        if use_apex and found_inf is not None and found_inf.item():
            # apex's kernel takes no overflow flag, so this path reads it on the host
            # (apex is optional; the foreach path below never does).
            return loss
        if self.max_grad_norm > 0 and not use_apex:
            # Divide by n/max when n > max, else by 1; kept on the device (no host sync).
            clip = torch.clamp(global_norm / self.max_grad_norm, min=1.0)
        for group, params, grads in groups:
            if not params:
                continue
            states = [self._state_for(p) for p in params]
            exp_avgs = [s[0] for s in states]
            exp_avg_sqs = [s[1] for s in states]
            if use_apex:
                if isinstance(group["step"], torch.Tensor):  # after a foreach fp16 step
                    group["step"] = int(group["step"].item())
                group["step"] += 1
                self._apex_update(group, params, grads, exp_avgs, exp_avg_sqs, global_norm)
                continue
            found = None
            if found_inf is None and not isinstance(group["step"], torch.Tensor):
                group["step"] += 1  # the host count, as ever without loss scaling
            else:
                step = self._device_step(group, params[0].device)
                if found_inf is not None:
                    found = found_inf.to(params[0].device, non_blocking=True) != 0
                step.add_(found.logical_not() if found is not None else 1)
            if self.max_grad_norm > 0:
                if grad_scale is not None:
                    torch._foreach_div_(grads, clip)  # already copies
                else:
                    grads = torch._foreach_div(grads, clip)
            self._foreach_update(group, params, grads, exp_avgs, exp_avg_sqs, found)
        return loss

    @staticmethod
    def _device_step(group: dict[str, Any], device: torch.device) -> torch.Tensor:
        """The group's step count as a float64 0-dim tensor on `device`, made from the
        int kept until the first loss-scaled step (or loaded from a checkpoint)."""
        step = group["step"]
        if not isinstance(step, torch.Tensor):
            # torch.full fills on the device: no host-to-device copy, no sync.
            step = torch.full((), float(step), dtype=torch.float64, device=device)
        elif step.device != device or step.dtype != torch.float64:
            step = step.to(device=device, dtype=torch.float64)
        group["step"] = step
        return step

    def _foreach_update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        found: torch.Tensor | None = None,
    ) -> None:
        """One step of the group; `found` (a 0-dim bool device tensor) discards it.

        The arithmetic is the same with or without `found`, so a step that is kept
        gives the same numbers either way; only the bias correction is a device tensor
        when the step count is one.
        """
        beta1, beta2 = group["betas"]
        step = group["step"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        grad_weight = 1.0 - beta1 if group["grad_averaging"] else 1.0

        if found is None:
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=grad_weight)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        else:
            # New moments out of place, kept only when no gradient overflowed. torch.where
            # selects, so the inf/nan of a bad step never reach the state (inf*0 = nan).
            new = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(new, grads, alpha=grad_weight)
            _keep_where(found, exp_avgs, new)
            new = torch._foreach_mul(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(new, grads, grads, value=1.0 - beta2)
            _keep_where(found, exp_avg_sqs, new)
            del new

        if group["bias_correction"]:
            bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
            if isinstance(step, torch.Tensor):
                # float64 on the device, then the moments' dtype (the fast foreach route
                # wants it; python floats are rounded the same way).
                dtype = torch.float64 if exp_avgs[0].dtype == torch.float64 else torch.float32
                bc1, bc2 = bc1.to(dtype), bc2.to(dtype)
        else:
            bc1 = bc2 = 1.0
        denom = torch._foreach_div(exp_avg_sqs, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(exp_avgs, bc1)
        torch._foreach_div_(update, denom)
        if weight_decay != 0:
            torch._foreach_add_(update, params, alpha=weight_decay)

        if self.use_nvlamb or weight_decay != 0:
            p_norms = torch.stack(torch._foreach_norm(params))
            u_norms = torch.stack(torch._foreach_norm(update))
            trusted = (p_norms > 0) & (u_norms > 0)
            ratios = torch.where(trusted, p_norms / u_norms, torch.ones_like(p_norms)) * lr
            torch._foreach_mul_(update, list(ratios.unbind(0)))
        else:
            torch._foreach_mul_(update, lr)
        if found is not None:
            # A skipped step subtracts +0.0, which leaves every parameter bit as it is.
            for u in update:
                u.masked_fill_(found, 0.0)
        torch._foreach_sub_(params, update)

    def _apex_update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        global_norm: torch.Tensor,
    ) -> None:
        kernel, applier = self._apex
        beta1, beta2 = group["betas"]
        overflow = torch.zeros(1, dtype=torch.int, device=params[0].device)
        # apex's kernel wants one dtype per launch.
        for dtype in sorted({p.dtype for p in params}, key=str):
            idx = [i for i, p in enumerate(params) if p.dtype == dtype]
            applier(
                kernel,
                overflow,
                [
                    [grads[i] for i in idx],
                    [params[i] for i in idx],
                    [exp_avgs[i] for i in idx],
                    [exp_avg_sqs[i] for i in idx],
                ],
                group["lr"],
                beta1,
                beta2,
                group["eps"],
                group["step"],
                int(group["bias_correction"]),
                group["weight_decay"],
                int(group["grad_averaging"]),
                1,  # AdamW-style decoupled weight decay
                global_norm,
                # The kernel clips whenever norm > max_grad_norm; inf turns that off.
                self.max_grad_norm if self.max_grad_norm > 0 else float("inf"),
                self.use_nvlamb,
            )

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for group in state["param_groups"]:  # copies of the live groups
            if isinstance(group["step"], torch.Tensor):
                # Checkpoints keep an int step, as before loss-scaled steps moved the
                # count to the device (one host read per save).
                group["step"] = int(group["step"].item())
        state["max_grad_norm"] = self.max_grad_norm
        state["use_nvlamb"] = self.use_nvlamb
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.max_grad_norm = state_dict.pop("max_grad_norm", self.max_grad_norm)
        self.use_nvlamb = state_dict.pop("use_nvlamb", self.use_nvlamb)
        super().load_state_dict(state_dict)


def _keep_where(found: torch.Tensor, olds: list[torch.Tensor], news: list[torch.Tensor]) -> None:
    """`old = new` unless `found` (0-dim bool), in place and without a host read."""
    for old, new in zip(olds, news, strict=True):
        torch.where(found, old, new, out=old)
