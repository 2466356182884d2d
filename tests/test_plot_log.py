"""scripts/plot_log.py: each recipe's log as series against the optimizer step, resumed
and half-written logs, titles, PNGs, one-line errors.

The logs are written with common.logging.Logger in the order and with the names each
recipe uses; the interval values come from common.metrics.MetricsWindow, as in the
recipes. One test runs the real scripts.toolkit_check, stopped and resumed."""

import functools
import math
import subprocess
import sys
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch

from common.logging import Logger
from common.metrics import MetricsWindow
from common.step import StepResult
from scripts.plot_log import (
    figure_title,
    group_of,
    load_run,
    main,
    normalise,
    read_records,
    run_names,
)
from tests.helpers import ROOT, clean_env, run_python

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRECISION = SimpleNamespace(loss_scale=65536.0, skipped_steps=0)  # what line() reads


def loss_at(step, bias=0.0):
    return 10.0 / step + bias


def lr_at(step):
    return 1e-5 * step


def interval_values(step, unit, bias=0.0, **averages):
    """A log line's values as MetricsWindow.line() gives them to a recipe."""
    window = MetricsWindow(unit=unit)
    for name, value in averages.items():
        window.add(name, torch.tensor(value))
    result = StepResult(
        loss=torch.tensor(loss_at(step, bias)),
        grad_norm=torch.tensor(1.0),
        lr=lr_at(step),
        skipped=torch.tensor(0.0),
    )
    window.add_step(result, items=1000)
    return window.line(PRECISION)


def warnings_of(path):
    messages = []
    return read_records(path, messages.append), messages


def curve(run, panel, label):
    return run.curves[panel][label]


def steps_of(run):
    """Every x value of every curve."""
    return {x for labels in run.curves.values() for xs, _ in labels.values() for x in xs}


def assert_steps(xs):
    assert xs == sorted(set(xs)), xs  # increasing, each step once


# ---------------------------------------------------------------- GNMT (gnmt/train.py)

GNMT_STEPS_PER_EPOCH = 25


def gnmt_run(path, first_step, last_step, bias=0.0):
    """gnmt/train.py from `first_step` (a resume when > 0) to `last_step`: a line every
    10 steps at (epoch, step), an (epoch,) summary with BLEU at each epoch end."""
    with Logger(path, stdout=False) as logger:
        args = {"train_batch_size": 128, "train_global_batch_size": None, "lr": 2e-3}
        logger.log("PARAMETER", {**args, "epochs": 2, "math": "fp16", "world_size": 8})
        if first_step:
            epoch = first_step // GNMT_STEPS_PER_EPOCH
            logger.log("PARAMETER", {"resumed_from_step": first_step, "epoch": epoch})
        for step in range(first_step + 1, last_step + 1):
            epoch = (step - 1) // GNMT_STEPS_PER_EPOCH
            if step % 10 == 0:
                values = interval_values(step, "tokens", bias, **{"nll/tok": 2.0})
                values["ppl"] = math.exp(values["nll/tok"])
                logger.log((epoch, step), values)
            if step % GNMT_STEPS_PER_EPOCH == 0:
                summary = {"train_time_s": 60.0, "sent/s": 500.0 + epoch, "tok/s": 9e3 + epoch}
                summary.update({"bleu": 20.0 + epoch + bias, "eval_time_s": 5.0})
                logger.log((epoch + 1,), summary)
        logger.log((), {"steps": last_step, "best_bleu": 21.0 + bias, "stop": "epochs"})


def gnmt_log(path):
    gnmt_run(path, 0, 50)


def test_gnmt_steps_epoch_summaries_and_bleu(tmp_path):
    log = tmp_path / "gnmt_fp16" / "log.json"
    gnmt_log(log)
    run = load_run(log, "gnmt_fp16", print)

    xs, ys = curve(run, "loss", "loss")
    assert xs == [10, 20, 30, 40, 50]  # the optimizer step, not the epoch
    assert ys == pytest.approx([loss_at(s) for s in xs])
    assert curve(run, "loss", "nll/tok")[0] == xs
    assert curve(run, "lr", "lr") == (xs, pytest.approx([lr_at(s) for s in xs]))
    assert curve(run, "throughput", "tokens/s")[0] == xs
    assert all(v > 0 for v in curve(run, "throughput", "tokens/s")[1])

    # The epoch summaries sit where each epoch ended (the last step logged in it) ...
    assert curve(run, "validation", "bleu") == ([20, 50], [20.0, 21.0])
    assert curve(run, "average_throughput", "tok/s (epoch average)") == ([20, 50], [9e3, 9e3 + 1])
    assert curve(run, "average_throughput", "sent/s (epoch average)")[0] == [20, 50]
    # ... and their epoch numbers never become steps; epoch throughput is not interval's.
    assert not {1, 2} & steps_of(run)
    assert set(run.curves["throughput"]) == {"tokens/s"}
    # Bookkeeping is not plotted; the final summary's best BLEU is a point at the end.
    plotted = {label for labels in run.curves.values() for label in labels}
    assert not {"step_ms", "loss_scale", "skipped_steps", "train_time_s", "ppl"} & plotted
    assert curve(run, "validation", "best_bleu") == ([50], [21.0])

    assert run.settings_text() == "precision fp16 · global batch 1024 · world size 8 · lr 0.002"
    title = figure_title([run])
    assert title.splitlines() == ["gnmt_fp16", run.settings_text()]


def test_gnmt_resumed_after_a_crash_mid_line(tmp_path, capsys):
    """Killed at step 45 while writing a line; resumed from the step-25 checkpoint."""
    log = tmp_path / "run" / "log.json"
    gnmt_run(log, 0, 45)
    with open(log, "a") as f:
        f.write('DLLL {"timestamp": "1795428000.1", "type": "LO')  # the crash
    broken_line = len(log.read_text().splitlines())
    gnmt_run(log, 25, 50, bias=1.0)  # its first record lands on the broken line

    records, warnings = warnings_of(log)
    assert warnings == [
        f"{log}:{broken_line}: half-written record skipped (the record after it on the line "
        "is kept)"
    ]
    assert records[broken_line - 1]["step"] == "PARAMETER"  # the resumed run's record

    run = normalise(records, "run")
    xs, ys = curve(run, "loss", "loss")
    assert xs == [10, 20, 30, 40, 50]  # no step twice
    assert ys == pytest.approx([loss_at(10), loss_at(20)] + [loss_at(s, 1.0) for s in (30, 40, 50)])
    for labels in run.curves.values():
        for xs, _ in labels.values():
            assert_steps(xs)
    assert curve(run, "validation", "bleu") == ([20, 50], [20.0, 22.0])
    assert run.resumed_at == [25]
    assert "resumed at step 25" in run.settings_text()

    assert main([str(log), "--out-dir", str(tmp_path / "plots")]) == 0
    assert f"warning: {log}:{broken_line}: half-written record" in capsys.readouterr().err


# ------------------------------------------------------- Transformer-XL (transformer_xl/train.py)


def txl_run(path, first_step, last_step, bias=0.0, killed=False):
    """transformer_xl/train.py: a line every 10 steps, validation every 20, at (epoch,
    step); a resume writes a new PARAMETER record (no resumed_from_step) and goes on
    from the last checkpoint (saved at each evaluation)."""
    with Logger(path, stdout=False) as logger:
        args = {"batch_size": 256, "tgt_len": 192, "lr": 0.00025, "math": None}
        logger.log("PARAMETER", {**args, "world_size": 8, "precision": "amp"})
        for step in range(first_step + 1, last_step + 1):
            epoch = step // 35
            if step % 10 == 0:
                logger.log((epoch, step), interval_values(step, "tokens", bias))
            if step % 20 == 0:
                val = 5.0 - step / 100 + bias
                logger.log((epoch, step), {"valid_loss": val, "valid_ppl": math.exp(val)})
        if killed:
            return
        summary = {"train_time_min": 3.0, "tokens/s": 12345.0, "test_loss": 4.0}
        summary.update({"test_ppl": math.exp(4.0), "valid_loss": 4.1, "passed": True})
        logger.log((), {**summary, "steps": last_step})


def test_transformer_xl_resumed(tmp_path):
    log = tmp_path / "txl_base" / "log.json"
    txl_run(log, 0, 45, killed=True)  # logged up to 40
    txl_run(log, 20, 60, bias=1.0)  # resumed from the step-20 checkpoint
    run = normalise(read_records(log, print), "txl_base")

    xs, ys = curve(run, "loss", "loss")
    assert xs == [10, 20, 30, 40, 50, 60]
    assert ys == pytest.approx([loss_at(10), loss_at(20)] + [loss_at(s, 1.0) for s in xs[2:]])
    assert curve(run, "lr", "lr")[0] == xs
    assert curve(run, "validation", "valid_loss") == (
        [20, 40, 60],
        pytest.approx([4.8, 5.6, 5.4]),  # 40: the resumed run's
    )
    assert curve(run, "validation", "valid_ppl")[0] == [20, 40, 60]
    # The final summary: run throughput and test scores at the last step; its
    # valid_loss (the best) is no point of the curve.
    assert curve(run, "average_throughput", "tokens/s (run average)") == ([60], [12345.0])
    assert curve(run, "validation", "test_ppl") == ([60], pytest.approx([math.exp(4.0)]))
    assert "test_loss" in run.curves["validation"]
    assert run.resumed_at == [30]
    assert run.settings_text() == (
        "precision amp · global batch 256 · world size 8 · lr 0.00025 · resumed at step 30"
    )


# ------------------------------------------------- BERT pre-training (bert/run_pretraining.py)


def bert_phase(path, phase, phase1_end, steps):
    """bert/run_pretraining.py: (epoch, phase1_end + step) lines, a () summary."""
    with Logger(path, stdout=False) as logger:
        logger.log(
            "PARAMETER",
            {
                "train_batch_size": 64 if phase == 1 else 16,
                "learning_rate": 6e-3 if phase == 1 else 4e-3,
                "phase": phase,
                "world_size": 8,
                "precision": "amp",
                "global_batch_size": 65536 if phase == 1 else 32768,
            },
        )
        for step in range(1, steps + 1):
            if step % 5 == 0:
                values = interval_values(phase1_end + step, "sequences", mlm_loss=6.0, nsp_loss=0.6)
                logger.log((0, phase1_end + step), values)
        summary = {"training_sequences_per_second": 3e3 * phase, "final_loss": 7.0}
        if phase == 2:
            summary.update({"masked_lm_accuracy": 0.7, "masked_lm_loss": 1.5})
        logger.log((), {**summary, "step": phase1_end + steps})


def test_bert_pretraining_two_phases(tmp_path):
    log = tmp_path / "bert_large" / "dllogger.json"
    bert_phase(log, 1, 0, 20)
    bert_phase(log, 2, 20, 10)
    run = load_run(log, "bert_large", print)

    xs, _ = curve(run, "loss", "loss")
    assert xs == [5, 10, 15, 20, 25, 30]  # phase 2 goes on counting
    assert curve(run, "loss", "mlm_loss")[0] == curve(run, "loss", "nsp_loss")[0] == xs
    assert curve(run, "throughput", "sequences/s")[0] == xs
    assert curve(run, "lr", "lr")[1] == pytest.approx([lr_at(s) for s in xs])
    assert curve(run, "average_throughput", "training_sequences_per_second (run average)") == (
        [20, 30],
        [3e3, 6e3],
    )
    assert curve(run, "validation", "masked_lm_accuracy") == ([30], [0.7])
    assert curve(run, "validation", "masked_lm_loss") == ([30], [1.5])
    assert "final_loss" not in run.curves["validation"]
    assert run.resumed_at == []  # a new phase is no resume
    assert run.settings_text() == (
        "precision amp · global batch 65536→32768 · world size 8 · lr 0.006→0.004 · phase 1→2"
    )


# ------------------------------------------- BERT fine-tuning (bert/run_squad.py, finetune.py)


def squad_log(path):
    """run_squad.py's PARAMETER, finetune.train's PARAMETER and (epoch, step) lines,
    report_training's and report_inference's summaries, then the SQuAD scores."""
    with Logger(path, stdout=False) as logger:
        args = {"train_batch_size": 32, "learning_rate": 5e-5, "num_train_epochs": 2.0}
        logger.log("PARAMETER", {**args, "precision": "fp16", "world_size": 4})
        logger.log(
            "PARAMETER",
            {"global_batch": 128, "features": 1024, "total_steps": 16, "steps_per_epoch": 8}
            | {"micro_batch": 32, "world_size": 4},
        )
        for step in range(1, 17):
            if step % 4 == 0:
                logger.log(((step - 1) // 8, step), interval_values(step, "sequences"))
        logger.log((), {"e2e_train_time": 9.0, "training_sequences_per_second": 200.0})
        logger.log((), {"final_loss": 1.0, "steps": 16})
        latency = {"latency_avg": 0.01, "latency_p99": 0.02}
        logger.log(
            (),
            {"e2e_inference_time": 2.0, "inference_sequences_per_second": 900.0}
            | {"inference_sequences": 100, **latency},
        )
        logger.log((), {"exact_match": 81.2, "f1": 88.5})


def test_bert_squad_finetuning(tmp_path):
    log = tmp_path / "squad" / "dllogger.json"
    squad_log(log)
    run = load_run(log, "squad", print)
    assert curve(run, "loss", "loss")[0] == [4, 8, 12, 16]
    assert curve(run, "lr", "lr")[0] == [4, 8, 12, 16]
    assert curve(run, "validation", "f1") == ([16], [88.5])
    assert curve(run, "validation", "exact_match") == ([16], [81.2])
    assert set(run.curves["average_throughput"]) == {
        "training_sequences_per_second (run average)"  # inference speed is no training
    }
    assert run.settings_text() == "precision fp16 · global batch 128 · world size 4 · lr 5e-05"


# ------------------------------------------------------ scripts/toolkit_check.py, really run


@pytest.mark.slow
def test_toolkit_check_stopped_and_resumed(tmp_path):
    """Plain int steps; validation at each checkpoint; a resume that logs resumed_from_step."""
    save_dir = tmp_path / "toolkit"
    common = ["-m", "scripts.toolkit_check", "--device", "cpu", "--steps", "12"]
    common += ["--print-freq", "3", "--save-every", "4", "--train-size", "512"]
    common += ["--save-dir", save_dir]
    run_python([*common, "--stop-at", "8"], timeout=120)
    run_python([*common, "--resume"], timeout=120)

    run = load_run(save_dir / "log.json", "toolkit", print)
    assert curve(run, "loss", "loss")[0] == [3, 6, 9, 12]
    assert curve(run, "lr", "lr")[0] == [3, 6, 9, 12]
    assert curve(run, "throughput", "samples/s")[0] == [3, 6, 9, 12]
    assert curve(run, "validation", "val_loss")[0] == [4, 8, 12]
    assert curve(run, "validation", "val_accuracy")[0] == [4, 8, 12]
    assert curve(run, "validation", "final_val_accuracy")[0] == [12]
    assert run.resumed_at == [8]
    expected = "precision fp32 · global batch 64 · world size 1 · lr 0.02 · resumed at step 8"
    assert run.settings_text() == expected


# ------------------------------------------------------------------ CLI: PNGs, titles


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


FIGURES = ["loss.png", "lr.png", "throughput.png", "validation.png"]


def test_writes_the_figures_into_the_log_folder(tmp_path, capsys):
    log = tmp_path / "gnmt_fp16" / "log.json"
    gnmt_log(log)
    assert main([str(log)]) == 0
    out = log.parent
    assert sorted(p.name for p in out.glob("*.png")) == sorted(FIGURES)
    assert not list(out.glob(".*tmp*"))  # no temporary files left
    for name in FIGURES:
        assert_png(out / name)
    assert capsys.readouterr().out.splitlines() == [str(out / n) for n in FIGURES]


def test_compares_several_runs(tmp_path, capsys):
    gnmt, txl = tmp_path / "gnmt" / "log.json", tmp_path / "txl" / "log.json"
    gnmt_log(gnmt)
    txl_run(txl, 0, 40)
    out = tmp_path / "plots"
    assert main([str(gnmt), str(txl), "--out-dir", str(out), "--title", "GNMT vs TXL"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / n) for n in FIGURES]
    for name in FIGURES:
        assert_png(out / name)

    runs = [load_run(p, n, print) for p, n in zip([gnmt, txl], run_names([gnmt, txl]), strict=True)]
    assert [r.name for r in runs] == ["gnmt", "txl"]
    assert figure_title(runs).splitlines() == [
        "gnmt vs txl",
        "gnmt: precision fp16 · global batch 1024 · world size 8 · lr 0.002",
        "txl: precision amp · global batch 256 · world size 8 · lr 0.00025",
    ]
    assert figure_title(runs, "GNMT vs TXL").splitlines()[0] == "GNMT vs TXL"
    assert figure_title(runs[:1], "mine").splitlines()[0] == "mine"


def test_run_names_tell_logs_of_one_folder_apart(tmp_path):
    a, b, c = tmp_path / "x" / "a.json", tmp_path / "x" / "b.json", tmp_path / "y" / "log.json"
    assert run_names([a, b, c]) == [str(a), str(b), "y"]


def test_only_figures_with_data(tmp_path):
    log = tmp_path / "log.json"
    with Logger(log, stdout=False) as logger:
        logger.log(1, {"loss": 2.0})
        logger.log(2, {"loss": 1.0, "accuracy": 0.5})
    assert main([str(log)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["loss.png", "validation.png"]


# ------------------------------------------------------------------ unit rules


def test_groups():
    names = {
        "loss": ["loss", "train/mlm_loss", "nsp_loss", "nll/tok"],
        "validation": ["val_loss", "valid_loss", "valid_ppl", "bleu", "best_bleu", "f1"],
        "lr": ["lr", "encoder_lr", "train/lr", "learning_rate"],
        "throughput": ["tokens/s", "tok/s", "sent/s", "sequences/s", "samples/s"],
    }
    names["validation"] += ["exact_match", "dev_accuracy", "dev_matched_accuracy", "dev_mcc"]
    names["throughput"] += ["throughput", "sentences_per_sec", "tok_s", "train/seq/sec"]
    for group, keys in names.items():
        assert {k: group_of(k) for k in keys} == dict.fromkeys(keys, group)
    others = ["loss_scale", "clr", "step_ms", "ppl", "grad_norm", "skipped_steps", "steps"]
    others += ["best_f1_thresh", "HasAns_total", "train_time_s", "inference_sequences_per_second"]
    assert {k: group_of(k) for k in others} == dict.fromkeys(others)


def records(steps_and_losses):
    return [{"type": "LOG", "step": s, "data": {"loss": y}} for s, y in steps_and_losses]


def test_steps_going_back_replace_the_earlier_values():
    log = records([(10, 5.0), (10, 4.5), (20, 4.0), (30, 3.0), (20, 3.9), (30, 2.9), (40, 2.0)])
    run = normalise(log, "run")
    # step 10 twice: the later value; 20 after 30: a resume from 20 on.
    assert run.curves == {"loss": {"loss": ([10, 20, 30, 40], [4.5, 3.9, 2.9, 2.0])}}
    assert run.resumed_at == [20]


def test_skips_records_that_are_no_training_position():
    log = [
        {"type": "METADATA", "metric": "loss", "metadata": {}},
        {"type": "LOG", "step": "PARAMETER", "data": {"lr": 0.1}},
        {"type": "LOG", "step": ["train", 1], "data": {"loss": 0.1}},
        {"type": "LOG", "step": ["valid"], "data": {"valid_loss": 0.1}},
        {"type": "LOG", "step": 3, "data": {"loss": True, "lr": 0.01, "name": "x"}},
        {"type": "LOG", "step": [], "data": {"final_loss": 0.1}},
    ]
    run = normalise(log, "run")
    assert run.curves == {"lr": {"lr": ([3], [0.01])}}
    assert run.settings_text() == "lr 0.1"


def test_epoch_summary_before_any_step_is_left_out_with_a_warning():
    messages = []
    log = [{"type": "LOG", "step": [1], "data": {"bleu": 20.0}}, *records([(10, 1.0)])]
    run = normalise(log, "run", messages.append)
    assert "validation" not in run.curves
    assert messages == ["epoch 1 summary before any logged step: not plotted"]


def test_malformed_line_mid_file_and_half_written_last_line(tmp_path, capsys):
    log = tmp_path / "log.json"
    with Logger(log, stdout=False) as logger:
        logger.log(10, {"loss": 2.0})
    with open(log, "a") as f:
        f.write("DLLL {oops\n")
        f.write("a console line between records\n")
        f.write('DLLL {"type": "LOG", "step": 20, "data": {"loss": 1.0}}\n')
        f.write('DLLL {"type": "LOG", "step": 30, "da')
    assert main([str(log)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {log}:2: malformed DLLogger record skipped",
        f"warning: {log}:5: half-written last line skipped",
    ]
    run = normalise(read_records(log, print), "run")
    assert run.curves["loss"]["loss"] == ([10, 20], [2.0, 1.0])


# ------------------------------------------------------------------ errors


def one_error_line(capsys, *expected):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for text in expected:
        assert text in err, err


def test_unreadable_logs_exit_1_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main([str(missing)]) == 1
    one_error_line(capsys, f"{missing}: no such file")

    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert main([str(empty)]) == 1
    one_error_line(capsys, f"{empty}: empty file")

    text = tmp_path / "notes.txt"
    text.write_text("loss 1.0\nloss 0.5\n")
    assert main([str(text)]) == 1
    one_error_line(capsys, f"{text}: not a DLLogger log")

    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert main([str(binary)]) == 1
    one_error_line(capsys, f"{binary}: not a DLLogger log")

    broken = tmp_path / "broken.json"
    broken.write_text("DLLL {oops\n")
    assert main([str(broken)]) == 1
    assert f"{broken}: no complete DLLogger record" in capsys.readouterr().err

    assert main([str(tmp_path)]) == 1
    one_error_line(capsys, f"{tmp_path}: is a folder")


@pytest.mark.parametrize(
    "lines",
    [
        [],  # only PARAMETER and the summary
        [(1, {"name": "x", "ok": True})],  # no numeric values
        [(1, {"grad_norm": 0.5, "step_ms": 10.0})],  # numbers, but nothing to plot
    ],
)
def test_log_without_plottable_values_exits_1(tmp_path, capsys, lines):
    log = tmp_path / "log.json"
    with Logger(log, stdout=False) as logger:
        logger.log("PARAMETER", {"lr": 0.1})
        for step, data in lines:
            logger.log(step, data)
        logger.log((), {"final_loss": 0.1})
    assert main([str(log), "--out-dir", str(tmp_path / "plots")]) == 1
    one_error_line(capsys, str(log), "no loss, learning rate, throughput or validation values")
    assert not (tmp_path / "plots").exists()


def test_several_logs_need_out_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert "--out-dir is needed" in capsys.readouterr().err


def test_runs_as_a_script_or_module_from_anywhere(tmp_path):
    """`python scripts/plot_log.py` finds common/ without PYTHONPATH or an install."""
    log = tmp_path / "log.json"
    gnmt_log(log)
    script = ROOT / "scripts" / "plot_log.py"
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    run = functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    proc = run([sys.executable, script, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python scripts/plot_log.py")
    assert "--out-dir" in proc.stdout and "--title" in proc.stdout
    proc = run([sys.executable, script, log, "--title", "mine"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(tmp_path / n) for n in FIGURES]

    proc = run([sys.executable, "-m", "scripts.plot_log", "nope.json"], cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr == "error: nope.json: no such file\n"
