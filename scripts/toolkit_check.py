"""End-to-end check of the common/ toolkit: a small classifier trained like a real recipe.

Precision switch, DDP-ready loop with gradient accumulation, LAMB, warm-up + decay
schedule, DLLogger logging, atomic checkpoints and exact resume, SIGTERM handling,
all composed the way each model's train.py composes them. The data is generated
(a fixed random teacher network labels random inputs), not a real dataset.

    python -m scripts.toolkit_check --steps 40 --save-dir /tmp/tk
    torchrun --nproc_per_node 2 -m scripts.toolkit_check --steps 40 --save-dir /tmp/tk
    python -m scripts.toolkit_check --steps 80 --save-dir /tmp/tk --resume   # continues
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import cli, distributed
from common.checkpoint import Checkpointer, DataPosition
from common.logging import Logger
from common.metrics import MetricsWindow
from common.optim import LAMB
from common.precision import Precision
from common.run_control import RunControl, stopped_line
from common.schedules import DECAYS, build_scheduler
from common.step import OptimizerStep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m scripts.toolkit_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--steps", type=cli.positive_int, default=40, help="optimizer steps in all")
    p.add_argument(
        "--batch-size", type=cli.positive_int, default=32, help="per-process micro-batch"
    )
    p.add_argument(
        "--accumulation", type=cli.positive_int, default=2, help="micro-batches per step"
    )
    cli.add_precision_flags(p, "tf32 on GPUs from Ampere on, else fp32")
    p.add_argument("--device", type=cli.device_arg, default=None, help="default: cuda if any")
    p.add_argument("--lr", type=cli.positive_float, default=2e-2, help="peak learning rate")
    p.add_argument("--weight-decay", type=cli.nonnegative_float, default=0.01, help="LAMB's")
    p.add_argument("--warmup-steps", type=cli.nonnegative_int, default=5, help="linear warm-up")
    p.add_argument("--decay", choices=DECAYS, default="cosine", help="learning-rate decay")
    p.add_argument("--hidden", type=cli.positive_int, default=64, help="hidden layer width")
    p.add_argument("--dropout", type=cli.probability, default=0.1, help="dropout rate")
    p.add_argument(
        "--train-size", type=cli.positive_int, default=4096, help="generated training samples"
    )
    p.add_argument("--seed", type=int, default=1, help="data order, weights and dropout")
    p.add_argument(
        "--save-dir", type=Path, default=Path("results/toolkit_check"), help="checkpoints and log"
    )
    p.add_argument(
        "--save-every", type=cli.positive_int, default=10, help="checkpoint every N steps"
    )
    p.add_argument(
        "--keep-last", type=cli.positive_int, default=3, help="numbered checkpoints kept"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    cli.add_overwrite_flag(p)
    p.add_argument(
        "--stop-at", type=cli.positive_int, default=None,
        help="save and exit after this step (resume later)",
    )  # fmt: skip
    p.add_argument("--print-freq", type=cli.positive_int, default=10, help="steps per log line")
    p.add_argument("--log-file", type=Path, default=None, help="default: SAVE_DIR/log.json")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    args = p.parse_args(argv)
    cli.check_args(p, cli.conflict(args, "--resume", "--overwrite"))
    return args


class Classifier(nn.Module):
    """[B, 16] features -> [B, 4] logits."""

    def __init__(self, hidden: int, dropout: float, n_in: int = 16, n_out: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_data(n_train: int, n_val: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Generated data: random inputs labelled by one fixed random teacher network.

    Returns train_x [n_train, 16], train_y [n_train], val_x [n_val, 16], val_y [n_val].
    """
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(16, 4, generator=g)
    x = torch.randn(n_train + n_val, 16, generator=g)
    y = (x @ teacher + 0.1 * torch.randn(n_train + n_val, 4, generator=g)).argmax(dim=1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def batches(
    n: int, batch_size: int, seed: int, env: distributed.DistEnv, epoch: int, start: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(epoch, index, sample ids) from `epoch`/`start` on; each rank gets its own slice.

    The order depends only on (seed, epoch), so skipping `start` batches resumes exactly.
    """
    while True:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        shard = order[env.rank :: env.world_size]
        for index in range(start, len(shard) // batch_size):
            yield epoch, index, shard[index * batch_size : (index + 1) * batch_size]
        epoch, start = epoch + 1, 0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (1-D parameters)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, prec: Precision
) -> tuple[float, float]:
    model.eval()
    with prec.autocast():
        logits = model(x).float()
    model.train()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    distributed.seed_everything(args.seed)  # identical initial weights on every rank
    prec = cli.create_precision(args, env.device)
    checkpointer = Checkpointer(args.save_dir, keep_last=args.keep_last)
    log_file = args.log_file or args.save_dir / "log.json"
    outputs = [log_file, args.save_dir / "tb"]
    checkpointer.claim(resume=args.resume, overwrite=args.overwrite, outputs=outputs)
    args.save_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(
        log_file,
        tensorboard_dir=str(args.save_dir / "tb") if args.tensorboard else None,
    )
    logger.log(
        "PARAMETER",
        {
            **vars(args),
            "precision": prec.mode,
            "world_size": env.world_size,
            "launcher": env.launcher,
        },
    )

    train_x, train_y, val_x, val_y = (
        t.to(env.device) for t in make_data(args.train_size, 1024, args.seed)
    )

    model = Classifier(args.hidden, args.dropout).to(env.device)
    optimizer = LAMB(param_groups(model, args.weight_decay), lr=args.lr)
    scheduler = build_scheduler(
        optimizer, args.decay, warmup_steps=args.warmup_steps, total_steps=args.steps
    )
    model = distributed.wrap_ddp(model, env)
    distributed.seed_everything(args.seed, env.rank)  # per-rank dropout noise

    position = DataPosition()
    states = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "precision": prec,
        "data_position": position,
    }
    step, best = 0, float("inf")
    if args.resume:
        state = checkpointer.restore(states)
        if state is not None:
            step, best = state["step"], state["extra"]["best_val_loss"]
            logger.log("PARAMETER", {"resumed_from_step": step})

    stream = batches(
        args.train_size, args.batch_size, args.seed, env, position.epoch, position.batch
    )
    train_step = OptimizerStep(model, optimizer, prec, scheduler)  # LAMB clips inside
    window = MetricsWindow(unit="samples", device=env.device)

    def save() -> None:
        """Score the validation set, then checkpoint (`_best` when it is the best yet)."""
        nonlocal best
        val_loss, val_acc = evaluate(model, val_x, val_y, prec)
        logger.log(step, {"val_loss": val_loss, "val_accuracy": val_acc})
        is_best, best = val_loss < best, min(best, val_loss)
        path = checkpointer.save(step, states, extra={"best_val_loss": best}, is_best=is_best)
        if path is not None:
            print(f"saved checkpoint {path} (step {step})", flush=True)

    max_steps = min(args.steps, args.stop_at or args.steps)
    with RunControl(
        save,
        step,
        max_steps=max_steps,
        save_every=args.save_every,
        agree_every=args.print_freq,
        window=window,
    ) as run:
        while run.reason is None:
            micro = [next(stream) for _ in range(args.accumulation)]
            for _, _, ids in train_step.micro_batches(micro):
                with prec.autocast():
                    loss = F.cross_entropy(model(train_x[ids]), train_y[ids])
                train_step.backward(loss / args.accumulation)
            result = train_step.finish()
            step += 1
            position.epoch, index, _ = micro[-1]
            position.batch = index + 1
            window.add_step(result, items=args.batch_size * args.accumulation)

            if step % args.print_freq == 0 or step == args.steps:
                logger.log(step, window.line(prec))
            run.after_step(step)
        if run.reason == "signal" or step == args.stop_at:
            print(stopped_line(step), flush=True)

    if step == args.steps:
        val_loss, val_acc = evaluate(model, val_x, val_y, prec)
        logger.log((), {"final_val_loss": val_loss, "final_val_accuracy": val_acc, "steps": step})
    logger.close()
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
