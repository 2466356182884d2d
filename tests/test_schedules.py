"""Learning-rate schedules: values at chosen steps, and the scheduler's state round trip."""

import math

import pytest
import torch

from common.schedules import (
    build_gnmt_scheduler,
    build_scheduler,
    gnmt_lr,
    warmup_decay_lr,
)


def lr(step, decay, **kw):
    return warmup_decay_lr(step, 1.0, decay=decay, **kw)


def test_linear_warmup_reaches_base_at_last_warmup_step():
    assert [lr(s, "constant", warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_decay_values():
    kw = dict(warmup_steps=10, total_steps=110)
    assert lr(9, "linear", **kw) == 1.0  # update 10: end of warm-up
    assert lr(59, "linear", **kw) == pytest.approx(0.5)  # halfway through the decay
    assert lr(109, "linear", **kw) == 0.0
    assert lr(500, "linear", **kw) == 0.0  # stays at the end value


def test_polynomial_decay_values():
    kw = dict(warmup_steps=0, total_steps=100, power=0.5, eta_min=0.1)
    assert lr(74, "polynomial", **kw) == pytest.approx(0.1 + 0.9 * 0.25**0.5)
    assert lr(99, "polynomial", **kw) == pytest.approx(0.1)


def test_cosine_decay_values_with_eta_min():
    kw = dict(warmup_steps=10, total_steps=110, eta_min=0.2)
    assert lr(59, "cosine", **kw) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr(34, "cosine", **kw) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(109, "cosine", **kw) == pytest.approx(0.2)


def test_inverse_sqrt_decay_values():
    assert lr(15, "inverse_sqrt", warmup_steps=4) == pytest.approx(math.sqrt(4 / 16))
    assert lr(99, "inverse_sqrt", warmup_steps=0) == pytest.approx(0.1)


def test_decay_without_total_steps_is_an_error():
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1), "cosine")


def test_gnmt_schedule_values():
    # 1000 steps: warm-up 200 steps, decay from step 666 every (1000-666)//4 = 83 steps.
    kw = dict(
        total_steps=1000, warmup_steps=200, remain_steps=0.666, decay_steps=4, decay_factor=0.5
    )
    assert gnmt_lr(0, 2.0, **kw) == pytest.approx(0.02)  # base/100 at the start
    assert gnmt_lr(100, 2.0, **kw) == pytest.approx(0.2)  # geometric mean halfway
    assert gnmt_lr(200, 2.0, **kw) == pytest.approx(2.0)
    assert gnmt_lr(665, 2.0, **kw) == 2.0
    assert gnmt_lr(666, 2.0, **kw) == 1.0
    assert gnmt_lr(666 + 83, 2.0, **kw) == 0.5
    assert gnmt_lr(999, 2.0, **kw) == 2.0 * 0.5**4  # at most decay_steps decays
    assert gnmt_lr(5000, 2.0, **kw) == 2.0 * 0.5**4


def test_gnmt_explicit_interval_and_warmup_capped_by_remain():
    kw = dict(total_steps=100, warmup_steps=50, remain_steps=20, decay_interval=10)
    assert gnmt_lr(20, 1.0, **kw) == 1.0  # warm-up cut to 20 steps
    assert gnmt_lr(21, 1.0, **kw) == 0.5  # then decay at once
    assert gnmt_lr(10, 1.0, **kw) == pytest.approx(0.1)
    assert gnmt_lr(35, 1.0, **kw) == 0.5**2


def test_scheduler_drives_optimizer_and_resumes_from_plain_state():
    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.5)
        return opt, build_scheduler(opt, "linear", warmup_steps=2, total_steps=10)

    opt, sched = make()
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.25, 0.5, 0.4375, 0.375, 0.3125, 0.25])
    state = sched.state_dict()
    assert set(state) == {"last_epoch", "base_lrs", "_step_count", "_last_lr"}
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.125)


def test_gnmt_scheduler_sets_group_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    sched = build_gnmt_scheduler(opt, total_steps=100, warmup_steps=0, remain_steps=0.5)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.5


def nvidia_gnmt_lr(e, base, total, warmup=200, remain=0.666, decay_steps=4, factor=0.5):
    """NVIDIA's WarmupMultiStepLR at its count `e` (0 when built, stepped before each update)."""
    remain = int(remain * total)
    warmup = min(warmup, remain)
    interval = max((total - remain) // decay_steps, 1)
    if e <= warmup:
        return base * math.exp(math.log(0.01) / warmup) ** (warmup - e)
    if e >= remain:
        return base * factor ** min((e - remain) // interval + 1, decay_steps)
    return base


def test_gnmt_updates_run_at_nvidias_rates():
    """NVIDIA steps its scheduler before each update, so update t (from 1) runs at its
    rate for count t: the first already above base/100, the 200th at base, and decays one
    update earlier than a scheduler stepped after the update would give."""
    total, base = 1824, 2e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=base)
    sched = build_gnmt_scheduler(opt, total_steps=total, warmup_steps=200, remain_steps=0.666)
    used = []
    for _ in range(total):
        used.append(opt.param_groups[0]["lr"])  # the rate this update runs at
        opt.step()
        sched.step()
    want = [nvidia_gnmt_lr(t, base, total) for t in range(1, total + 1)]
    assert used == pytest.approx(want, rel=1e-12)
    assert used[0] == pytest.approx(base * 0.01 ** (199 / 200)) and used[0] > base / 100
    assert used[199] == pytest.approx(base) and used[198] < base
    remain = int(0.666 * total)  # 1214: the update with this index is the first decayed
    assert used[remain - 2] == base and used[remain - 1] == base / 2
