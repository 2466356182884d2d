"""gnmt.train end to end on generated pairs: learning, checkpoints, exact resume, DDP."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import distributed
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from gnmt import data, prepare_data, toy_data, train
from gnmt.tokenizer import Tokenizer
from tests.helpers import nocpu_env

MERGES = 100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Generated pairs through the real preprocessing (Moses, cleaning, BPE, vocabulary)."""
    root = tmp_path_factory.mktemp("gnmt_train")
    raw = root / "raw"
    toy_data.generate(raw, train=192, dev=8, test=12, seed=3)
    prepare_data.prepare(
        train=raw / "train",
        dev=[raw / "dev"],
        test=raw / "test",
        out_dir=root / "data",
        merges=MERGES,
        workers=1,
    )
    return root / "data"


def flags(dataset, save_dir, *extra):
    return [
        "--dataset-dir",
        str(dataset),
        "--vocab",
        f"vocab.bpe.{MERGES}",
        "--bpe-codes",
        f"bpe.{MERGES}",
        "--train-src",
        f"train.tok.clean.bpe.{MERGES}.en",
        "--train-tgt",
        f"train.tok.clean.bpe.{MERGES}.de",
        "--test-src",
        f"test.tok.bpe.{MERGES}.en",
        "--test-tgt",
        "test.de",
        "--save-dir",
        str(save_dir),
        "--math",
        "fp32",
        "--hidden-size",
        "16",
        "--train-batch-size",
        "16",
        "--warmup-steps",
        "2",
        "--print-freq",
        "2",
        "--test-batch-size",
        "8",
        "--max-length-test",
        "12",
        *extra,
    ]


@pytest.fixture(scope="module")
def steps_per_epoch(dataset):
    tok = Tokenizer.from_files(dataset / f"vocab.bpe.{MERGES}", None)
    pairs = data.load_parallel(
        dataset / f"train.tok.clean.bpe.{MERGES}.en",
        dataset / f"train.tok.clean.bpe.{MERGES}.de",
        tok,
        max_length=50,
    )
    return data.batches_per_epoch(pairs, 16, 1, max_length=50)


def final_record(save_dir):
    return [r["data"] for r in read_dllogger(save_dir / "log.json") if r.get("step") == []][-1]


def weights(path):
    return read_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_epochs_are_summarised_evaluated_and_checkpointed(
    dataset, steps_per_epoch, tmp_path, capsys
):
    assert train.main(flags(dataset, tmp_path, "--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert out.count("training time for epoch") == 2
    assert "sent/sec" in out and "tokens/sec" in out
    assert out.count("test BLEU after epoch") == 2
    final = final_record(tmp_path)
    assert final["stop"] == "epochs"
    assert final["steps"] == 2 * steps_per_epoch
    assert (tmp_path / "model_last.pth").is_file() and (tmp_path / "model_best.pth").is_file()
    losses = [
        r["data"]["nll/tok"]
        for r in read_dllogger(tmp_path / "log.json")
        if "nll/tok" in r.get("data", {})
    ]
    assert losses[-1] < losses[0]


def test_target_bleu_stops_after_the_first_evaluation(dataset, steps_per_epoch, tmp_path):
    assert train.main(flags(dataset, tmp_path, "--epochs", "3", "--target-bleu", "0")) == 0
    final = final_record(tmp_path)
    assert final["stop"] == "target_bleu"
    assert final["steps"] == steps_per_epoch


def test_resume_across_an_epoch_boundary_gives_identical_weights(
    dataset, steps_per_epoch, tmp_path
):
    common = ["--epochs", "3", "--no-eval", "--save-freq", "100"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(flags(dataset, straight, *common)) == 0
    stop = steps_per_epoch + 3
    assert train.main(flags(dataset, split, *common, "--max-steps", str(stop))) == 0
    position = read_checkpoint(split / "model_last.pth")["data_position"]
    assert position == {"epoch": 1, "batch": 3}
    assert train.main(flags(dataset, split, *common, "--resume")) == 0
    assert final_record(split)["steps"] == 3 * steps_per_epoch
    assert_same_weights(weights(straight / "model_last.pth"), weights(split / "model_last.pth"))


def test_resume_with_another_vocabulary_is_refused(dataset, tmp_path, capsys):
    assert train.main(flags(dataset, tmp_path, "--max-steps", "2", "--no-eval")) == 0
    other = tmp_path / "other"
    other.mkdir()
    for f in dataset.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    vocab = (other / f"vocab.bpe.{MERGES}").read_text().splitlines()
    vocab[0], vocab[1] = vocab[1], vocab[0]
    (other / f"vocab.bpe.{MERGES}").write_text("\n".join(vocab) + "\n")
    assert train.main(flags(other, tmp_path, "--resume", "--no-eval")) == 1
    assert "another vocabulary" in capsys.readouterr().err


def test_resume_with_settings_that_break_exact_resume_is_refused(dataset, tmp_path, capsys):
    assert train.main(flags(dataset, tmp_path, "--max-steps", "2", "--no-eval")) == 0
    args = flags(dataset, tmp_path, "--resume", "--no-eval", "--epochs", "7")
    args[args.index("--train-batch-size") + 1] = "4"
    assert train.main([*args, "--decoder-dropout", "inputs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint ") and "model_last.pth" in err
    assert "--train-batch-size 16 -> 4" in err and "--epochs 6 -> 7" in err
    assert "--decoder-dropout 'outputs' -> 'inputs'" in err
    assert len(err.splitlines()) == 1


def test_missing_training_file_is_a_one_line_error(dataset, tmp_path, capsys):
    args = flags(dataset, tmp_path, "--no-eval")
    args[args.index("--train-src") + 1] = "nowhere.en"
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert "nowhere.en: no such file" in err and "Traceback" not in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # a failed start leaves no log
    args[args.index("--train-src") + 1] = f"train.tok.clean.bpe.{MERGES}.en"
    assert train.main([*args, "--max-steps", "1"]) == 0  # so the corrected run may start


def run_train(args, env=None, **kw):
    env = env or {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, **kw)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(dataset, tmp_path):
    """Under a process group without a CPU backend (as NCCL), logging every step and
    scoring BLEU: every collective of the loop must use the backend's device."""
    common = ["--epochs", "1", "--max-steps", "3", "--dropout", "0", "--print-freq", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train.main(flags(dataset, one, *common)) == 0
    launch = [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(distributed.free_port()),
        "-m",
        "gnmt.train",
    ]
    args = flags(dataset, two, *common)
    args[args.index("--train-batch-size") + 1] = "8"
    proc = run_train(
        [*launch, *args], env=nocpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    assert "test BLEU after epoch 1" in out
    a, b = weights(one / "model_last.pth"), weights(two / "model_last.pth")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(dataset, tmp_path):
    common = ["--epochs", "10", "--no-eval", "--save-freq", "4"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train.main(flags(dataset, straight, *common)) == 0
    proc = run_train(
        ["-m", "gnmt.train", *flags(dataset, killed, *common)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "model_step00000008.pth").exists() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert train.main(flags(dataset, killed, *common, "--resume")) == 0
    assert_same_weights(weights(straight / "model_last.pth"), weights(killed / "model_last.pth"))


def test_a_new_run_in_a_folder_holding_one_is_refused_unless_started_over(
    dataset, tmp_path, capsys
):
    common = ["--max-steps", "2", "--no-eval", "--keep-checkpoints", "1"]
    assert train.main(flags(dataset, tmp_path, *common)) == 0
    before = weights(tmp_path / "model_last.pth")
    assert train.main(flags(dataset, tmp_path, *common, "--seed", "7")) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path} holds another run" in err and "model_last.pth" in err
    assert_same_weights(before, weights(tmp_path / "model_last.pth"))  # untouched
    assert train.main(flags(dataset, tmp_path, *common, "--seed", "7", "--overwrite")) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["log.json", "model_last.pth", "model_step00000002.pth"]  # no old best
    params = [r for r in read_dllogger(tmp_path / "log.json") if r["step"] == "PARAMETER"]
    assert len(params) == 1 and params[0]["data"]["seed"] == 7  # the old log went too
