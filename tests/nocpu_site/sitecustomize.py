"""A process group that, like NCCL on a GPU machine, has no CPU backend.

Put this folder on PYTHONPATH and set LM_RECIPES_DIST_BACKEND=nocpu: every process then
registers the backend "nocpu" at start-up. It serves the "lazy" device type (PyTorch's
lazy-tensor device, which runs on the CPU), so `common.distributed` places the tensors
of its collectives there, as it places them on the GPU for NCCL. A collective that a
recipe issues on a CPU tensor fails with NCCL's message.

The model itself still runs on the CPU, so the CPU tensors that torch moves on its own
stay allowed: DDP's parameter broadcast and gradient buckets (on a GPU those are CUDA
tensors) and the object collectives and barriers, for which torch picks the device
itself. The data travels through an inner gloo group.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch._lazy.ts_backend
import torch.distributed as dist

NAME = "nocpu"
_TORCH_DIR = os.path.dirname(torch.__file__)
# torch's own entry points that choose the device themselves
_TORCH_PICKS_DEVICE = {
    "all_gather_object",
    "broadcast_object_list",
    "gather_object",
    "scatter_object_list",
    "send_object_list",
    "recv_object_list",
    "barrier",
}


def _issued_by_torch() -> bool:
    """True when the collective comes from DDP, autograd or an object collective."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_TORCH_DIR):
            if f"{os.sep}nn{os.sep}parallel{os.sep}" in path or f"{os.sep}autograd{os.sep}" in path:
                return True
            if frame.f_code.co_name in _TORCH_PICKS_DEVICE:
                return True
        frame = frame.f_back
    return False


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _tensors(item)]
    return []


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu() if obj.device.type == "lazy" else obj
    if isinstance(obj, list | tuple):
        return [_to_cpu(item) for item in obj]
    return obj


def _copy_back(dst: Any, src: Any) -> None:
    if isinstance(dst, torch.Tensor):
        if dst is not src:
            dst.copy_(src)
    elif isinstance(dst, list | tuple):
        for d, s in zip(dst, src, strict=True):
            _copy_back(d, s)


class _Done(dist._Work):
    def __init__(self, result: Any = None) -> None:
        super().__init__()
        self._result = result

    def wait(self, timeout: Any = None) -> bool:
        return True

    def get_future(self) -> torch.futures.Future:
        future = torch.futures.Future()
        future.set_result(self._result)
        return future


class NoCpuProcessGroup(dist.ProcessGroup):
    def __init__(self, store: dist.Store, rank: int, size: int, timeout: Any) -> None:
        super().__init__(rank, size)
        self._gloo = dist.ProcessGroupGloo(dist.PrefixStore("nocpu/", store), rank, size, timeout)

    def getBackendName(self) -> str:
        return NAME

    def _run(self, method: str, *args: Any) -> _Done:
        if not _issued_by_torch():
            for t in _tensors(args):
                if t.device.type == "cpu":
                    raise RuntimeError(
                        f"No backend type associated with device type cpu ({method} of a "
                        f"CPU tensor {tuple(t.shape)} on a process group without a CPU backend)"
                    )
        moved = [_to_cpu(a) for a in args]
        getattr(self._gloo, method)(*moved).wait()
        for original, copy in zip(args, moved, strict=True):
            _copy_back(original, copy)
        return _Done(args[0] if args else None)

    def allreduce(self, tensors, opts):
        return self._run("allreduce", tensors, opts)

    def allgather(self, outputs, inputs, opts):
        return self._run("allgather", outputs, inputs, opts)

    def _allgather_base(self, output, input, opts):
        return self._run("_allgather_base", output, input, opts)

    def gather(self, outputs, inputs, opts):
        return self._run("gather", outputs, inputs, opts)

    def broadcast(self, tensors, opts):
        return self._run("broadcast", tensors, opts)

    def reduce_scatter(self, outputs, inputs, opts):
        return self._run("reduce_scatter", outputs, inputs, opts)

    def barrier(self, opts):
        self._gloo.barrier().wait()
        return _Done()


def _create(store: dist.Store, rank: int, size: int, timeout: Any) -> NoCpuProcessGroup:
    return NoCpuProcessGroup(store, rank, size, timeout)


if os.environ.get("LM_RECIPES_DIST_BACKEND") == NAME:
    torch._lazy.ts_backend.init()
    dist.Backend.register_backend(NAME, _create, devices=["lazy"])
