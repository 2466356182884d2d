"""scripts/gpu_check.py on the CPU: the no-GPU message, the time budgets, the report, and
its whole plan at toy sizes (--smoke), so that only what needs a GPU is left for one."""

import json

import pytest
import torch

from scripts import gpu_check
from scripts.gpu_check import CheckFailed, Context, Part, run_parts
from tests.helpers import run_python


def sleeper(seconds: float):
    def fn(ctx: Context) -> dict:
        ctx.run(["-c", f"import time; time.sleep({seconds})"])
        return {"slept": seconds}

    return fn


def failing(ctx: Context) -> dict:
    ctx.run(["-c", "print('ran')"])
    raise CheckFailed("the loss did not fall (5.0 -> 5.1)")


def broken(ctx: Context) -> dict:
    return {"x": 1 / 0}


@pytest.fixture
def ctx(tmp_path):
    return Context(gpu_check.scale_for(smoke=True), tmp_path / "work")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_fails(tmp_path):
    proc = run_python(["-m", "scripts.gpu_check", "--out-dir", tmp_path], check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpu_check: no CUDA device")
    assert not (tmp_path / "report.md").exists()


def test_a_part_over_its_budget_is_stopped_and_the_next_still_runs(ctx):
    parts = [Part("bench", "slow", 2, sleeper(30)), Part("bench", "quick", 20, sleeper(0))]
    slow, quick = run_parts(parts, ctx, budget_s=60)
    assert (slow.status, quick.status) == ("timeout", "pass")
    assert 1.9 < slow.seconds < 10 and slow.detail == "stopped at its 2 s budget"
    assert quick.figures == {"slept": 0} and quick.commands[0].startswith("python -c")


def test_a_part_is_skipped_when_less_than_a_third_of_its_budget_is_left(ctx):
    parts = [
        Part("train", "first", 20, sleeper(1.5)),
        Part("train", "second", 60, sleeper(0)),  # 19 s left of 60: skipped
        Part("train", "third", 45, sleeper(0)),  # 19 s left of 45: runs, cut to what is left
    ]
    first, second, third = run_parts(parts, ctx, budget_s=21)
    assert first.status == "pass" and third.status == "pass"
    assert second.status == "skipped" and second.commands == []
    assert "s of the budget left, the part needs up to 60 s" in second.detail


def test_failed_checks_and_broken_parts_are_reported_not_raised(ctx):
    failed, crashed = run_parts(
        [Part("train", "gnmt", 20, failing), Part("bench", "x", 20, broken)], ctx, budget_s=60
    )
    assert failed.status == "fail" and failed.detail == "the loss did not fall (5.0 -> 5.1)"
    assert crashed.status == "fail" and crashed.detail.startswith("ZeroDivisionError")
    log = (ctx.work / "logs" / "train_gnmt.log").read_text()
    assert "$ python -c print('ran')" in log and "ran" in log


def report_of(results) -> dict:
    return {
        "command": "python -m scripts.gpu_check",
        "environment": {
            "device": "NVIDIA H200",
            "date": "2026-12-01",
            "torch": "2.13.0",
            "cuda": "12.8",
            "cudnn": "91000",
            "driver": "580.159.03",
            "apex": "not installed",
        },  # fmt: skip
        "budget_s": 470.0,
        "seconds": 300.0,
        "parts": [vars(r) for r in results],
        "targets": gpu_check.with_targets(results),
    }


def test_report_names_the_machine_each_command_figure_and_target(tmp_path):
    bench = gpu_check.PartResult("bench", "gnmt", "pass", 40.0, {"train fp16 tokens/s": 3.1e5},
                                 ["python -m gnmt.benchmark --device cuda"])  # fmt: skip
    phase1 = gpu_check.PartResult("bench", "phase1", "pass", 30.0, {"sequences/s": 1200.0})
    text = gpu_check.write_report(report_of([bench, phase1]), tmp_path)
    assert "## GPU check: NVIDIA H200" in text and "driver 580.159.03" in text
    assert "- `python -m gnmt.benchmark --device cuda`" in text
    targets = {t["part"]: t for t in json.loads((tmp_path / "report.json").read_text())["targets"]}
    assert targets["gnmt"]["met"] == "yes" and targets["phase1"]["met"] == "no"
    assert targets["txl_base"]["met"] == "not measured"
    assert (tmp_path / "report.md").read_text() == text


def test_from_json_puts_the_report_into_the_docs_as_the_devices_section(tmp_path):
    result = gpu_check.PartResult("bench", "gnmt", "pass", 1.0, {"train fp16 tokens/s": 1.0})
    gpu_check.write_report(report_of([result]), tmp_path / "out")
    docs = tmp_path / "PERFORMANCE.md"
    docs.write_text("# Performance\n\nkept\n")
    args = ["--from-json", str(tmp_path / "out" / "report.json"), "--docs", str(docs)]
    assert gpu_check.main(args) == 0
    assert gpu_check.main(args) == 0  # a second time replaces the section
    text = docs.read_text()
    assert text.count("<!-- benchmark: gpu-check NVIDIA H200 -->") == 1 and "kept" in text


@pytest.mark.slow
def test_the_whole_plan_runs_at_toy_sizes_on_the_cpu(tmp_path):
    """Every part's commands, data, log parsing and checks, with fp32/bf16 for the GPU's
    precisions: what is left for a GPU is only what needs one."""
    out = tmp_path / "out"
    proc = run_python(["-m", "scripts.gpu_check", "--smoke", "--out-dir", out, "--work-dir",
                       tmp_path / "work"], check=False, timeout=600)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    statuses = {f"{p['group']}/{p['name']}": p["status"] for p in report["parts"]}
    assert set(statuses.values()) == {"pass"}, (statuses, proc.stdout[-3000:])
    assert proc.returncode == 0
    assert len(statuses) == len(gpu_check.plan(gpu_check.scale_for(smoke=True)))
    figures = {f"{p['group']}/{p['name']}": p["figures"] for p in report["parts"]}
    for recipe in ("gnmt", "transformer_xl", "bert"):
        resumed = figures[f"train/{recipe}"]["resume bf16 max |dw|"]
        assert resumed == 0.0, (recipe, figures[f"train/{recipe}"])  # exact on the CPU
    assert figures["bench/phase1"]["sequences/s"] > 0
    assert "===== train_gnmt" in (out / "commands.log").read_text()


def test_the_gpu_tests_the_check_runs_are_marked_as_such():
    """`pytest -m gpu` (the check's first part) must select the CUDA tests."""
    proc = run_python(["-m", "pytest", "-m", "gpu", "--collect-only", "-q", "tests"])
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(selected) >= 4, proc.stdout
    assert any("test_fp16_on_cuda" in line for line in selected)


@pytest.mark.parametrize("flags", [["--budget-s", "-5"], ["--budget-s", "x"], ["--only", "trian"]])
def test_bad_numbers_and_part_names_are_refused_in_one_line(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(flags)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and flags[0] in err
