"""DLLogger-format logging: file lines, console lines, ranks, TensorBoard, progress bars."""

import datetime
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

import common.logging as logmod
from common.logging import Logger, progress, read_dllogger


@pytest.fixture(autouse=True)
def no_launcher_env(monkeypatch):
    """Tests pick the rank explicitly; the outer shell's launcher variables must not."""
    for var in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)


def parse_lines(path):
    lines = Path(path).read_text().splitlines()
    assert all(line.startswith("DLLL {") for line in lines)
    return [json.loads(line[len("DLLL ") :]) for line in lines]


def test_file_lines_follow_dllogger_format(tmp_path):
    path = tmp_path / "run" / "log.json"  # the folder does not exist yet
    with Logger(path, stdout=False) as logger:
        logger.log("PARAMETER", {"lr": 0.001, "save_dir": Path("/tmp/x"), "seed": None})
        logger.metadata("tokens/s", {"unit": "tokens/s", "format": ":.1f"})
        logger.log(
            7,
            {
                "loss": torch.tensor(2.5),
                "tokens": torch.tensor(3),
                "acc": np.float32(0.5),
                "count": np.int64(9),
                "ok": np.bool_(True),
                "flag": False,
                "name": "gnmt",
                "vector": torch.tensor([1.0, 2.0]),
                "thing": object,
            },
        )
        logger.log((1, 20), {"loss": 1.25})
        logger.log((), {"final_loss": 1.0})

    records = parse_lines(path)
    assert [r["type"] for r in records] == ["LOG", "METADATA", "LOG", "LOG", "LOG"]
    head = ["timestamp", "datetime", "elapsedtime", "type"]
    for r in records:
        tail = ["step", "data"] if r["type"] == "LOG" else ["metric", "metadata"]
        assert list(r) == head + tail
        assert all(isinstance(r[k], str) for k in ("timestamp", "datetime", "elapsedtime"))
        assert float(r["timestamp"]) == pytest.approx(
            datetime.datetime.fromisoformat(r["datetime"]).timestamp()
        )
        assert float(r["elapsedtime"]) >= 0

    assert records[0]["step"] == "PARAMETER"
    assert records[0]["data"] == {"lr": 0.001, "save_dir": "/tmp/x", "seed": None}
    assert records[1]["metric"] == "tokens/s"
    assert records[1]["metadata"] == {"unit": "tokens/s", "format": ":.1f"}
    data = records[2]["data"]
    assert records[2]["step"] == 7
    assert data == {
        "loss": 2.5,
        "tokens": 3,
        "acc": 0.5,
        "count": 9,
        "ok": True,
        "flag": False,
        "name": "gnmt",
        "vector": "tensor([1., 2.])",
        "thing": "<class 'object'>",
    }
    assert type(data["tokens"]) is int and type(data["count"]) is int
    assert type(data["loss"]) is float and type(data["ok"]) is bool
    assert records[3]["step"] == [1, 20]
    assert records[4]["step"] == []


def test_non_finite_values_are_logged(tmp_path):
    with Logger(tmp_path / "log.json", stdout=False) as logger:
        logger.log(1, {"loss": float("nan"), "grad_norm": float("inf")})
    (record,) = read_dllogger(tmp_path / "log.json")
    assert np.isnan(record["data"]["loss"]) and record["data"]["grad_norm"] == float("inf")


def test_append_on_resume_and_truncate_when_asked(tmp_path):
    path = tmp_path / "log.json"
    with Logger(path, stdout=False) as logger:
        logger.log(1, {"loss": 3.0})
    with Logger(path, stdout=False) as logger:  # a resumed run
        logger.log(2, {"loss": 2.0})
    assert [r["step"] for r in read_dllogger(path)] == [1, 2]

    with Logger(path, stdout=False, append=False) as logger:
        logger.log(1, {"loss": 5.0})
    assert [r["data"]["loss"] for r in read_dllogger(path)] == [5.0]


def test_each_line_reaches_the_file_before_close(tmp_path):
    path = tmp_path / "log.json"
    logger = Logger(path, stdout=False)
    logger.log(1, {"loss": 1.0})
    assert len(read_dllogger(path)) == 1  # a crash now would lose nothing
    logger.close()


def test_other_ranks_write_nothing(tmp_path, capsys):
    with Logger(tmp_path / "log.json", rank=1, tensorboard_dir=tmp_path / "tb") as logger:
        logger.metadata("loss", {"unit": "nats"})
        logger.log(1, {"loss": 1.0})
        assert not logger.enabled and logger.path is None
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == ""


def test_all_ranks_write_their_own_file(tmp_path, capsys):
    for rank in (0, 1):
        with Logger(tmp_path / "log.json", rank=rank, all_ranks=True) as logger:
            logger.log(3, {"loss": float(rank)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json", "log.rank1.json"]
    assert read_dllogger(tmp_path / "log.rank1.json")[0]["data"] == {"loss": 1.0}
    assert read_dllogger(tmp_path / "log.json")[0]["data"] == {"loss": 0.0}
    assert capsys.readouterr().out.splitlines() == [
        "[rank 0] step 3 | loss 0.0000",
        "[rank 1] step 3 | loss 1.0000",
    ]


def test_rank_comes_from_the_launcher_environment(monkeypatch):
    assert Logger().rank == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert Logger().rank == 3
    monkeypatch.setenv("RANK", "2")  # torchrun's variable wins over SLURM's
    assert Logger().rank == 2
    assert not Logger().enabled
    assert Logger(rank=0).enabled


def test_console_lines(capsys):
    with Logger() as logger:
        logger.metadata("throughput", {"unit": "tokens/s", "format": ":.1f"})
        logger.metadata("tokens/s", {"unit": "tokens/s", "format": ":.1f"})
        logger.metadata("name", {"format": ":.2f"})  # does not fit a string: ignored
        logger.log(
            120,
            {
                "loss": 2.34561,
                "lr": 0.001,
                "tokens/s": 12345.64,
                "throughput": 99.0,
                "tokens": 4096,
                "samples/s": 31836.35163,
                "big": 12345678912.0,
                "small": -0.0005,
                "nan": float("nan"),
                "zero": 0.0,
                "name": "x",
                "ok": True,
            },
        )
        logger.log((1, 20), {"loss": torch.tensor(1.5)})
        logger.log([3], {"loss": 1.0})
        logger.log((1, 20, 4), {"loss": 1.0})
        logger.log("PARAMETER", {"lr": 6e-3, "batch_size": 64, "math": "bf16"})
        logger.log((), {"final_loss": 0.5})
    assert capsys.readouterr().out.splitlines() == [
        "step 120 | loss 2.3456 | lr 1.000e-03 | tokens/s 12345.6 | throughput 99.0 tokens/s"
        " | tokens 4096 | samples/s 31836.4 | big 1.235e+10 | small -5.000e-04 | nan nan"
        " | zero 0.0000 | name x | ok True",
        "epoch 1 iter 20 | loss 1.5000",
        "epoch 3 | loss 1.0000",
        "step 1/20/4 | loss 1.0000",
        "PARAMETER | lr 6.000e-03 | batch_size 64 | math bf16",
        "summary | final_loss 0.5000",
    ]


def test_console_lines_go_through_tqdm_write(monkeypatch):
    written = []
    monkeypatch.setattr(tqdm, "write", lambda s, file=None: written.append(s))
    with Logger() as logger:
        logger.log(1, {"loss": 1.0})
    assert written == ["step 1 | loss 1.0000"]


def test_stdout_off_prints_nothing(tmp_path, capsys):
    with Logger(tmp_path / "log.json", stdout=False) as logger:
        logger.log(1, {"loss": 1.0})
    assert capsys.readouterr().out == ""


def test_closed_logger_refuses_to_log(tmp_path):
    logger = Logger(tmp_path / "log.json")
    logger.close()
    logger.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        logger.log(1, {"loss": 1.0})


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    with Logger(tensorboard_dir=tb, stdout=False) as logger:
        logger.log("PARAMETER", {"lr": 0.1})
        logger.log(10, {"loss": 1.5, "name": "x", "ok": True})
        logger.log((2, 20), {"loss": torch.tensor(1.0)})  # (epoch, global step)
        logger.log((), {"loss": 0.5})
    events = EventAccumulator(str(tb))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss"]
    scalars = events.Scalars("loss")
    assert [s.step for s in scalars] == [10, 20]
    assert [s.value for s in scalars] == [1.5, 1.0]


def test_missing_tensorboard_warns_once_and_logs_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(logmod, "_warned_no_tensorboard", False)
    for _ in range(2):
        with Logger(tmp_path / "log.json", tensorboard_dir=tmp_path / "tb") as logger:
            logger.log(1, {"loss": 1.0})
    err = capsys.readouterr().err
    assert err.count("warning: TensorBoard logging is off") == 1
    assert len(read_dllogger(tmp_path / "log.json")) == 2
    assert not (tmp_path / "tb").exists()


def test_read_dllogger_skips_other_lines_and_names_bad_ones(tmp_path):
    path = tmp_path / "log.json"
    path.write_text(
        'some banner\nDLLL {"type": "LOG", "step": 1, "data": {}}\nDLLL {"type": "LOG", bad\n'
    )
    with pytest.raises(ValueError, match=r"log\.json:3: malformed DLLogger record"):
        read_dllogger(path)
    path.write_text('noise\nDLLL {"type": "LOG", "step": 1, "data": {"loss": 2.0}}\n')
    assert read_dllogger(path) == [{"type": "LOG", "step": 1, "data": {"loss": 2.0}}]
    path.write_text("DLLL [1, 2]\n")
    with pytest.raises(ValueError, match=r"log\.json:1: .* not a JSON object"):
        read_dllogger(path)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_without_a_terminal_writes_periodic_lines_for_a_log_file(monkeypatch, capsys):
    items = [1, 2, 3]
    assert list(progress(items)) == items  # pytest's captured stderr is no terminal
    assert capsys.readouterr().err == ""  # quick work: no line at all
    assert progress(items, enabled=False) is items
    clock = iter(range(0, 1000, 10))  # each reading of the clock is 10 s later
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("LM_RECIPES_PROGRESS_SECONDS", "25")
    with progress(total=8, desc="encoding", unit="lines") as bar:  # starts at t=0
        for _ in range(4):
            bar.update(2)  # t=10, 20, 30 (a line), 40
        bar.set_postfix(loss=1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "encoding: 6/8 (75.0%) | 0.2 lines/s | 0:00:10 left",
        "encoding: 8/8 (100.0%) | 0.2 lines/s",
    ]


def test_progress_shows_a_bar_on_a_terminal_of_rank_0(monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    items = [1, 2, 3]
    bar = progress(items, desc="train")
    assert isinstance(bar, tqdm)
    assert list(bar) == items
    assert progress(items, enabled=False) is items
    monkeypatch.setenv("RANK", "1")
    assert progress(items) is items
