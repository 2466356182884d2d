"""The precision switch: device checks, autocast, loss scaling with skipped steps."""

import pytest
import torch

from common import cli, precision
from common.precision import (
    LossScaler,
    Precision,
    PrecisionError,
    check_supported,
)
from tests.helpers import requires_cuda


def test_unknown_precision_is_an_error():
    with pytest.raises(PrecisionError, match="--math fp8: unknown precision"):
        Precision.create("fp8", "cpu")


@pytest.mark.parametrize("mode", ["fp16", "tf32"])
def test_cpu_refuses_gpu_only_modes(mode):
    with pytest.raises(PrecisionError, match="on the CPU use"):
        Precision.create(mode, "cpu")


def test_fp32_runs_in_float32_without_scaler():
    prec = Precision.create("fp32", "cpu")
    layer = torch.nn.Linear(4, 4)
    with prec.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.float32
    assert prec.scaler is None and prec.loss_scale == 1.0 and prec.state_dict() == {}


def test_bf16_autocast_on_cpu_and_close_to_fp32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    prec = Precision.create("bf16", "cpu")
    with prec.autocast():
        out = layer(x)
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: relative error of a 64-term dot product ~1e-2.
    torch.testing.assert_close(out.float(), layer(x), rtol=2e-2, atol=2e-2)


def test_bf16_training_step_runs_on_cpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    prec = Precision.create("bf16", "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    with prec.autocast():
        loss = model(torch.randn(4, 8)).float().pow(2).mean()
    prec.backward(loss)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert prec.step(opt) is True
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_loss_scaler_skips_overflowing_step_and_backs_off():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = LossScaler("cpu", init_scale=1024.0, growth_interval=2)

    scaler.scale_loss((p * torch.tensor([1.0, float("inf"), 1.0])).sum()).backward()
    assert scaler.step(opt) is False
    assert torch.equal(p.detach(), torch.ones(3))  # the step was skipped
    assert scaler.skipped_steps == 1 and scaler.scale == 512.0

    for expected_scale in (512.0, 1024.0):  # grows after growth_interval clean steps
        opt.zero_grad()
        scaler.scale_loss(p.sum()).backward()
        assert scaler.step(opt) is True
        assert scaler.scale == expected_scale
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))  # two SGD steps of 0.1
    assert scaler.skipped_steps == 1


def test_loss_scaler_state_round_trip():
    scaler = LossScaler("cpu", init_scale=64.0)
    scaler.skipped_before = 3
    other = LossScaler("cpu")
    other.load_state_dict(scaler.state_dict())
    assert other.scale == 64.0 and other.skipped_steps == 3


@requires_cuda
def test_fp16_on_cuda_scales_and_casts():
    prec = Precision.create("fp16", "cuda")
    layer = torch.nn.Linear(16, 16).cuda()
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    with prec.autocast():
        out = layer(torch.randn(4, 16, device="cuda"))
    assert out.dtype == torch.float16
    prec.backward(out.float().sum())
    assert prec.step(opt) is True
    assert prec.loss_scale == 2.0**16


@requires_cuda
def test_tf32_matches_capability():
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:
        Precision.create("tf32", "cuda")
        assert torch.backends.cuda.matmul.allow_tf32
        Precision.create("fp32", "cuda")
        assert not torch.backends.cuda.matmul.allow_tf32
    else:
        with pytest.raises(PrecisionError, match="Ampere"):
            Precision.create("tf32", "cuda")


def test_full_precision_mode_is_fp32_on_the_cpu():
    from common.precision import full_precision_mode

    assert full_precision_mode("cpu") == "fp32"


def test_a_gpu_without_tf32_or_bf16_is_an_error_naming_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    gpu = torch.device("cuda")
    with pytest.raises(PrecisionError, match=r"^--precision tf32: TF32 needs an Ampere.*7\.0"):
        check_supported("tf32", gpu, flag="--precision")
    with pytest.raises(PrecisionError, match=r"^--bf16: Tesla V100 has no native bf16\. Use --m"):
        check_supported("bf16", gpu, flag="--math", typed="--bf16")
    check_supported("fp16", gpu)


def parser_with_precision():
    p = cli.ArgumentParser()
    cli.add_precision_flags(p, "tf32 on GPUs from Ampere on, else fp32")
    return p


@pytest.mark.parametrize(
    "argv, mode, typed",
    [
        ([], None, None),
        (["--math", "bf16"], "bf16", "--math bf16"),
        (["--precision", "bf16"], "bf16", "--precision bf16"),
        (["--amp"], "fp16", "--amp"),
        (["--fp16", "--math", "fp16"], "fp16", "--math fp16"),
    ],
)
def test_math_and_its_aliases_give_the_mode_and_the_flag_typed(argv, mode, typed):
    args = parser_with_precision().parse_args(argv)
    assert (args.math, args.math_flag) == (mode, typed)


def test_an_fp16_shorthand_with_another_mode_is_a_conflict(capsys):
    with pytest.raises(SystemExit):
        parser_with_precision().parse_args(["--fp16", "--precision", "tf32"])
    assert "--precision tf32 conflicts with --fp16" in capsys.readouterr().err


def test_the_default_precision_per_device():
    cpu = torch.device("cpu")
    assert cli.default_precision(cpu, "fp16") == cli.default_precision(cpu) == "fp32"
    args = parser_with_precision().parse_args(["--fp16"])
    with pytest.raises(PrecisionError, match="^--fp16: fp16 needs a CUDA GPU.*use --math bf16"):
        cli.create_precision(args, cpu)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(native, monkeypatch, recwarn):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    Precision.create("bf16", "cpu")
    emulated = [w for w in recwarn if "is emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
