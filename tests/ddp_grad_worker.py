"""Worker for tests/test_distributed.py: gradients of one global batch, saved per rank.

    python -m tests.ddp_grad_worker OUT_DIR          # one process, whole batch
    torchrun --nproc_per_node 2 -m tests.ddp_grad_worker OUT_DIR

Two micro-steps of gradient accumulation, the first under no_sync. Each rank takes
its contiguous share of every micro-batch, so the global batch is the same whatever
the world size.
"""

import json
import sys
from pathlib import Path

import torch

from common import distributed


def main(out_dir: str) -> None:
    env = distributed.init_distributed("cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)
    ).double()
    g = torch.Generator().manual_seed(1)
    micro_batches = [
        (
            torch.randn(8, 5, generator=g, dtype=torch.float64),
            torch.randn(8, 2, generator=g, dtype=torch.float64),
        )
        for _ in range(2)
    ]
    model = distributed.wrap_ddp(model, env)
    share = 8 // env.world_size
    for i, (x, y) in enumerate(micro_batches):
        x = x[env.rank * share : (env.rank + 1) * share]
        y = y[env.rank * share : (env.rank + 1) * share]
        with distributed.no_sync(model, enabled=i == 0):
            loss = torch.nn.functional.mse_loss(model(x), y) / len(micro_batches)
            loss.backward()
    grads = {name: p.grad for name, p in distributed.unwrap(model).named_parameters()}
    info = {
        "launcher": env.launcher,
        "rank": env.rank,
        "world_size": env.world_size,
        "backend": env.backend,
        "mean_of_ranks": distributed.all_reduce_mean(torch.tensor(float(env.rank))).item(),
        "broadcast": distributed.broadcast_object({"from": env.rank}),
    }
    torch.save(grads, Path(out_dir) / f"grads_rank{env.rank}_of{env.world_size}.pt")
    (Path(out_dir) / f"info_rank{env.rank}_of{env.world_size}.json").write_text(json.dumps(info))
    distributed.barrier()
    distributed.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
