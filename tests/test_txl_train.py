"""transformer_xl.train and eval end to end on generated articles: learning, logs,
checkpoints, exact resume (memories included), DDP, evaluation options."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import distributed
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from tests.helpers import nocpu_env
from transformer_xl import eval as txl_eval
from transformer_xl import toy_data, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("txl_corpus")
    toy_data.generate(root, articles=60, seed=2)
    return root


def flags(corpus, work_dir, *extra):
    return [
        "--config_file", "", "--data", str(corpus), "--dataset", "wt103",
        "--work_dir", str(work_dir), "--precision", "fp32",
        "--n_layer", "2", "--d_model", "16", "--n_head", "2", "--d_head", "8",
        "--d_inner", "32", "--dropout", "0.1", "--dropatt", "0.1",
        "--optim", "lamb", "--lr", "0.05", "--warmup_step", "2", "--eta_min", "0.001",
        "--tgt_len", "8", "--mem_len", "8", "--eval_tgt_len", "8",
        "--batch_size", "4", "--eval_batch_size", "4", "--eval_max_steps", "5",
        "--log_interval", "2", "--eval_interval", "6", "--max_step", "12",
        *extra,
    ]  # fmt: skip


def final(work_dir):
    return [r["data"] for r in read_dllogger(work_dir / "train_log.json") if r["step"] == []][-1]


def same_weights(a, b):
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_logs_evaluates_checkpoints_and_tests(corpus, tmp_path, capsys):
    assert train.main(flags(corpus, tmp_path)) == 0
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("| epoch")]
    assert len(progress) == 6  # every 2 of 12 steps
    assert "| batches" in progress[0] and "ms/batch" in progress[0] and "ppl" in progress[0]
    assert out.count("| Eval") == 2 and "valid ppl" in out
    assert "| End of training | test loss" in out
    assert "Training throughput:" in out and "Training time:" in out
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "train_log.log"):
        assert (tmp_path / name).is_file(), name
    # the memories are in the checkpoint itself, one entry per rank: no side files
    [part] = read_checkpoint(tmp_path / "checkpoint_last.pt")["per_rank"]
    chunks = part["mems"]["chunks"]
    assert len(chunks) == 1 and len(chunks[0]) == 2  # batch chunks x layers
    assert not list(tmp_path.glob("mems_*"))
    summary = final(tmp_path)
    assert summary["steps"] == 12 and summary["passed"] is True
    assert summary["test_ppl"] == pytest.approx(2.718281828 ** summary["test_loss"], rel=1e-6)


def test_short_training_lowers_validation_loss(corpus, tmp_path):
    args = flags(corpus, tmp_path, "--max_step", "40", "--eval_interval", "20")
    assert train.main(args) == 0
    valid = [
        r["data"]["valid_loss"]
        for r in read_dllogger(tmp_path / "train_log.json")
        if "valid_loss" in r.get("data", {}) and r["step"] != []
    ]
    assert len(valid) == 2 and valid[1] < valid[0]


def test_resume_with_memories_gives_identical_weights(corpus, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # --max_step_scheduler keeps the stopped run's schedule that of the 12-step run.
    common = ["--no_eval", "--save_interval", "5", "--max_step_scheduler", "12", "--max_step", "12"]
    assert train.main(flags(corpus, straight, *common)) == 0
    assert train.main(flags(corpus, split, *common[:-1], "7")) == 0
    assert read_checkpoint(split / "checkpoint_last.pt")["step"] == 7
    assert train.main(flags(corpus, split, *common, "--resume")) == 0
    same_weights(straight / "checkpoint_last.pt", split / "checkpoint_last.pt")


def test_gradient_accumulation_matches_the_whole_batch_without_dropout(corpus, tmp_path):
    common = ["--no_eval", "--dropout", "0", "--dropatt", "0", "--max_step", "3"]
    assert train.main(flags(corpus, tmp_path / "whole", *common)) == 0
    assert train.main(flags(corpus, tmp_path / "chunks", *common, "--batch_chunk", "2")) == 0
    a = read_checkpoint(tmp_path / "whole" / "checkpoint_last.pt")["model"]
    b = read_checkpoint(tmp_path / "chunks" / "checkpoint_last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_resume_refuses_another_vocabulary(corpus, tmp_path, capsys):
    assert train.main(flags(corpus, tmp_path, "--no_eval", "--max_step", "3")) == 0
    other = tmp_path / "other"
    toy_data.generate(other, articles=60, seed=2)
    extra = " brand new words here\n" * 50  # the same text plus symbols the run never saw
    (other / "train.txt").write_text((corpus / "train.txt").read_text() + extra)
    assert train.main(flags(other, tmp_path, "--no_eval", "--resume")) == 1
    assert "another vocabulary" in capsys.readouterr().err


def test_missing_corpus_is_a_one_line_error(tmp_path, capsys):
    assert train.main(flags(tmp_path / "nowhere", tmp_path / "w")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # a failed start leaves no empty log behind


def test_unknown_config_is_a_one_line_error(corpus, tmp_path, capsys):
    args = flags(corpus, tmp_path)
    args[args.index("--config_file") + 1] = os.path.join(
        ROOT, "transformer_xl", "configs", "wt103_base.yaml"
    )
    assert train.main([*args, "--config", "dgx9_1gpu_fp16"]) == 1
    assert "no config named 'dgx9_1gpu_fp16'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("txl_trained")
    assert train.main(flags(corpus, work, "--max_step", "30", "--eval_interval", "10")) == 0
    return work


def eval_flags(corpus, trained, *extra):
    return [
        "--config_file", "", "--model", str(trained / "checkpoint_best.pt"), "--data",
        str(corpus), "--work_dir", str(trained / "eval"), "--batch_size", "4",
        "--tgt_len", "8", "--mem_len", "16", "--clamp_len", "12", "--log_interval", "0",
        "--precision", "fp32", *extra,
    ]  # fmt: skip


def test_eval_prints_the_summary_and_saves_latencies(corpus, trained, capsys):
    assert txl_eval.main(eval_flags(corpus, trained, "--split", "test", "--save_data")) == 0
    out = capsys.readouterr().out
    assert "Evaluating with math fp32 type pytorch bsz 4 tgt_len 8" in out
    for text in ("| test loss", "test ppl", "Throughput Avg:", "Latency Avg:", "Latency 99%:"):
        assert text in out, text
    saved = json.loads((trained / "eval" / "eval_data_test.json").read_text())
    assert len(saved["latencies_s"]) > 0 and saved["tokens/s"] > 0


def test_eval_torchscript_and_repeat_give_the_same_loss(corpus, trained):
    def loss(*extra):
        assert txl_eval.main(eval_flags(corpus, trained, "--split", "valid", *extra)) == 0
        records = read_dllogger(trained / "eval" / "eval_log.json")
        return [r["data"]["loss"] for r in records if r["step"] == ["valid"]][-1]

    eager = loss()
    assert loss("--type", "torchscript") == pytest.approx(eager, rel=1e-5)
    assert loss("--repeat", "2") == pytest.approx(eager, rel=1e-9)
    assert loss("--max_size", "2") != pytest.approx(eager, rel=1e-9)


def test_saved_torchscript_module_loads_and_scores_the_same(corpus, trained, tmp_path):
    def loss(*extra):
        assert txl_eval.main(eval_flags(corpus, trained, "--split", "valid", *extra)) == 0
        records = read_dllogger(trained / "eval" / "eval_log.json")
        return [r["data"]["loss"] for r in records if r["step"] == ["valid"]][-1]

    path = tmp_path / "txl.pt"
    traced = loss("--type", "torchscript", "--save_torchscript", str(path))
    assert path.is_file()
    assert loss("--type", "torchscript", "--load_torchscript", str(path)) == traced


@pytest.mark.slow
def test_two_process_evaluation_averages_over_the_whole_batch(corpus, trained):
    args = eval_flags(corpus, trained, "--split", "valid")
    assert txl_eval.main(args) == 0
    one = [
        r["data"]["loss"]
        for r in read_dllogger(trained / "eval" / "eval_log.json")
        if r["step"] == ["valid"]
    ][-1]
    args[args.index("--work_dir") + 1] = str(trained / "eval2")
    launch = [
        "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(distributed.free_port()), "-m", "transformer_xl.eval",
    ]  # fmt: skip
    proc = run_module([*launch, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    two = [
        r["data"]["loss"]
        for r in read_dllogger(trained / "eval2" / "eval_log.json")
        if r["step"] == ["valid"]
    ][-1]
    assert two == pytest.approx(one, rel=1e-6)


def test_eval_bf16_is_close_to_fp32(corpus, trained):
    def loss(math):
        args = eval_flags(corpus, trained, "--split", "valid")
        args[args.index("--precision") + 1] = math
        assert txl_eval.main(args) == 0
        records = read_dllogger(trained / "eval" / "eval_log.json")
        return [r["data"]["loss"] for r in records if r["step"] == ["valid"]][-1]

    assert loss("bf16") == pytest.approx(loss("fp32"), rel=2e-2)


def test_manual_text_is_scored_and_all_unknown_text_refused(corpus, trained, capsys):
    args = eval_flags(corpus, trained, "--manual", "Anna", "Berg", "was", "a", "poet", ".")
    assert txl_eval.main(args) == 0
    assert "| manual text | tokens 6 | loss" in capsys.readouterr().out
    args = eval_flags(corpus, trained, "--manual", "zzqx", "qqzx")
    assert txl_eval.main(args) == 1
    assert "unknown" in capsys.readouterr().err


def run_module(args, env=None, **kw):
    env = env or {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, **kw)


@pytest.mark.slow
def test_two_processes_train_like_one_without_dropout(corpus, tmp_path):
    """Under a process group without a CPU backend (as NCCL), logging every step and
    evaluating: every collective of the loop must use the backend's device."""
    common = ["--dropout", "0", "--dropatt", "0", "--max_step", "3", "--log_interval", "1"]
    common += ["--eval_interval", "3"]
    assert train.main(flags(corpus, tmp_path / "one", *common)) == 0
    launch = [
        "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(distributed.free_port()), "-m", "transformer_xl.train",
    ]  # fmt: skip
    proc = run_module(
        [*launch, *flags(corpus, tmp_path / "two", *common)],
        env=nocpu_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    a = read_checkpoint(tmp_path / "one" / "checkpoint_last.pt")["model"]
    b = read_checkpoint(tmp_path / "two" / "checkpoint_last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    parts = read_checkpoint(tmp_path / "two" / "checkpoint_last.pt")["per_rank"]
    assert (
        len(parts) == 2 and parts[0]["mems"]["chunks"][0][0].shape[1] == 2
    )  # each rank its streams


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(corpus, tmp_path):
    common = ["--no_eval", "--save_interval", "4", "--max_step", "200"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train.main(flags(corpus, straight, *common)) == 0
    proc = run_module(
        ["-m", "transformer_xl.train", *flags(corpus, killed, *common)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoint_last.pt").exists() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert train.main(flags(corpus, killed, *common, "--resume")) == 0
    same_weights(straight / "checkpoint_last.pt", killed / "checkpoint_last.pt")


def test_memories_come_from_the_checkpoint_or_the_side_file_of_earlier_versions(tmp_path):
    mems = [[torch.full((2, 1, 4), 3.0), torch.full((2, 1, 4), 4.0)]]
    memories = train.Memories(1, torch.device("cpu"))
    memories.load_state_dict({"chunks": mems})
    assert memories.restored and torch.equal(memories.chunks[0][1], mems[0][1])
    other = train.Memories(2, torch.device("cpu"))  # another --batch_chunk: stays empty
    other.load_state_dict(mems)  # as version 1 saved them
    assert not other.restored and other.chunks == [None, None]
    older = train.Memories(1, torch.device("cpu"))  # written before memories moved in
    assert not older.load_side_file(tmp_path, 7, rank=0)
    torch.save({"step": 7, "mems": mems}, tmp_path / "mems_rank0_step00000007.pt")
    assert older.load_side_file(tmp_path, 7, rank=0)
    assert torch.equal(older.chunks[0][0], mems[0][0])


def test_a_compiled_model_that_scores_otherwise_than_the_eager_one_is_refused():
    from transformer_xl import data as txl_data
    from transformer_xl.eval import Runner

    eager = torch.full((4, 2), 4.95)
    Runner.check_parity(eager + 1e-4, eager)  # rounding: accepted
    for wrong in (eager - 2.6, torch.full((4, 2), float("nan"))):
        with pytest.raises(txl_data.DataError, match="--type compile: .*use --type pytorch"):
            Runner.check_parity(wrong, eager)


def test_eval_reports_unknown_tokens_and_warns_when_the_text_is_foreign(
    corpus, trained, tmp_path, capsys
):
    assert txl_eval.main(eval_flags(corpus, trained, "--split", "test")) == 0
    captured = capsys.readouterr()
    known = re.search(
        r"test: (\d+\.\d\d)% of the tokens are unknown to the vocabulary", captured.out
    )
    assert known and float(known.group(1)) < 5 and "warning" not in captured.err
    other = tmp_path / "other"  # the same corpus with a test set in another language
    other.mkdir()
    for name in ("train.txt", "valid.txt"):
        (other / name).write_text((corpus / name).read_text())
    (other / "test.txt").write_text("der hund und die katze schlafen im haus\n" * 40)
    assert txl_eval.main(eval_flags(other, trained, "--split", "test")) == 0
    captured = capsys.readouterr()
    assert "test: 100.00% of the tokens are unknown" not in captured.out  # eos are known
    assert "warning: " in captured.err and f"is --data {other} the right corpus?" in captured.err
    rates = [
        r["data"]["unknown_rate"]
        for r in read_dllogger(trained / "eval" / "eval_log.json")
        if r["step"] == ["test"]
    ]
    assert rates[0] == pytest.approx(float(known.group(1)) / 100, abs=1e-4)
    assert rates[-1] == pytest.approx(8 / 9)  # 8 words and <eos> a line


def test_a_new_run_in_a_work_dir_holding_one_is_refused_unless_started_over(
    corpus, tmp_path, capsys
):
    args = flags(corpus, tmp_path, "--max_step", "4", "--eval_interval", "2")
    assert train.main(args) == 0
    best = read_checkpoint(tmp_path / "checkpoint_best.pt")["model"]
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path} holds another run" in err and "--resume" in err
    for k, v in read_checkpoint(tmp_path / "checkpoint_best.pt")["model"].items():
        assert torch.equal(v, best[k]), k  # the first run's best model is kept
    assert train.main([*args, "--overwrite", "--seed", "3"]) == 0
    assert (tmp_path / "train_log.log").read_text().count("Transformer-XL:") == 1


def test_threads_default_to_the_cores_shared_among_the_local_processes(monkeypatch):
    from common import cli

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    before = torch.get_num_threads()
    try:
        assert cli.set_threads(None, local_processes=3) == 2
        assert torch.get_num_threads() == 2
        assert cli.set_threads(None, local_processes=16) == 1  # never 0
        assert cli.set_threads(5) == 5 and torch.get_num_threads() == 5
    finally:
        torch.set_num_threads(before)
