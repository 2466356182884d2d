"""Checkpoints: atomic files, _last/_best/keep-last-N, clear errors, exact resume."""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import distributed
from common.checkpoint import (
    Checkpointer,
    CheckpointError,
    DataPosition,
    PerRank,
    RunFolderError,
    capture_training_state,
    read_checkpoint,
    restore_state,
    restore_training_state,
    rng_state,
    save_atomic,
    set_rng_state,
    strip_prefixes,
)
from common.logging import read_dllogger
from common.optim import LAMB
from common.precision import Precision
from common.schedules import build_scheduler
from tests.helpers import ROOT, clean_env, nocpu_env, run_python


def small_state(step=0):
    model = torch.nn.Linear(3, 2)
    return model, capture_training_state(model=model, step=step)


def test_strip_prefixes():
    sd = {"module._orig_mod.w": 1, "_orig_mod.module.b": 2, "plain": 3}
    assert strip_prefixes(sd) == {"w": 1, "b": 2, "plain": 3}


def test_rng_state_round_trip_restores_every_generator():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(1)
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_checkpoint_loads_with_weights_only(tmp_path):
    model, state = small_state(step=7)
    save_atomic(state, tmp_path / "c.pt")
    loaded = read_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 7
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())


def test_last_best_and_keep_last_n(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2, is_main=True)
    for step in (10, 20, 30):
        ckpt.save(step, {"model": torch.nn.Linear(3, 2)}, is_best=step == 20)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint_best.pt",
        "checkpoint_last.pt",
        "checkpoint_step00000020.pt",
        "checkpoint_step00000030.pt",
    ]
    assert read_checkpoint(ckpt.last_path)["step"] == 30
    assert read_checkpoint(ckpt.best_path)["step"] == 20  # outlives its pruned step file
    assert ckpt.latest() == ckpt.last_path


def test_non_main_rank_writes_nothing(tmp_path):
    assert Checkpointer(tmp_path, is_main=False).save(1, {"model": torch.nn.Linear(3, 2)}) is None
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    _, state = small_state()
    path = save_atomic(state, tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt is truncated"):
        read_checkpoint(path)


def test_foreign_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt is not a checkpoint of this project"):
        read_checkpoint(tmp_path / "other.pt")
    torch.save({"args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match=r"pickled\.pt is not a checkpoint .* objects beyond"):
        read_checkpoint(tmp_path / "pickled.pt")
    (tmp_path / "text.pt").write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"text\.pt is not a checkpoint of this project"):
        read_checkpoint(tmp_path / "text.pt")


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    _, state = small_state()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        restore_training_state(state, model=torch.nn.Linear(4, 2))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    _, state = small_state(step=1)
    path = save_atomic(state, tmp_path / "c.pt")

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_atomic(small_state(step=2)[1], path)
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def make_run():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = LAMB(model.parameters(), lr=0.05)
    sched = build_scheduler(opt, "cosine", warmup_steps=2, total_steps=10)
    return model, opt, sched, Precision.create("fp32", "cpu")


def train(model, opt, sched, steps):
    for _ in range(steps):
        x = torch.randn(16, 4)  # consumes the torch RNG, like dropout does
        model(x).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_resume_in_process_is_exact(tmp_path):
    model, opt, sched, prec = make_run()
    train(model, opt, sched, 10)

    model2, opt2, sched2, prec2 = make_run()
    train(model2, opt2, sched2, 5)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(5, {"model": model2, "optimizer": opt2, "scheduler": sched2, "precision": prec2})
    torch.manual_seed(123)  # disturb the RNG: resume must restore it

    model3, opt3, sched3, prec3 = make_run()
    states = {"model": model3, "optimizer": opt3, "scheduler": sched3, "precision": prec3}
    state = ckpt.restore(states)
    assert state["step"] == 5 and state["missing"] == []
    train(model3, opt3, sched3, 5)
    for a, b in zip(model.parameters(), model3.parameters(), strict=True):
        assert torch.equal(a, b)


class Counter:
    """A part with state: counts what it has seen, refuses another name."""

    def __init__(self, name="a", seen=0):
        self.name, self.seen = name, seen

    def state_dict(self):
        return {"name": self.name, "seen": self.seen}

    def load_state_dict(self, state):
        if state["name"] != self.name:
            raise CheckpointError(f"saved for {state['name']!r}, not {self.name!r}")
        self.seen = state["seen"]


def test_parts_saved_by_name_come_back_by_name(tmp_path):
    ckpt = Checkpointer(tmp_path)
    model, position = torch.nn.Linear(3, 2), DataPosition(epoch=2, batch=17)
    ckpt.save(9, {"model": model, "data_position": position, "count": Counter(seen=4)},
              extra={"best": 1.5})  # fmt: skip
    saved = read_checkpoint(ckpt.last_path)
    assert saved["data_position"] == {"epoch": 2, "batch": 17}
    assert saved["count"] == {"name": "a", "seen": 4} and saved["extra"] == {"best": 1.5}
    assert saved["version"] == 2 and saved["per_rank"] is None

    model2, position2, count2 = torch.nn.Linear(3, 2), DataPosition(), Counter()
    state = ckpt.restore({"count": count2, "model": model2, "data_position": position2})
    assert (state["step"], position2, count2.seen) == (9, position, 4)
    assert torch.equal(model2.weight, model.weight)
    with pytest.raises(CheckpointError, match=r"checkpoint_last\.pt: count: saved for 'a'"):
        ckpt.restore({"count": Counter(name="b")})  # a part refuses: one line naming both
    with pytest.raises(CheckpointError, match="holds no plateau state"):
        ckpt.restore({"plateau": Counter()})
    with pytest.raises(CheckpointError, match=r"count: malformed state \(KeyError"):
        restore_state({"count": {"seen": 1}}, {"count": Counter()}, source="checkpoint")


def test_per_rank_parts_come_back_to_their_rank_or_are_reported_missing(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(3, {"model": torch.nn.Linear(3, 2), "mine": PerRank(Counter(seen=8))})
    saved = read_checkpoint(ckpt.last_path)
    assert saved["per_rank"] == [{"mine": {"name": "a", "seen": 8}}]  # one entry per rank
    count = Counter()
    assert ckpt.restore({"mine": PerRank(count)})["missing"] == []
    assert count.seen == 8
    saved["per_rank"] = [saved["per_rank"][0]] * 2  # written by two processes
    save_atomic(saved, tmp_path / "two.pt")
    count = Counter()
    assert ckpt.restore({"mine": PerRank(count)}, tmp_path / "two.pt")["missing"] == ["mine"]
    assert count.seen == 0


def test_a_version_1_checkpoint_resumes(tmp_path):
    """Version 1 kept the vocabulary and the plateau scheduler in `extra`."""
    model = torch.nn.Linear(3, 2)
    old = capture_training_state(
        model=model, step=4, data_position={"epoch": 1, "batch": 3},
        extra={"count": {"name": "a", "seen": 5}, "best_val_loss": 2.0},
    )  # fmt: skip
    old.update(version=1, per_rank=[{"mems": [1, 2]}])
    save_atomic(old, tmp_path / "v1.pt")
    position, count, mems = DataPosition(), Counter(), Counter()
    mems.load_state_dict = lambda state: setattr(mems, "seen", state)
    states = {"count": count, "data_position": position, "mems": PerRank(mems)}
    state = Checkpointer(tmp_path).restore(states, tmp_path / "v1.pt")
    assert (position.epoch, position.batch, count.seen, mems.seen) == (1, 3, 5, [1, 2])
    assert state["extra"]["best_val_loss"] == 2.0


def weights(path):
    return read_checkpoint(path)["model"]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """2N steps in one go == N steps, SIGKILL, resume, the rest."""
    common = [
        "-m",
        "scripts.toolkit_check",
        "--steps",
        "60",
        "--save-every",
        "20",
        "--print-freq",
        "20",
        "--dropout",
        "0.2",
    ]
    run_python([*common, "--save-dir", tmp_path / "straight"])

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, *common, "--save-dir", str(killed_dir)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # kill as soon as the step-20 checkpoint is on disk
        if "saved checkpoint" in line and "(step 20)" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint(killed_dir / "checkpoint_last.pt")["step"] < 60

    out = run_python([*common, "--save-dir", killed_dir, "--resume"]).stdout
    assert "(step 60)" in out
    straight = weights(tmp_path / "straight" / "checkpoint_last.pt")
    resumed = weights(killed_dir / "checkpoint_last.pt")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path):
    common = [
        "-m",
        "scripts.toolkit_check",
        "--steps",
        "400",
        "--save-every",
        "1000",
        "--print-freq",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, *common, "--save-dir", str(tmp_path)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("step 5 "):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped at step" in out and "SIGTERM" in err
    stopped_at = read_checkpoint(tmp_path / "checkpoint_last.pt")["step"]
    assert 5 <= stopped_at < 400
    out = run_python(
        [*common, "--save-dir", tmp_path, "--resume", "--steps", str(stopped_at + 3)]
    ).stdout
    assert f"(step {stopped_at + 3})" in out
    assert os.path.exists(tmp_path / "checkpoint_best.pt")


@pytest.mark.slow
def test_two_processes_run_under_a_process_group_without_a_cpu_backend(tmp_path):
    """Like NCCL, the group refuses CPU tensors: the loop's loss reductions, pre-emption
    agreement and checkpoint RNG gathering must all use the backend's device."""
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(distributed.free_port()), "-m", "scripts.toolkit_check"]  # fmt: skip
    args = ["--steps", "6", "--save-every", "3", "--print-freq", "1", "--device", "cpu"]
    run_python([*launch, *args, "--save-dir", tmp_path], env_extra=nocpu_env())
    assert read_checkpoint(tmp_path / "checkpoint_last.pt")["step"] == 6
    logged = [r for r in read_dllogger(tmp_path / "log.json") if "loss" in r["data"]]
    assert [r["step"] for r in logged] == list(range(1, 7))


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    """The ranks agree on a stop signal every --print-freq steps (no per-step host sync):
    a SIGTERM that reaches one worker only still stops both at that agreement step, each
    saving its part."""
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(distributed.free_port()), "-m", "scripts.toolkit_check"]  # fmt: skip
    args = ["--steps", "100000", "--save-every", "100000", "--print-freq", "5", "--device",
            "cpu", "--save-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, *launch, *args], cwd=ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("step 5 "):
            break
    workers = sorted(int(c) for c in (Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                                      .read_text().split()))  # fmt: skip
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    stopped = read_checkpoint(tmp_path / "checkpoint_last.pt")
    assert stopped["step"] % 5 == 0 and stopped["step"] > 5
    assert set(re.findall(r"stopped at step (\d+);", out)) == {str(stopped["step"])}
    assert len(stopped["rng"]) == 2  # both ranks took part in the save


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2, is_main=True)
    ckpt.claim(resume=False, overwrite=False, outputs=[tmp_path / "log.json"])  # empty: fine
    ckpt.save(4, {"model": torch.nn.Linear(3, 2)}, is_best=True)
    (tmp_path / "log.json").write_text("old run\n")
    (tmp_path / "tb").mkdir()
    (tmp_path / "notes.txt").write_text("the user's own file\n")
    outputs = [tmp_path / "log.json", tmp_path / "tb"]
    with pytest.raises(RunFolderError) as refused:
        ckpt.claim(resume=False, overwrite=False, outputs=outputs)
    message = str(refused.value)
    assert str(tmp_path) in message and "checkpoint_last.pt" in message
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    ckpt.claim(resume=True, overwrite=False, outputs=outputs)  # resuming it: nothing goes
    assert ckpt.latest() is not None and (tmp_path / "log.json").is_file()
    ckpt.claim(resume=False, overwrite=True, outputs=outputs)  # starting over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
