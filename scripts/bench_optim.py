"""Optimizer step latency on BERT-shaped parameters: our LAMB against AdamW.

    python -m scripts.bench_optim --config base --device cpu
    python -m scripts.bench_optim --config large --device cuda --json results/optim.json

The parameters have the shapes of a BERT encoder (embeddings, per-layer attention and
feed-forward matrices, biases and LayerNorm vectors) with random gradients, split into
decayed matrices and undecayed vectors as the recipes do. Reports latency per step
(avg, p50..p100) as a markdown table, JSON and DLLogger lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from common import cli
from common.benchmark import LatencyRecorder, log_results, markdown_table, write_json
from common.distributed import resolve_device
from common.logging import Logger
from common.optim import LAMB

CONFIGS = {  # hidden, layers, intermediate, vocab
    "tiny": (128, 2, 512, 30522),
    "base": (768, 12, 3072, 30522),
    "large": (1024, 24, 4096, 30522),
}


def bert_shaped_parameters(config: str, device: torch.device) -> list[torch.Tensor]:
    hidden, layers, inner, vocab = CONFIGS[config]
    shapes = [(vocab, hidden), (512, hidden), (2, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4 + [(hidden,)] * 2
        shapes += [(inner, hidden), (inner,), (hidden, inner), (hidden,), (hidden,), (hidden,)]
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).mul_(0.02).to(device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(device)
    return params


def make_optimizer(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if name == "lamb":
        return LAMB(groups, lr=6e-3)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=1e-4, foreach=True)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", choices=sorted(CONFIGS), default="base")
    p.add_argument("--device", type=cli.device_arg, default=None, help="default: cuda if any")
    p.add_argument("--optimizers", default="lamb,adamw", help="comma-separated")
    p.add_argument("--warmup", type=cli.nonnegative_int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=cli.positive_int, default=10, help="timed steps")
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    p.add_argument("--log-file", type=Path, default=None, help="DLLogger output")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    params = bert_shaped_parameters(args.config, device)
    n_params = sum(p.numel() for p in params)
    rows = []
    with Logger(args.log_file, stdout=False) as logger:
        for name in args.optimizers.split(","):
            opt = make_optimizer(name, params)
            rec = LatencyRecorder(warmup=args.warmup, device=device)
            for _ in range(args.warmup + args.steps):
                with rec.measure():
                    opt.step()
            summary = rec.summary()
            log_results(logger, {"optimizer": name, **summary}, step=(name,))
            rows.append(
                {"optimizer": name, **{k: v * 1e3 for k, v in summary.items() if k != "count"}}
            )
    print(
        f"BERT-{args.config} parameters ({n_params / 1e6:.1f} M in {len(params)} tensors) "
        f"on {device}, ms per step:"
    )
    print(markdown_table(rows, ["optimizer", "avg", "p50", "p90", "p95", "p99", "p100"]))
    if args.json:
        write_json(
            args.json,
            {
                "config": args.config,
                "device": str(device),
                "parameters": n_params,
                "ms_per_step": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
