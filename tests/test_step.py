"""common.step, common.metrics and common.run_control: the parts every training loop uses."""

import os
import signal
import time

import pytest
import torch

from common import preemption
from common.metrics import MetricsWindow
from common.precision import Precision
from common.run_control import RunControl
from common.schedules import build_scheduler
from common.step import OptimizerStep


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    return model, x, y


def test_a_step_reports_loss_norm_before_clipping_and_the_lr_it_used():
    model, x, y = model_and_data()
    reference = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = build_scheduler(optimizer, "linear", warmup_steps=0, total_steps=4)
    step = OptimizerStep(model, optimizer, Precision.create("fp32", "cpu"), scheduler, 0.1)
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    for bx, by in step.micro_batches(halves):
        step.backward(torch.nn.functional.mse_loss(model(bx), by) / 2)
    lr = optimizer.param_groups[0]["lr"]
    result = step.finish()

    # by hand: the full-batch loss and gradient, the norm, clipping to 0.1, one SGD step
    ref = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p, r in zip(ref.parameters(), reference, strict=True):
            p.copy_(r)
    loss = torch.nn.functional.mse_loss(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    torch.testing.assert_close(result.loss, loss.detach())
    torch.testing.assert_close(result.grad_norm, norm)
    assert result.lr == lr and optimizer.param_groups[0]["lr"] < lr  # the schedule moved on
    assert result.skipped.item() == 0.0
    scale = min(1.0, 0.1 / (norm.item() + 1e-6))
    for p, r, g in zip(model.parameters(), reference, grads, strict=True):
        torch.testing.assert_close(p.detach(), r - lr * scale * g, rtol=1e-5, atol=1e-6)
        assert p.grad is None  # zeroed for the next step


def test_without_clipping_the_norm_is_the_optimizers_or_computed():
    from common.optim import LAMB

    model, x, y = model_and_data()
    optimizer = LAMB(model.parameters(), lr=1e-2, max_grad_norm=1.0)
    step = OptimizerStep(model, optimizer, Precision.create("fp32", "cpu"))
    step.backward(torch.nn.functional.mse_loss(model(x), y))
    result = step.finish()
    assert result.grad_norm is not None and result.grad_norm.item() > 0
    assert torch.equal(result.grad_norm, optimizer.grad_norm.float())
    with pytest.raises(RuntimeError, match="without a backward"):
        step.finish()


def test_the_window_averages_over_steps_and_counts_items_per_second():
    window = MetricsWindow(unit="tokens")
    losses = [2.0, 4.0]
    for i, loss in enumerate(losses):
        result = type("R", (), {"loss": torch.tensor(loss), "grad_norm": torch.tensor(1.0 + i),
                                "lr": 0.1 * (i + 1), "skipped": torch.tensor(0.0)})()  # fmt: skip
        window.add_step(result, items=100)
        window.add("nll", torch.tensor(30.0 * (i + 1)), weight=torch.tensor(10.0))
    values = window.line(Precision.create("fp32", "cpu"))
    assert values["loss"] == 3.0 and values["grad_norm"] == 1.5 and values["lr"] == 0.2
    assert values["nll"] == pytest.approx(90.0 / 20.0)
    assert values["tokens/s"] == pytest.approx(200 / (values["step_ms"] * 2 / 1000))
    assert "loss_scale" not in values and "skipped_steps" not in values  # fp16's only
    assert window.steps == 0  # a fresh window
    with pytest.raises(RuntimeError, match="no step"):
        window.line()


class Saves:
    def __init__(self):
        self.steps = []
        self.run = None

    def __call__(self, **kwargs):
        self.steps.append((self.run.step, kwargs))


def control(saves, step=0, **kw):
    run = RunControl(saves, step, **kw)
    saves.run = run
    return run


def test_max_steps_and_cadence_and_the_end_is_always_saved():
    saves = Saves()
    with control(saves, 0, max_steps=7, save_every=3) as run:
        step = 0
        while not run.after_step(step := step + 1):
            pass
    assert run.reason == "max_steps" and step == 7
    assert [s for s, _ in saves.steps] == [3, 6, 7]


def test_no_save_at_the_end_when_the_last_step_is_saved_or_on_an_error():
    saves = Saves()
    with control(saves, 0, max_steps=6, save_every=3) as run:
        for step in range(1, 7):
            run.after_step(step)
    assert [s for s, _ in saves.steps] == [3, 6]
    saves = Saves()
    with pytest.raises(ZeroDivisionError), control(saves, 0, max_steps=6) as run:
        run.after_step(1)
        _ = 1 / 0
    assert saves.steps == []


def test_a_signal_stops_after_the_step_with_a_checkpoint_and_handlers_come_back():
    saves = Saves()
    before = signal.getsignal(signal.SIGTERM)
    with control(saves, 10, max_steps=100) as run:
        assert not run.after_step(11)
        os.kill(os.getpid(), signal.SIGTERM)
        assert run.signalled and run.after_step(12)
    assert run.reason == "signal" and [s for s, _ in saves.steps] == [12]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_at_once_but_one_press_seen_twice_does_not(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: clock[0])
    saves = Saves()
    with pytest.raises(KeyboardInterrupt), control(saves, 0, max_steps=100) as run:
        os.kill(os.getpid(), signal.SIGINT)
        clock[0] += 0.2  # torchrun forwards the same Ctrl-C a moment later
        os.kill(os.getpid(), signal.SIGINT)
        assert run.signalled
        clock[0] += 2.0
        os.kill(os.getpid(), signal.SIGINT)
    assert saves.steps == []


def test_saves_record_their_step_so_the_cadence_does_not_save_it_again():
    saves = Saves()
    with control(saves, 0, max_steps=10, save_every=5) as run:
        for step in range(1, 11):
            if step % 5 == 0:
                run.save(step=step, is_best=True)  # an evaluation's save
            run.after_step(step)
    assert saves.steps == [(5, {"is_best": True}), (10, {"is_best": True})]


def test_time_spent_saving_or_evaluating_is_not_in_the_window():
    window = MetricsWindow(unit="items")
    result = type("R", (), {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(1.0),
                            "lr": 0.1, "skipped": torch.tensor(0.0)})()  # fmt: skip
    window.add_step(result, items=10)
    with window.paused():
        time.sleep(0.3)
    assert window.line()["step_ms"] < 200


def test_a_skipped_step_is_left_out_of_the_mean_gradient_norm():
    window = MetricsWindow()
    for norm, skipped in ((2.0, 0.0), (float("inf"), 1.0), (4.0, 0.0)):
        result = type("R", (), {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(norm),
                                "lr": 0.1, "skipped": torch.tensor(skipped)})()  # fmt: skip
        window.add_step(result, items=1)
    assert window.line()["grad_norm"] == 3.0
