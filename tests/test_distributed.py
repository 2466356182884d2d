"""Launch detection (torchrun, srun, single) and DDP gradients equal to one process."""

import json
import subprocess
import sys

import pytest
import torch

from common import distributed
from common.distributed import expand_nodelist, free_port, launch_info
from tests.helpers import ROOT, clean_env, nocpu_env, run_python


def test_expand_nodelist():
    assert expand_nodelist("node1") == ["node1"]
    assert expand_nodelist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert expand_nodelist("a[8-10]-ib") == ["a8-ib", "a9-ib", "a10-ib"]


def test_single_process_without_launcher_variables():
    info = launch_info({})
    assert (info["launcher"], info["rank"], info["world_size"]) == ("single", 0, 1)


def test_torchrun_variables():
    env = {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "1234",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_ID": "0",
    }
    info = launch_info(env)  # torchrun inside a SLURM job: torchrun's variables win
    assert info == {
        "launcher": "torchrun",
        "rank": 5,
        "world_size": 8,
        "local_rank": 1,
        "local_world_size": 4,
        "master_addr": "10.0.0.1",
        "master_port": 1234,
    }


def test_srun_variables_multi_node():
    env = {
        "SLURM_PROCID": "6",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "2",
        "SLURM_STEP_ID": "0",
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_NODELIST": "dgx[07-08]",
        "SLURM_LAUNCH_NODE_IPADDR": "10.1.1.1",
        "SLURM_JOB_ID": "123456",
    }
    info = launch_info(env)
    assert info == {
        "launcher": "slurm",
        "rank": 6,
        "world_size": 8,
        "local_rank": 2,
        "local_world_size": 4,
        "master_addr": "dgx07",
        "master_port": 20000 + 123456 % 20000,
    }


def test_srun_single_node_uses_launch_node_address_and_uneven_tasks():
    env = {
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "3",
        "SLURM_STEP_ID": "1",
        "SLURM_NNODES": "1",
        "SLURM_TASKS_PER_NODE": "3",
        "SLURM_LAUNCH_NODE_IPADDR": "192.0.2.5",
        "SLURM_NODELIST": "n1",
        "MASTER_PORT": "4000",
    }
    info = launch_info(env)
    assert (info["master_addr"], info["master_port"], info["local_world_size"]) == (
        "192.0.2.5",
        4000,
        3,
    )


def test_slurm_batch_script_without_srun_is_single_process():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_NODELIST": "dgx[01-02]"}
    assert launch_info(env)["launcher"] == "single"


def load_grads(out, rank, world):
    return torch.load(out / f"grads_rank{rank}_of{world}.pt", weights_only=True)


def assert_same_gradients(a, b):
    assert a.keys() == b.keys()
    for name in a:
        # Float64 and only the summation order differs between 1 and 2 processes.
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_give_single_process_gradients(tmp_path):
    run_python(["-m", "tests.ddp_grad_worker", tmp_path])
    run_python(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            "-m",
            "tests.ddp_grad_worker",
            tmp_path,
        ]
    )
    single = load_grads(tmp_path, 0, 1)
    for rank in (0, 1):
        assert_same_gradients(load_grads(tmp_path, rank, 2), single)
        info = json.loads((tmp_path / f"info_rank{rank}_of2.json").read_text())
        assert info["launcher"] == "torchrun" and info["backend"] == "gloo"
        assert info["mean_of_ranks"] == 0.5 and info["broadcast"] == {"from": 0}


@pytest.mark.slow
def test_two_torchrun_nodes_with_c10d_rendezvous_give_single_process_gradients(tmp_path):
    """Multi-node launch, two "nodes" on this machine: one torchrun per node, meeting
    through the c10d rendezvous as on a cluster."""
    run_python(["-m", "tests.ddp_grad_worker", tmp_path])
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                endpoint, "--rdzv-id", "two-nodes", "-m", "tests.ddp_grad_worker",
                str(tmp_path),
            ],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]  # fmt: skip
    for node in nodes:
        out = node.communicate(timeout=300)[0].decode()
        assert node.returncode == 0, out
    single = load_grads(tmp_path, 0, 1)
    for rank in (0, 1):
        assert_same_gradients(load_grads(tmp_path, rank, 2), single)
        info = json.loads((tmp_path / f"info_rank{rank}_of2.json").read_text())
        assert info["launcher"] == "torchrun"


@pytest.mark.slow
def test_two_processes_from_srun_variables_give_single_process_gradients(tmp_path):
    run_python(["-m", "tests.ddp_grad_worker", tmp_path])
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = clean_env(
            {
                "SLURM_PROCID": str(rank),
                "SLURM_NTASKS": "2",
                "SLURM_LOCALID": str(rank),
                "SLURM_STEP_ID": "0",
                "SLURM_NNODES": "1",
                "SLURM_NODELIST": "localhost",
                "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1",
                "SLURM_TASKS_PER_NODE": "2",
                "MASTER_PORT": port,
            }
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.ddp_grad_worker", str(tmp_path)],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    single = load_grads(tmp_path, 0, 1)
    for rank in (0, 1):
        assert_same_gradients(load_grads(tmp_path, rank, 2), single)
        info = json.loads((tmp_path / f"info_rank{rank}_of2.json").read_text())
        assert (info["launcher"], info["rank"], info["world_size"]) == ("slurm", rank, 2)


def test_communication_device_follows_the_backend():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 3)
    assert distributed.pick_comm_device("gloo", cpu) == cpu
    assert distributed.pick_comm_device("nccl", gpu) == gpu
    assert distributed.pick_comm_device("cpu:gloo,cuda:nccl", gpu) == gpu
    assert distributed.served_device_types("cpu:gloo,cuda:nccl") == ["cpu", "cuda"]
    assert distributed.served_device_types("nccl") == ["cuda"]


def test_reductions_take_numbers_and_tensors_without_a_process_group():
    assert distributed.all_reduce_sum(3).tolist() == 3.0
    assert distributed.all_reduce_mean([1, 2]).dtype == torch.float64
    t = torch.tensor([1.5], dtype=torch.float32)
    out = distributed.all_reduce_max(t)
    assert out.dtype == torch.float32 and out is not t and torch.equal(out, t)
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]


def test_only_common_distributed_calls_torch_distributed():
    """Every collective goes through common.distributed, which places its tensors."""
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in ("tests", ".git") or path.name == "distributed.py":
            continue
        text = path.read_text()
        for needle in ("import torch.distributed as", "from torch import distributed",
                       "torch.distributed.all_", "torch.distributed.broadcast",
                       "torch.distributed.barrier", "torch.distributed.reduce"):  # fmt: skip
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


NOCPU_PROBE = """
import torch
from common import distributed
env = distributed.init_distributed("cpu")
assert distributed.comm_device().type == "lazy"
total = distributed.all_reduce_sum([env.rank + 1, 1]).tolist()
assert total == [3.0, 2.0], total
objects = distributed.all_gather_object({"rank": env.rank})
assert objects == [{"rank": 0}, {"rank": 1}], objects
torch.distributed.all_reduce(torch.ones(1))  # what NCCL refuses
"""


@pytest.mark.slow
def test_the_group_without_a_cpu_backend_refuses_cpu_tensors_like_nccl(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(NOCPU_PROBE)
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--master_port", str(distributed.free_port()), str(script)]  # fmt: skip
    proc = run_python(launch, env_extra=nocpu_env(), check=False)
    assert proc.returncode != 0
    assert "No backend type associated with device type cpu" in proc.stdout + proc.stderr
    assert "AssertionError" not in proc.stdout + proc.stderr
