"""LAMB against a plain per-tensor transcription of its formula (SPEC.md), step by step."""

import io
import math

import pytest
import torch

from common.optim import LAMB
from common.precision import LossScaler, Precision
from common.step import OptimizerStep
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


# fp16 loss scaling: LAMB takes GradScaler's grad_scale/found_inf and skips on the device.


def two_group_lamb(params, **kw):
    tensors = [p.clone().requires_grad_() for p in params]
    groups = [
        {"params": [tensors[0], tensors[2]], "weight_decay": 0.01},
        {"params": [tensors[1], tensors[3]], "weight_decay": 0.0},
    ]
    return tensors, LAMB(groups, **{"lr": 1e-2, **kw})


def moments(opt):
    return [t for s in opt.state.values() for t in (s["exp_avg"], s["exp_avg_sq"])]


def scaled_step(opt, scaler, tensors, grads, *, unscale_first, poison=None):
    """One GradScaler step on `grads` scaled by the loss scale; `poison` puts inf/nan
    into the first gradient."""
    scaler.scale(torch.zeros(()))  # GradScaler makes its scale tensor on a first scale()
    scale = scaler.get_scale()
    for p, g in zip(tensors, grads, strict=True):
        p.grad = g * scale
    if poison is not None:
        tensors[0].grad.view(-1)[3] = poison
    if unscale_first:
        scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()


def bits(tensors):
    """Exact bit patterns (torch.equal counts -0.0 equal to +0.0 and nan unequal)."""
    return [
        t.detach().clone().view(torch.int64 if t.dtype == torch.float64 else torch.int32)
        for t in tensors
    ]


def assert_same_bits(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def plain_run(params, grads, **kw):
    tensors, opt = two_group_lamb(params, **kw)
    norms = []
    for step_grads in grads:
        for p, g in zip(tensors, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        norms.append(opt.grad_norm)
    return tensors, opt, norms


def test_lamb_takes_over_amp_scaling():
    assert LAMB._step_supports_amp_scaling is True


@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaled-grads", "unscaled"])
@pytest.mark.parametrize(
    "config", CONFIGS[:2] + CONFIGS[4:5], ids=["defaults", "no-clip", "nvlamb"]
)
def test_scaled_lamb_steps_equal_unscaled_ones_in_float64(config, unscale_first):
    params, grads = make_problem(torch.float64, seed=11)
    ref_tensors, ref_opt, ref_norms = plain_run(params, grads, **config)
    tensors, opt = two_group_lamb(params, **config)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10**6)
    for i, step_grads in enumerate(grads):
        scaled_step(opt, scaler, tensors, step_grads, unscale_first=unscale_first)
        # grad_norm is the norm of the true gradients, also when step() unscaled them
        torch.testing.assert_close(opt.grad_norm, ref_norms[i], rtol=1e-15, atol=0)
        if not unscale_first:  # the gradients were unscaled on copies
            assert torch.equal(tensors[0].grad, step_grads[0] * 2.0**12)
    # A power-of-two scale is exact, so the numbers agree to the bit.
    assert_same_bits(bits(tensors), bits(ref_tensors))
    assert_same_bits(bits(moments(opt)), bits(moments(ref_opt)))
    assert opt.state_dict()["param_groups"][0]["step"] == len(grads)


def test_a_scale_that_is_no_power_of_two_gives_the_unscaled_step_within_rounding():
    params, grads = make_problem(torch.float64, seed=12)
    ref_tensors, ref_opt, _ = plain_run(params, grads)
    tensors, opt = two_group_lamb(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=1000.0, growth_interval=10**6)
    for step_grads in grads:
        scaled_step(opt, scaler, tensors, step_grads, unscale_first=False)
    for a, b in zip(tensors + moments(opt), ref_tensors + moments(ref_opt), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad_at", [0, 2])
@pytest.mark.parametrize("poison", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaled-grads", "unscaled"])
def test_an_overflowing_step_changes_nothing_and_the_run_goes_on_as_without_it(
    bad_at, poison, unscale_first
):
    params, grads = make_problem(torch.float64, seed=13)
    good = grads[:4]
    ref_tensors, ref_opt, _ = plain_run(params, good)
    tensors, opt = two_group_lamb(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10**6)
    for i, step_grads in enumerate(good):
        if i == bad_at:
            before, moments_before = bits(tensors), bits(moments(opt))
            steps = [int(g["step"]) for g in opt.param_groups]
            scaled_step(opt, scaler, tensors, grads[5], unscale_first=unscale_first, poison=poison)
            assert_same_bits(bits(tensors), before)
            if bad_at == 0:  # the state is made, all zeros (+0.0), as the first step would
                moments_before = [torch.zeros_like(m) for m in bits(moments(opt))]
            assert_same_bits(bits(moments(opt)), moments_before)
            assert [int(g["step"]) for g in opt.param_groups] == steps
            assert [g["step"] for g in opt.state_dict()["param_groups"]] == steps
            assert not torch.isfinite(opt.grad_norm)  # left out of the logged mean
            assert scaler.get_scale() == 2.0**11  # the scaler still backs off
        scaled_step(opt, scaler, tensors, step_grads, unscale_first=unscale_first)
    assert [g["step"] for g in opt.state_dict()["param_groups"]] == [4, 4]
    # scale 2^11 and 2^12 are both exact: the run is the one that never saw the bad step
    assert_same_bits(bits(tensors), bits(ref_tensors))
    assert_same_bits(bits(moments(opt)), bits(moments(ref_opt)))


def forbid_host_reads(monkeypatch):
    """Every Python-level way to bring a tensor's value to the host raises."""

    def host_read(*args, **kwargs):
        raise AssertionError("host read of a tensor value")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)


@pytest.mark.parametrize("poison", [None, float("inf")], ids=["clean", "overflow"])
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaled-grads", "unscaled"])
def test_grad_scaler_step_with_lamb_reads_nothing_on_the_host(poison, unscale_first):
    params, grads = make_problem(torch.float32, seed=14)
    tensors, opt = two_group_lamb(params, use_nvlamb=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    for i, step_grads in enumerate(grads[:3]):
        scaler.scale(torch.zeros(()))
        for p, g in zip(tensors, step_grads, strict=True):
            p.grad = g * 2.0**8
        if i == 1 and poison is not None:
            tensors[0].grad.view(-1)[0] = poison
        if unscale_first:
            scaler.unscale_(opt)
        with pytest.MonkeyPatch.context() as patch:
            forbid_host_reads(patch)
            scaler.step(opt)  # without the interface GradScaler would call found_inf.item()
            scaler.update()
    assert [g["step"] for g in opt.state_dict()["param_groups"]] == [3 - (poison is not None)] * 2


def test_the_host_read_guard_catches_what_grad_scaler_does_without_the_interface():
    class Plain(LAMB):
        _step_supports_amp_scaling = False

    p = torch.nn.Parameter(torch.ones(3))
    opt = Plain([p])
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.zeros(()))
    p.grad = torch.ones(3)
    with pytest.MonkeyPatch.context() as patch:
        forbid_host_reads(patch)
        with pytest.raises(AssertionError, match="host read"):
            scaler.step(opt)


def saved(state_dict):
    """Through a file, as a checkpoint (a state_dict shares the live tensors)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_an_old_checkpoint_with_an_int_step_loads_and_continues_under_loss_scaling():
    params, grads = make_problem(torch.float32, seed=15)

    def scaled_run(opt, tensors, steps, bad=()):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=10**6)
        for i, step_grads in enumerate(steps):
            scaled_step(
                opt,
                scaler,
                tensors,
                step_grads,
                unscale_first=True,
                poison=float("inf") if i in bad else None,
            )

    # An old checkpoint: written before loss-scaled steps existed, `step` a plain int.
    tensors, opt, _ = plain_run(params, grads[:2])
    old = saved(opt.state_dict())
    assert all(type(g["step"]) is int for g in old["param_groups"])
    # Straight on from the live optimizer ...
    scaled_run(opt, tensors, grads[2:], bad={1})
    # ... and from the checkpoint in a fresh one: the same bits.
    start = [t.detach() for t in plain_run(params, grads[:2])[0]]
    resumed, opt2 = two_group_lamb(start)
    opt2.load_state_dict(old)
    scaled_run(opt2, resumed, grads[2:], bad={1})
    assert_same_bits(bits(resumed), bits(tensors))
    assert_same_bits(bits(moments(opt2)), bits(moments(opt)))

    # A checkpoint saved after loss-scaled steps holds an int too (steps taken: 2 + 3).
    state = saved(opt.state_dict())
    assert [g["step"] for g in state["param_groups"]] == [5, 5]
    assert all(type(g["step"]) is int for g in state["param_groups"])
    again, opt3 = two_group_lamb([t.detach() for t in tensors])
    opt3.load_state_dict(state)
    scaled_run(opt3, again, grads[:2])
    scaled_run(opt, tensors, grads[:2])
    assert_same_bits(bits(again), bits(tensors))


def test_plain_steps_after_loss_scaled_ones_keep_the_count():
    params, grads = make_problem(torch.float64, seed=16)
    ref_tensors, ref_opt, _ = plain_run(params, grads[:4])
    tensors, opt = two_group_lamb(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled_step(opt, scaler, tensors, grads[0], unscale_first=False)
    scaled_step(opt, scaler, tensors, grads[5], unscale_first=False, poison=float("nan"))
    scaled_step(opt, scaler, tensors, grads[1], unscale_first=False)
    for step_grads in grads[2:4]:  # no scaler any more: the count goes on from 2
        for p, g in zip(tensors, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    assert [g["step"] for g in opt.state_dict()["param_groups"]] == [4, 4]
    assert_same_bits(bits(tensors), bits(ref_tensors))
    assert_same_bits(bits(moments(opt)), bits(moments(ref_opt)))


def test_optimizer_step_with_fp16_loss_scaling_counts_a_skipped_lamb_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    # fp16 needs a GPU through Precision.create; the scaling logic is the same on the CPU.
    prec = Precision("fp16", torch.device("cpu"), LossScaler("cpu", init_scale=2.0**10))
    opt = LAMB(model.parameters(), lr=0.01)
    step = OptimizerStep(model, opt, prec)  # clip_norm=0: LAMB clips and reports the norm
    twin_opt = LAMB(twin.parameters(), lr=0.01)

    def train(overflow=False):
        loss = torch.nn.functional.mse_loss(model(x), y)
        step.backward(loss * float("inf") if overflow else loss)
        with pytest.MonkeyPatch.context() as patch:
            forbid_host_reads(patch)
            return step.finish()

    def twin_step():
        torch.nn.functional.mse_loss(twin(x), y).backward()
        twin_opt.step()
        twin_opt.zero_grad()
        return twin_opt.grad_norm

    for i in range(4):
        if i == 2:
            before = bits(model.parameters()) + bits(moments(opt))
            result = train(overflow=True)
            assert result.skipped.item() == 1.0
            assert not torch.isfinite(result.grad_norm)
            assert_same_bits(bits(model.parameters()) + bits(moments(opt)), before)
            assert prec.skipped_steps == 1 and prec.loss_scale == 2.0**9
        result = train()
        assert result.skipped.item() == 0.0
        torch.testing.assert_close(result.grad_norm, twin_step(), rtol=0, atol=0)
    assert prec.skipped_steps == 1
    assert opt.state_dict()["param_groups"][0]["step"] == 4
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


@requires_cuda
def test_lamb_under_grad_scaler_on_cuda_never_syncs_and_matches_cpu():
    params, grads = make_problem(torch.float32, seed=17)
    results = []
    for device in ("cpu", "cuda"):
        tensors, opt = two_group_lamb([p.to(device) for p in params])
        opt._apex = None  # the foreach path (apex's kernel reads the flag on the host)
        scaler = torch.amp.GradScaler(device, init_scale=2.0**10)
        for i, step_grads in enumerate(grads):
            scaler.scale(torch.zeros((), device=device))
            for p, g in zip(tensors, step_grads, strict=True):
                p.grad = g.to(device) * 2.0**10
            if i == 2:
                tensors[1].grad[0] = float("inf")
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                scaler.step(opt)
                scaler.update()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert [g["step"] for g in opt.state_dict()["param_groups"]] == [len(grads) - 1] * 2
        results.append([t.detach().cpu() for t in tensors])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


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
