"""scripts/plot_log.py: PNGs from a DLLogger log, step handling, errors."""

import functools
import subprocess
import sys

import matplotlib.image
import pytest

from common.logging import Logger
from scripts.plot_log import group_of, main, series, training_records
from tests.helpers import ROOT, clean_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_log(path, lines):
    with Logger(path, stdout=False) as logger:
        logger.log("PARAMETER", {"lr": 0.1, "steps": 30})
        logger.metadata("tokens/s", {"unit": "tokens/s"})
        for step, data in lines:
            logger.log(step, data)
        logger.log((), {"final_loss": 0.1})


def training_log(path):
    write_log(
        path,
        [
            (
                step,
                {
                    "loss": 3.0 / step,
                    "val_loss": 3.5 / step,
                    "lr": 1e-3 * step,
                    "tokens/s": 1000.0 + step,
                    "loss_scale": 65536.0,
                },
            )
            for step in range(10, 40, 10)
        ],
    )


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 0 and data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_writes_one_png_per_group(tmp_path, capsys):
    log = tmp_path / "log.json"
    training_log(log)
    out = tmp_path / "plots"
    assert main([str(log), "--out-dir", str(out)]) == 0
    names = ["loss.png", "lr.png", "throughput.png"]
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary files left
    for name in names:
        assert_png(out / name)
    assert capsys.readouterr().out.splitlines() == [str(out / name) for name in names]


def test_only_groups_with_data_and_default_out_dir(tmp_path):
    log = tmp_path / "log.json"
    write_log(log, [(1, {"loss": 2.0}), (2, {"loss": 1.0, "accuracy": 0.5})])
    assert main([str(log)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["loss.png"]
    assert_png(tmp_path / "loss.png")


@pytest.mark.parametrize(
    "lines",
    [
        [],  # only PARAMETER, metadata and the () summary
        [(1, {"name": "x", "ok": True})],  # no numeric values
        [(1, {"accuracy": 0.5})],  # numbers, but nothing to plot
    ],
)
def test_log_without_plottable_values_exits_2(tmp_path, capsys, lines):
    log = tmp_path / "log.json"
    write_log(log, lines)
    assert main([str(log), "--out-dir", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(log) in err
    assert err.startswith("plot_log: error: ")
    assert not (tmp_path / "plots").exists()


def test_missing_malformed_and_binary_logs_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 2
    assert f"{tmp_path / 'nope.json'}: cannot read" in capsys.readouterr().err

    bad = tmp_path / "bad.json"
    bad.write_text('DLLL {"type": "LOG", "step": 1, "data": {"loss": 1.0}}\nDLLL {oops\n')
    assert main([str(bad)]) == 2
    assert f"{bad}:2: malformed" in capsys.readouterr().err

    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert main([str(binary)]) == 2
    assert f"{binary}: not a text log" in capsys.readouterr().err


def test_groups():
    assert [group_of(k) for k in ("loss", "val_loss", "train/mlm_loss", "loss_scale")] == [
        "loss",
        "loss",
        "loss",
        None,
    ]
    assert [group_of(k) for k in ("lr", "encoder_lr", "train/lr", "learning_rate", "clr")] == [
        "lr",
        "lr",
        "lr",
        "lr",
        None,
    ]
    throughput_keys = (
        "tokens/s",
        "throughput",
        "sentences_per_sec",
        "tok_s",
        "seq_s",
        "train/seq/sec",
    )
    assert {group_of(k) for k in throughput_keys} == {"throughput"}
    assert group_of("accuracy") is None


def records(steps_and_losses):
    return [{"type": "LOG", "step": s, "data": {"loss": y}} for s, y in steps_and_losses]


def test_resumed_run_replaces_the_repeated_steps():
    log = records([(10, 5.0), (10, 4.5), (20, 4.0), (30, 3.0), (20, 3.9), (30, 2.9), (40, 2.0)])
    # step 10 twice (train and val lines) is no restart; 20 after 30 is.
    assert [s for s, _ in training_records(log)] == [(10,), (10,), (20,), (30,), (40,)]
    xlabel, groups = series(log)
    assert xlabel == "step"
    assert groups == {"loss": {"loss": ([10, 10, 20, 30, 40], [5.0, 4.5, 3.9, 2.9, 2.0])}}


def test_tuple_steps():
    # (epoch, global_step): the last element is the x value.
    assert series(records([([0, 5], 3.0), ([0, 10], 2.0), ([1, 15], 1.0)])) == (
        "step",
        {"loss": {"loss": ([5, 10, 15], [3.0, 2.0, 1.0])}},
    )
    # (epoch, iteration in epoch): restarts each epoch, so records are numbered.
    in_epoch = records([([0, 5], 3.0), ([0, 10], 2.0), ([1, 5], 1.0), ([1, 10], 0.5)])
    assert series(in_epoch) == ("record", {"loss": {"loss": ([0, 1, 2, 3], [3.0, 2.0, 1.0, 0.5])}})
    assert series(records([(5, 1.0), (7, 0.5)]), x="record")[0] == "record"


def test_skips_records_that_are_no_training_position():
    log = [
        {"type": "METADATA", "metric": "loss", "metadata": {}},
        {"type": "LOG", "step": "PARAMETER", "data": {"lr": 0.1}},
        {"type": "LOG", "step": [], "data": {"loss": 0.1}},
        {"type": "LOG", "step": ["train", 1], "data": {"loss": 0.1}},
        {"type": "LOG", "step": 3, "data": {"loss": True, "lr": 0.01}},
    ]
    assert series(log) == ("step", {"lr": {"lr": ([3], [0.01])}})


def test_runs_as_a_script_from_anywhere(tmp_path):
    """`python scripts/plot_log.py` finds common/ without PYTHONPATH or an install."""
    log = tmp_path / "log.json"
    training_log(log)
    script = ROOT / "scripts" / "plot_log.py"
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    run = functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    proc = run([sys.executable, script, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "--out-dir" in proc.stdout and "(default: step)" in proc.stdout
    proc = run([sys.executable, script, log, "--x", "record"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        str(tmp_path / n) for n in ("loss.png", "lr.png", "throughput.png")
    ]
