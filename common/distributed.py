"""One entry point for single-process, torchrun and SLURM (srun) launches.

    env = init_distributed()            # reads torchrun's or SLURM's variables, or neither
    model = wrap_ddp(model.to(env.device), env)
    with no_sync(model, enabled=micro_step < accumulation - 1):
        prec.backward(loss)
    ...
    cleanup()

NCCL is used on CUDA and gloo on the CPU (the environment variable
LM_RECIPES_DIST_BACKEND names another, such as "mpi" or "cpu:gloo,cuda:nccl"). A single
process (no launcher variables) initialises no process group; every helper below then
works as the trivial case.

Every collective of the recipes goes through the helpers here. They take numbers or
tensors and place them on the device the backend communicates on (`comm_device()`):
NCCL has no CPU backend, so a CPU tensor handed to it fails the whole run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common.errors import UserError

BACKEND_ENV = "LM_RECIPES_DIST_BACKEND"

# Where tensors handed to collectives must live; set by init_distributed.
_comm_device: torch.device | None = None
# A gloo group beside a GPU backend, for large objects gathered in host memory.
_cpu_group: Any = None


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str | None  # None for a single process without a process group
    launcher: str  # "single", "torchrun" or "slurm"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list such as ``gpu[01-03,07],login1`` into host names."""
    hosts: list[str] = []
    # Split on commas that are not inside brackets.
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            for value in range(int(lo), int(hi) + 1):
                hosts.append(f"{prefix}{value:0{len(lo)}d}{suffix}")
    return hosts


def _slurm_tasks_on_node(env: dict[str, str]) -> int:
    """Tasks of this job step on this node, from e.g. SLURM_STEP_TASKS_PER_NODE="4(x2),3"."""
    node = int(env.get("SLURM_NODEID", "0"))
    for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if key in env:
            counts: list[int] = []
            for item in env[key].split(","):
                value, _, repeat = item.partition("(x")
                counts += [int(value)] * int(repeat.rstrip(")") or 1)
            return counts[min(node, len(counts) - 1)]
    return int(env["SLURM_NTASKS"]) // max(int(env.get("SLURM_NNODES", "1")), 1)


def launch_info(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Rank, world size, local rank and rendezvous address from the environment.

    torchrun's variables win over SLURM's, so `srun torchrun ...` (one torchrun per node)
    works. SLURM's variables count only inside an srun job step (SLURM_STEP_ID set):
    the batch script itself, which sees SLURM_NTASKS of the whole allocation, runs as a
    single process.
    """
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return {
            "launcher": "torchrun",
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env.get("LOCAL_RANK", "0")),
            "local_world_size": int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": int(env.get("MASTER_PORT", "29500")),
        }
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env:
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif "SLURM_LAUNCH_NODE_IPADDR" in env and int(env.get("SLURM_NNODES", "1")) == 1:
            addr = env["SLURM_LAUNCH_NODE_IPADDR"]
        else:
            nodes = expand_nodelist(env.get("SLURM_STEP_NODELIST") or env["SLURM_NODELIST"])
            addr = nodes[0]
        # A port derived from the job id keeps two jobs sharing a node apart.
        port = int(env.get("MASTER_PORT", 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return {
            "launcher": "slurm",
            "rank": int(env["SLURM_PROCID"]),
            "world_size": int(env.get("SLURM_STEP_NUM_TASKS", env["SLURM_NTASKS"])),
            "local_rank": int(env.get("SLURM_LOCALID", "0")),
            "local_world_size": _slurm_tasks_on_node(env),
            "master_addr": addr,
            "master_port": port,
        }
    return {
        "launcher": "single",
        "rank": 0,
        "world_size": 1,
        "local_rank": 0,
        "local_world_size": 1,
        "master_addr": "127.0.0.1",
        "master_port": 29500,
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now, for a single-node rendezvous (torchrun --master_port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rendezvous_store(info: dict[str, Any], timeout: datetime.timedelta) -> dist.Store:
    """The key-value store the processes meet in, with keys private to this attempt.

    torchrun's agent hosts the store itself (TORCHELASTIC_USE_AGENT_STORE) and keeps it
    across `--max-restarts` restarts: without a per-attempt prefix, restarted workers
    would read the addresses of the workers that died and wait for them forever.
    Otherwise (srun) rank 0 hosts it.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        info["master_addr"],
        info["master_port"],
        info["world_size"],
        is_master=not agent_hosts and info["rank"] == 0,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"lm_recipes/attempt_{attempt}/", store)


class DeviceError(UserError, ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str | None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:N") as a device this process can use; None picks
    CUDA when a GPU is visible, else the CPU. Raises `DeviceError` with the reason."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError("not a device; use cpu or cuda") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError("the recipes run on cpu or cuda")
    if torch.version.cuda is None:
        raise DeviceError(f"no CUDA device: this torch {torch.__version__} is a CPU build")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise DeviceError(f"no CUDA device is visible{hint}; check the driver with nvidia-smi")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def init_distributed(
    device: str | None = None,
    backend: str | None = None,
    timeout_minutes: float = 30.0,
) -> DistEnv:
    """Initialise the process group (if launched with several processes) and pick a device.

    `device` is "cuda", "cpu" or None (CUDA when available); `DeviceError` when this
    machine has no such device. On CUDA each process uses the GPU of its local rank.
    """
    info = launch_info()
    try:
        dev = resolve_device(device)
    except DeviceError as exc:
        raise DeviceError(f"--device {device}: {exc}") from None
    if dev.type == "cuda":
        dev = torch.device("cuda", info["local_rank"] % torch.cuda.device_count())
        torch.cuda.set_device(dev)

    chosen_backend = None
    if info["world_size"] > 1:
        chosen_backend = (
            backend or os.environ.get(BACKEND_ENV) or ("nccl" if dev.type == "cuda" else "gloo")
        )
        if not dist.is_initialized():
            timeout = datetime.timedelta(minutes=timeout_minutes)
            dist.init_process_group(
                backend=chosen_backend,
                store=_rendezvous_store(info, timeout),
                rank=info["rank"],
                world_size=info["world_size"],
                timeout=timeout,
                device_id=dev if dev.type == "cuda" else None,
            )
        global _comm_device, _cpu_group
        _comm_device = pick_comm_device(chosen_backend, dev)
        if _comm_device.type != "cpu":  # every rank makes it, in the same order
            _cpu_group = dist.new_group(backend="gloo")
    return DistEnv(
        rank=info["rank"],
        world_size=info["world_size"],
        local_rank=info["local_rank"],
        local_world_size=info["local_world_size"],
        device=dev,
        backend=chosen_backend,
        launcher=info["launcher"],
    )


def wrap_ddp(model: torch.nn.Module, env: DistEnv, **ddp_kwargs: Any) -> torch.nn.Module:
    """DistributedDataParallel over `model` when several processes run; else `model` itself."""
    if not env.distributed:
        return model
    if env.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [env.device.index])
        ddp_kwargs.setdefault("output_device", env.device.index)
    return torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@contextlib.contextmanager
def no_sync(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Skip DDP's gradient all-reduce inside the block (for all but the last micro-step)."""
    if enabled and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def served_device_types(backend: str) -> list[str]:
    """Device types a backend communicates on: "nccl" -> ["cuda"], "gloo" -> ["cpu",
    "cuda"], "cpu:gloo,cuda:nccl" -> ["cpu", "cuda"]; a registered custom backend
    declares its own."""
    if ":" in backend:
        return [part.split(":")[0].strip() for part in backend.split(",")]
    return list(dist.Backend.backend_capability.get(backend.lower(), ["cpu"]))


def pick_comm_device(backend: str, device: torch.device) -> torch.device:
    """The model's device when the backend serves it, else the first device it does."""
    served = served_device_types(backend)
    if device.type in served:
        return device
    kind = served[0]
    module = getattr(torch, kind, None)
    if hasattr(module, "current_device"):
        return torch.device(kind, module.current_device())
    return torch.device(kind)


def comm_device() -> torch.device:
    """The device collectives run on in this process (the CPU without a process group)."""
    if is_initialized() and _comm_device is not None:
        return _comm_device
    if is_initialized():  # a group made outside init_distributed
        return pick_comm_device(dist.get_backend(), torch.device("cpu"))
    return torch.device("cpu")


Reducible = torch.Tensor | float | int | list | tuple


def _all_reduce(value: Reducible, op: dist.ReduceOp) -> torch.Tensor:
    """Reduce `value` over all ranks on the communication device.

    Tensors come back as a new tensor on their own device and dtype; numbers (and lists
    of numbers) as a float64 CPU tensor. The input is never modified.
    """
    if isinstance(value, torch.Tensor):
        home, out = value.device, value.detach()
    else:
        home, out = torch.device("cpu"), torch.as_tensor(value, dtype=torch.float64)
    if not is_initialized():
        return out.clone()
    out = out.to(comm_device(), copy=True)
    dist.all_reduce(out, op=op)
    return out.to(home)


def all_reduce_sum(value: Reducible) -> torch.Tensor:
    """Sum of `value` (a tensor, a number or a list of numbers) over all ranks."""
    return _all_reduce(value, dist.ReduceOp.SUM)


def all_reduce_mean(value: Reducible) -> torch.Tensor:
    """Mean of `value` (a tensor, a number or a list of numbers) over all ranks."""
    return _all_reduce(value, dist.ReduceOp.SUM) / get_world_size()


def all_reduce_max(value: Reducible) -> torch.Tensor:
    """Element-wise maximum of `value` over all ranks."""
    return _all_reduce(value, dist.ReduceOp.MAX)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` without a process group."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank `dst`, None on the others. It travels in
    host memory (over gloo beside a GPU backend): objects such as Transformer-XL's
    memories would otherwise take world size x their size on the GPU of `dst`."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst, group=_cpu_group)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (picklable objects)."""
    if not is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (all devices) with `seed + rank`; returns that seed.

    Distinct per-rank seeds give each rank its own dropout masks and data order
    where a recipe wants that; model initialisation should use the same seed on all
    ranks (DDP also broadcasts rank 0's weights).
    """
    value = seed + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return value


def abort() -> None:
    """Release the process group on an error, without meeting the other ranks (they may
    be stuck elsewhere or gone); safe to call when none exists."""
    global _comm_device, _cpu_group
    if is_initialized():
        dist.destroy_process_group()
        time.sleep(0.05)  # see cleanup(): let gloo's workers drop their tensors
    _comm_device = _cpu_group = None


def cleanup() -> None:
    """Tear the process group down (safe to call when none exists); every rank calls it.

    DDP keeps the gloo process group, and so its worker threads, alive until the
    process exits. A worker that has just finished a collective over Python-made
    tensors (all_gather_object, say) still has to take the GIL to drop them; if the
    interpreter is already shutting down by then, the thread aborts the process.
    So the ranks first meet at a barrier (a collective without tensors, which
    completes only after every earlier one), and the main thread then lets go of
    the GIL for a moment so such a worker can finish.
    """
    global _comm_device, _cpu_group
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        time.sleep(0.05)
    _comm_device = _cpu_group = None
