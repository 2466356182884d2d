"""LAMB against a plain per-tensor transcription of its formula (SPEC.md), step by step."""

import math

import pytest
import torch

from common.optim import LAMB
from common.precision import LossScaler
from tests.helpers import requires_cuda


def reference_lamb(
    params,
    grads,
    state,
    *,
    lr,
    betas,
    eps,
    weight_decays,
    bias_correction,
    grad_averaging,
    max_grad_norm,
    use_nvlamb,
):
    """One LAMB step, one tensor at a time, written straight from the formula."""
    b1, b2 = betas
    state["t"] += 1
    t = state["t"]
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    if max_grad_norm > 0 and norm > max_grad_norm:
        grads = [g / (norm / max_grad_norm) for g in grads]
    new = []
    for i, (p, g, wd) in enumerate(zip(params, grads, weight_decays, strict=True)):
        m, v = state["m"][i], state["v"][i]
        m = b1 * m + ((1 - b1) if grad_averaging else 1.0) * g
        v = b2 * v + (1 - b2) * g * g
        state["m"][i], state["v"][i] = m, v
        m_hat = m / (1 - b1**t) if bias_correction else m
        v_hat = v / (1 - b2**t) if bias_correction else v
        u = m_hat / (v_hat.sqrt() + eps) + wd * p
        r = lr
        if use_nvlamb or wd != 0:
            pn, un = p.norm().item(), u.norm().item()
            r = lr * pn / un if pn > 0 and un > 0 else lr
        new.append(p - r * u)
    return new


def make_problem(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (5,), (3, 4, 2), (7,)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    params[3].zero_()  # a zero tensor exercises the ||p|| == 0 branch of the trust ratio
    grads = [[torch.randn(s, generator=g, dtype=dtype) * 3 for s in shapes] for _ in range(6)]
    return params, grads


CONFIGS = [
    dict(),
    dict(max_grad_norm=0.0),
    dict(max_grad_norm=100.0),  # clipping never triggers
    dict(bias_correction=False, grad_averaging=False),
    dict(use_nvlamb=True),
    dict(betas=(0.8, 0.95), eps=1e-4, lr=0.05),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "defaults")
def test_lamb_matches_reference_formula_in_float64(config):
    params, grads = make_problem(torch.float64)
    kw = dict(
        lr=1e-2,
        betas=(0.9, 0.999),
        eps=1e-6,
        bias_correction=True,
        grad_averaging=True,
        max_grad_norm=1.0,
        use_nvlamb=False,
    )
    kw.update(config)
    tensors = [p.clone().requires_grad_() for p in params]
    # Two groups: decayed matrices, undecayed vectors (the usual bias/LayerNorm split).
    opt = LAMB(
        [
            {"params": [tensors[0], tensors[2]], "weight_decay": 0.01},
            {"params": [tensors[1], tensors[3]], "weight_decay": 0.0},
        ],
        **kw,
    )
    ref_params = [p.clone() for p in params]
    ref_state = {
        "t": 0,
        "m": [torch.zeros_like(p) for p in params],
        "v": [torch.zeros_like(p) for p in params],
    }
    for step_grads in grads:
        for p, g in zip(tensors, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        ref_params = reference_lamb(
            ref_params, step_grads, ref_state, weight_decays=[0.01, 0.0, 0.01, 0.0], **kw
        )
        for p, r in zip(tensors, ref_params, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)


def test_lamb_float32_tracks_float64_reference():
    params, grads = make_problem(torch.float32, seed=3)
    tensors = [p.clone().requires_grad_() for p in params]
    opt = LAMB(tensors, lr=1e-2, weight_decay=0.01)
    ref = [p.double() for p in params]
    state = {
        "t": 0,
        "m": [torch.zeros_like(p) for p in ref],
        "v": [torch.zeros_like(p) for p in ref],
    }
    for step_grads in grads:
        for p, g in zip(tensors, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        ref = reference_lamb(
            ref,
            [g.double() for g in step_grads],
            state,
            lr=1e-2,
            betas=(0.9, 0.999),
            eps=1e-6,
            weight_decays=[0.01] * 4,
            bias_correction=True,
            grad_averaging=True,
            max_grad_norm=1.0,
            use_nvlamb=False,
        )
    for p, r in zip(tensors, ref, strict=True):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6)


def test_lamb_leaves_gradients_untouched_when_clipping():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 10.0)
    LAMB([p], max_grad_norm=1.0).step()
    assert torch.equal(p.grad, torch.full((4,), 10.0))


def test_lamb_state_dict_round_trip_continues_identically():
    params, grads = make_problem(torch.float32, seed=5)

    def run(steps, opt_state=None, start=None):
        tensors = [
            (p if start is None else s).clone().requires_grad_()
            for p, s in zip(params, start or params, strict=True)
        ]
        opt = LAMB(tensors, lr=1e-2, max_grad_norm=2.0, use_nvlamb=True)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for step_grads in steps:
            for p, g in zip(tensors, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        return [t.detach() for t in tensors], opt.state_dict()

    straight, _ = run(grads)
    half, state = run(grads[:3])
    assert state["max_grad_norm"] == 2.0 and state["use_nvlamb"] is True
    assert all(g["step"] == 3 for g in state["param_groups"])
    resumed, _ = run(grads[3:], opt_state=state, start=half)
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)


def test_lamb_with_loss_scaler_equals_unscaled_training():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    twin = torch.nn.Linear(6, 3)
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    opt, twin_opt = LAMB(model.parameters(), lr=0.01), LAMB(twin.parameters(), lr=0.01)
    scaler = LossScaler("cpu", init_scale=2.0**10)
    for _ in range(3):
        scaler.scale_loss(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.unscale_(opt)
        assert scaler.step(opt)
        opt.zero_grad()
        torch.nn.functional.mse_loss(twin(x), y).backward()
        twin_opt.step()
        twin_opt.zero_grad()
    # Scaling by a power of two and unscaling is exact, so the weights agree bit for bit.
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lamb_rejects_invalid_hyperparameters():
    p = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError, match="learning rate"):
        LAMB(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        LAMB(p, betas=(1.0, 0.999))


@requires_cuda
def test_lamb_on_cuda_matches_cpu():
    params, grads = make_problem(torch.float32, seed=7)
    results = []
    for device in ("cpu", "cuda"):
        tensors = [p.clone().to(device).requires_grad_() for p in params]
        opt = LAMB(tensors, lr=1e-2, weight_decay=0.01)
        for step_grads in grads:
            for p, g in zip(tensors, step_grads, strict=True):
                p.grad = g.to(device)
            opt.step()
        results.append([t.detach().cpu() for t in tensors])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
