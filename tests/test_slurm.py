"""Each model's run.sub as a two-task CPU job through sbatch on a real one-node cluster."""

import re
import subprocess
import time

import pytest
import torch

from common.checkpoint import read_checkpoint
from gnmt import prepare_data, toy_data
from tests.slurm_cluster import SlurmCluster
from transformer_xl import toy_data as txl_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


TWO_TASKS = ["-N", "1", "--ntasks-per-node", "2", "--time", "10"]


def test_gnmt_run_sub_trains_with_two_tasks(cluster, tmp_path):
    raw = tmp_path / "raw"
    toy_data.generate(raw, train=128, dev=8, test=8, seed=3)
    prepare_data.prepare(
        raw / "train", [raw / "dev"], raw / "test", tmp_path / "data", merges=50, workers=1
    )
    extra = (
        "--vocab vocab.bpe.50 --bpe-codes bpe.50 --train-src train.tok.clean.bpe.50.en "
        "--train-tgt train.tok.clean.bpe.50.de --hidden-size 16 --max-steps 3 --no-eval "
        "--device cpu --print-freq 1"
    )
    code, out = cluster.sbatch(
        [*TWO_TASKS, "gnmt/scripts/run.sub"],
        DATASET_DIR=str(tmp_path / "data"),
        RESULTS=str(tmp_path / "results"),
        MATH="fp32",
        BATCH="8",
        GLOBAL_BATCH="16",
        EXTRA_ARGS=extra,
    )
    assert code == 0, out
    assert "world_size 2" in out
    assert read_checkpoint(tmp_path / "results" / "model_last.pth")["step"] == 3


def txl_job(cluster, tmp_path, max_step, *flags, **env):
    extra = (
        "--n_layer 2 --d_model 16 --n_head 2 --d_head 8 --d_inner 32 --tgt_len 8 --mem_len 8 "
        "--eval_tgt_len 8 --batch_size 4 --eval_batch_size 4 --eval_max_steps 3 --lr 0.05 "
        f"--warmup_step 2 --max_step {max_step} --max_step_scheduler 400 --eval_interval 4 "
        "--log_interval 1 --precision fp32 --device cpu"
    )
    return cluster.sbatch(
        [*TWO_TASKS, *flags, "transformer_xl/scripts/run.sub", "train"],
        RECIPE="wt103_base",
        CONFIG="default",
        DATA=str(tmp_path / "corpus"),
        WORK_DIR=str(tmp_path / "work"),
        EXTRA_ARGS=extra,
        **env,
    )


def test_transformer_xl_run_sub_trains_with_two_tasks(cluster, tmp_path):
    txl_toy_data.generate(tmp_path / "corpus", articles=40, seed=4)
    code, out = txl_job(cluster, tmp_path, 8)
    assert code == 0, out
    assert "| Eval" in out and "| End of training | test loss" in out
    state = read_checkpoint(tmp_path / "work" / "checkpoint_last.pt")
    assert state["step"] == 8 and len(state["per_rank"]) == 2  # both tasks' memories


def test_preempted_job_saves_and_the_resubmitted_job_continues(cluster, tmp_path):
    """SIGTERM (what SLURM sends before pre-emption or the time limit) stops training at
    the end of a step with a checkpoint; the job submitted again resumes from it."""
    txl_toy_data.generate(tmp_path / "corpus", articles=40, seed=5)
    work = tmp_path / "work"
    first_out = tmp_path / "first.out"
    job_id = cluster.submit(
        [*TWO_TASKS, "transformer_xl/scripts/run.sub", "train"],
        first_out,
        RECIPE="wt103_base",
        CONFIG="default",
        DATA=str(tmp_path / "corpus"),
        WORK_DIR=str(work),
        EXTRA_ARGS=(
            "--n_layer 2 --d_model 16 --n_head 2 --d_head 8 --d_inner 32 --tgt_len 8 "
            "--mem_len 8 --eval_tgt_len 8 --batch_size 4 --eval_batch_size 4 "
            "--eval_max_steps 3 --lr 0.05 --warmup_step 2 --max_step 100000 "
            "--max_step_scheduler 400 --eval_interval 100000 --save_interval 100000 "
            "--log_interval 1 --precision fp32 --device cpu --no_eval"
        ),
    )
    deadline = time.time() + 120
    while "step       20 " not in (first_out.read_text() if first_out.exists() else ""):
        assert time.time() < deadline, first_out.read_text() if first_out.exists() else ""
        time.sleep(0.2)
    # To the job steps (the training processes), as SLURM does before the time limit.
    subprocess.run(["scancel", "--signal", "TERM", job_id], env=cluster.env, check=True)
    deadline = time.time() + 120
    assert cluster.wait(job_id) == 0, first_out.read_text()
    assert "; continue with --resume" in first_out.read_text()
    stopped_at = read_checkpoint(work / "checkpoint_last.pt")["step"]
    assert stopped_at >= 20
    logged = [int(m) for m in re.findall(r"step +(\d+) \|", first_out.read_text())]
    assert max(logged) == stopped_at  # the checkpoint holds the last step trained

    code, out = txl_job(cluster, tmp_path, stopped_at + 4)
    assert code == 0, out
    assert f"resumed at step {stopped_at}" in out
    assert read_checkpoint(work / "checkpoint_last.pt")["step"] == stopped_at + 4
    weights = read_checkpoint(work / "checkpoint_last.pt")["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
