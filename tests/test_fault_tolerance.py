"""No failure costs more than the last checkpoint, for every model's training script:

- SIGKILL of a worker of a 2-process torchrun job: `--max-restarts` restarts the workers,
  they resume from the last checkpoint, and the run ends with the weights of an
  uninterrupted run;
- repeated SIGKILLs at random moments of a run that checkpoints every step (so some hit
  a checkpoint being written): the last checkpoint always loads, and the resumed run
  ends with the uninterrupted run's weights;
- a full disk while saving: a one-line error, and the previous checkpoint still loads.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bert.pretraining_data import synthetic_shards, synthetic_vocab
from common import distributed
from common.checkpoint import read_checkpoint
from gnmt import prepare_data, toy_data
from tests.helpers import ROOT, clean_env
from transformer_xl import toy_data as txl_toy_data

pytestmark = pytest.mark.slow


@dataclass
class Recipe:
    module: str
    last: str  # file name of the last checkpoint in the output folder

    def args(self, data: Path, out: Path, save_every: int, steps: int) -> list[str]:
        raise NotImplementedError


class GNMT(Recipe):
    def args(self, data, out, save_every, steps):
        return [
            "--dataset-dir", str(data), "--vocab", "vocab.bpe.50", "--bpe-codes", "bpe.50",
            "--train-src", "train.tok.clean.bpe.50.en", "--train-tgt",
            "train.tok.clean.bpe.50.de", "--save-dir", str(out), "--math", "fp32",
            "--hidden-size", "16", "--train-batch-size", "8", "--no-eval",
            "--save-freq", str(save_every), "--max-steps", str(steps), "--epochs", "50",
            "--resume", "--device", "cpu",
        ]  # fmt: skip

    @staticmethod
    def prepare(root: Path) -> Path:
        toy_data.generate(root / "raw", train=160, dev=8, test=8, seed=5)
        raw = root / "raw"
        prepare_data.prepare(raw / "train", [raw / "dev"], raw / "test", root / "data", merges=50)
        return root / "data"


class TransformerXL(Recipe):
    def args(self, data, out, save_every, steps):
        return [
            "--config_file", "", "--data", str(data), "--work_dir", str(out),
            "--precision", "fp32", "--n_layer", "2", "--d_model", "16", "--n_head", "2",
            "--d_head", "8", "--d_inner", "32", "--dropout", "0.1", "--tgt_len", "8",
            "--mem_len", "8", "--batch_size", "4", "--optim", "lamb", "--lr", "0.05",
            "--warmup_step", "2", "--max_step_scheduler", "400", "--no_eval",
            "--save_interval", str(save_every), "--max_step", str(steps), "--resume",
            "--device", "cpu", "--log_interval", "5",
        ]  # fmt: skip

    @staticmethod
    def prepare(root: Path) -> Path:
        txl_toy_data.generate(root / "corpus", articles=40, seed=6)
        return root / "corpus"


class BertPretraining(Recipe):
    def args(self, data, out, save_every, steps):
        return [
            "--input_dir", str(data / "phase1"), "--output_dir", str(out), "--config_file",
            str(data / "tiny.json"), "--vocab_file", str(data / "vocab.txt"),
            "--max_seq_length", "32", "--max_predictions_per_seq", "5", "--train_batch_size",
            "8", "--learning_rate", "0.05", "--warmup_proportion", "0.1", "--max_steps",
            str(steps), "--decay_steps", "400", "--log_freq", "5", "--num_steps_per_checkpoint",
            str(save_every), "--keep_checkpoints", "2", "--resume_from_checkpoint",
            "--device", "cpu", "--precision", "fp32", "--disable_progress_bar",
            "--setup_file", "",
        ]  # fmt: skip

    @staticmethod
    def prepare(root: Path) -> Path:
        synthetic_shards(root / "phase1", num_shards=3, samples_per_shard=96, seq_length=32,
                         max_predictions=5, vocab_size=64)  # fmt: skip
        (root / "vocab.txt").write_text("\n".join(synthetic_vocab(64)) + "\n")
        config = {
            "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
        }  # fmt: skip
        (root / "tiny.json").write_text(json.dumps(config))
        return root


RECIPES = {
    "bert_pretraining": BertPretraining("bert.run_pretraining", "ckpt_last.pt"),
    "gnmt": GNMT("gnmt.train", "model_last.pth"),
    "transformer_xl": TransformerXL("transformer_xl.train", "checkpoint_last.pt"),
}


@pytest.fixture(scope="module", params=sorted(RECIPES))
def recipe(request, tmp_path_factory):
    r = RECIPES[request.param]
    return r, type(r).prepare(tmp_path_factory.mktemp(request.param))


def launch(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=clean_env(), **kw)


def torchrun(module: str, args: list[str], restarts: int = 0) -> list[str]:
    return [
        "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts",
        str(restarts), "--master_port", str(distributed.free_port()), "-m", module, *args,
    ]  # fmt: skip


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def assert_same(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def test_killed_ddp_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(recipe, tmp_path):
    r, data = recipe
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = launch(torchrun(r.module, r.args(data, straight, 3, 12)), stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT)  # fmt: skip
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out

    proc = launch(torchrun(r.module, r.args(data, killed, 3, 12), restarts=1),
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.time() + 180
    while not (killed / r.last).exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    assert_same(straight / r.last, killed / r.last)


def test_random_kills_never_leave_a_broken_checkpoint(recipe, tmp_path):
    r, data = recipe
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = r.args(data, straight, 1, 40)
    assert launch(["-m", r.module, *args], stdout=subprocess.DEVNULL).wait(timeout=300) == 0
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = launch(["-m", r.module, *r.args(data, killed, 1, 40)], stdout=subprocess.DEVNULL)
        deadline = time.time() + 180
        while not (killed / r.last).exists() and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the steps and their saves
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert read_checkpoint(killed / r.last)["step"] >= 1  # the last one always loads
    assert kills >= 1
    assert launch(["-m", r.module, *r.args(data, killed, 1, 40)]).wait(timeout=300) == 0
    assert_same(straight / r.last, killed / r.last)


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB filesystem (tmpfs) that the run's checkpoints overflow."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(recipe, small_disk):
    r, data = recipe
    filler = small_disk / "filler"
    out = small_disk / "run"
    proc = launch(["-m", r.module, *r.args(data, out, 2, 400)], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 180
    while not (out / r.last).exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1].decode()
        time.sleep(0.01)
    # Fill the disk once the first checkpoint is in place.
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"\0" * (1 << 16))
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    stdout, stderr = proc.communicate(timeout=300)
    err = stderr.decode()
    assert proc.returncode == 1, err
    # The next checkpoint (or log line) cannot be written: one line says so.
    assert err.startswith("error: ") and "No space left on device" in err, err
    assert "Traceback" not in err
    assert read_checkpoint(out / r.last)["step"] >= 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_saves_exits_cleanly_and_the_rerun_ends_as_if_uninterrupted(
    recipe, signum, tmp_path
):
    """SIGTERM is what SLURM sends before pre-emption or the time limit; Ctrl-C (SIGINT)
    is treated alike: the step finishes, a checkpoint is written, the process exits with
    0 and says how to continue; run again, it continues exactly."""
    r, data = recipe
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # Checkpoints only at the end or on the signal: the one SIGTERM writes is the one used.
    assert launch(["-m", r.module, *r.args(data, straight, 1000, 60)],
                  stdout=subprocess.DEVNULL).wait(timeout=300) == 0  # fmt: skip
    proc = launch(["-m", r.module, *r.args(data, stopped, 1000, 60)], stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT)  # fmt: skip
    lines = []
    while not any("loss" in line for line in lines):  # the first progress line
        line = proc.stdout.readline().decode()
        assert line, "".join(lines)
        lines.append(line)
    proc.send_signal(signum)
    out = "".join(lines) + proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    assert f"received {signal.Signals(signum).name}" in out
    assert "; continue with --resume" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    step = read_checkpoint(stopped / r.last)["step"]
    assert 0 < step < 60, out
    assert launch(["-m", r.module, *r.args(data, stopped, 1000, 60)],
                  stdout=subprocess.DEVNULL).wait(timeout=300) == 0  # fmt: skip
    assert_same(straight / r.last, stopped / r.last)


KILL_DURING_SAVE = """
import sys, time, torch
from common.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep_last=2)
model = torch.nn.Linear(2, 2)
torch.nn.init.ones_(model.weight)
ckpt.save(1, {"model": model})
real_save = torch.save
def slow_save(obj, f, *a, **k):
    f.write(b"PK\\x03\\x04 half of a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
torch.save = slow_save
torch.nn.init.zeros_(model.weight)
ckpt.save(2, {"model": model})
"""


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path):
    proc = launch(["-c", KILL_DURING_SAVE, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().decode().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from common.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path, keep_last=2)
    assert ckpt.latest() == tmp_path / "checkpoint_last.pt"
    state = read_checkpoint(ckpt.latest())
    assert state["step"] == 1 and torch.equal(state["model"]["weight"], torch.ones(2, 2))
    assert not (tmp_path / "checkpoint_step00000002.pt").exists()  # never at a final name
