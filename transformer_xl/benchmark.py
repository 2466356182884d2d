"""Transformer-XL throughput on synthetic tokens: training tok/s, inference latency.

    python -m transformer_xl.benchmark --device cpu --math fp32,bf16 --model small
    python -m transformer_xl.benchmark --device cuda --math fp16,bf16,tf32 --model base \\
        --types pytorch,torchscript,compile --json results/txl_bench.json

Models: `base` and `large` are the WikiText-103 recipes (vocabulary 267,735, adaptive
input and softmax), `small` a 4-layer d_model 256 model for quick CPU runs. Training:
full steps (forward with memory, backward, clipping, LAMB) on random token streams of
`--batch_size` x `--tgt_len`; tokens/s counts predicted tokens. Inference: segments of
`--eval_tgt_len` with `--eval_mem_len` of memory (the recipe's evaluation lengths),
timed per segment once the memory is full, for each runtime in `--types`. Warm-up
steps are excluded and CUDA is synchronised.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import cli
from common.benchmark import (
    LatencyRecorder,
    ThroughputMeter,
    device_name,
    log_results,
    markdown_table,
    to_milliseconds,
    write_json,
)
from common.logging import Logger
from common.optim import LAMB
from common.precision import Precision, PrecisionError
from common.step import OptimizerStep
from transformer_xl.eval import trace
from transformer_xl.model import MemTransformerLM, init_weights

WT103_VOCAB = 267_735
WT103_CUTOFFS = [19997, 39997, 199997]
MODELS: dict[str, dict[str, Any]] = {
    "small": dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024, div_val=1),
    "base": dict(n_layer=16, n_head=8, d_model=512, d_head=64, d_inner=2048, div_val=1),
    "large": dict(n_layer=18, n_head=16, d_model=1024, d_head=64, d_inner=4096, div_val=4),
}


def build(name: str, args: argparse.Namespace, device: torch.device) -> MemTransformerLM:
    torch.manual_seed(0)
    cfg = MODELS[name]
    model = MemTransformerLM(
        args.vocab_size,
        cfg["n_layer"],
        cfg["n_head"],
        cfg["d_model"],
        cfg["d_head"],
        cfg["d_inner"],
        dropout=0.1,
        dropatt=0.0,
        d_embed=cfg["d_model"],
        div_val=cfg["div_val"],
        tie_projs=[False] + [True] * len(args.cutoffs),
        tgt_len=args.tgt_len,
        mem_len=args.mem_len,
        cutoffs=args.cutoffs,
    )
    init_weights(model)
    return model.to(device)


def random_stream(vocab: int, length: int, batch: int, seed: int) -> torch.Tensor:
    """[length, batch] token ids; Zipf-like so adaptive-softmax tails are exercised."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.rand(length, batch, generator=g).pow(4).mul(vocab).long()
    return ranks.clamp_(max=vocab - 1)


def bench_training(model: MemTransformerLM, prec: Precision, args: argparse.Namespace) -> dict:
    device = next(model.parameters()).device
    steps = args.warmup + args.steps
    stream = random_stream(args.vocab_size, steps * args.tgt_len + 1, args.batch_size, 0)
    stream = stream.to(device)
    optimizer = LAMB(
        model.parameters(), lr=1e-3, weight_decay=0.0, bias_correction=False,
        max_grad_norm=0.0, use_nvlamb=True,
    )  # fmt: skip
    step = OptimizerStep(model, optimizer, prec, clip_norm=0.25)  # train.py's step
    model.train()
    meter = ThroughputMeter(warmup_steps=args.warmup, device=device)
    latency = LatencyRecorder(warmup=args.warmup, device=device)
    mems = None
    for i in range(steps):
        inp = stream[i * args.tgt_len : (i + 1) * args.tgt_len]
        target = stream[i * args.tgt_len + 1 : (i + 1) * args.tgt_len + 1]
        with latency.measure():
            with prec.autocast():
                loss, mems = model(inp, target, mems)
            step.backward(loss.float().mean())
            step.finish()
        meter.update(target.numel())
    return {
        "tokens/s": meter.throughput,
        **{f"step_{k}": v for k, v in latency.summary().items() if k != "count"},
    }


def bench_inference(
    model: MemTransformerLM, prec: Precision, runtime: str, args: argparse.Namespace
) -> dict:
    device = next(model.parameters()).device
    model.eval()
    model.reset_length(args.eval_tgt_len, 0, args.eval_mem_len)
    fill = -(-args.eval_mem_len // args.eval_tgt_len)  # segments until the memory is full
    calls = fill + args.infer_warmup + args.infer_steps
    stream = random_stream(args.vocab_size, calls * args.eval_tgt_len + 1, args.eval_batch_size, 1)
    stream = stream.to(device)
    run: Any = model
    latency = LatencyRecorder(warmup=args.infer_warmup, device=device)
    mems, tokens = None, 0
    with torch.no_grad():
        for i in range(calls):
            inp = stream[i * args.eval_tgt_len : (i + 1) * args.eval_tgt_len]
            target = stream[i * args.eval_tgt_len + 1 : (i + 1) * args.eval_tgt_len + 1]
            if i < fill:  # memory still growing: eager, untimed
                with prec.autocast():
                    _, mems = model(inp, target, mems)
                continue
            if run is model and runtime == "torchscript":
                with prec.autocast():
                    run = trace(model, inp, target, mems)
            elif run is model and runtime == "compile":
                run = torch.compile(model)
            with latency.measure(), prec.autocast():
                _, mems = run(inp, target, mems)
            if i >= fill + args.infer_warmup:
                tokens += target.numel()
    model.reset_length(args.tgt_len, 0, args.mem_len)
    summary = latency.summary()
    return {
        "tokens/s": tokens / (summary["avg"] * summary["count"]),
        **{f"latency_{k}": summary[k] for k in ("avg", "p50", "p90", "p95", "p99", "p100")},
    }


def names_arg(known: tuple[str, ...]) -> Callable[[str], str]:
    """argparse type: comma-separated names from `known` (the text is kept as given)."""

    def parse(value: str) -> str:
        if any(name not in known for name in value.split(",")):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated names from {', '.join(known)}, got {value!r}"
            )
        return value

    return parse


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag combinations that cannot work, before any model is built."""
    traced = "torchscript" in args.types.split(",") and "infer" in args.mode.split(",")
    cli.check_args(
        p,
        "--types torchscript traces the model with a full memory: give --eval_mem_len > 0"
        if traced and args.eval_mem_len == 0
        else None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m transformer_xl.benchmark", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--device", type=cli.device_arg, default=None,
        help="cpu, cuda or cuda:N; when not given: cuda if a GPU is visible, else cpu",
    )  # fmt: skip
    p.add_argument(
        "--math", type=cli.precisions_arg, default="fp32,bf16", help="comma-separated precisions"
    )
    p.add_argument(
        "--mode", type=names_arg(("train", "infer")), default="train,infer",
        help="what to time: train, infer or train,infer",
    )  # fmt: skip
    p.add_argument("--model", choices=sorted(MODELS), default="small", help="model size")
    p.add_argument(
        "--vocab_size", type=cli.positive_int, default=WT103_VOCAB,
        help="vocabulary; adaptive softmax above the last cutoff",
    )  # fmt: skip
    p.add_argument("--batch_size", type=cli.positive_int, default=16, help="training streams")
    p.add_argument(
        "--tgt_len", type=cli.positive_int, default=192, help="training tokens per segment"
    )
    p.add_argument(
        "--mem_len", type=cli.nonnegative_int, default=192, help="training memory length"
    )
    p.add_argument("--warmup", type=cli.nonnegative_int, default=2, help="untimed training steps")
    p.add_argument("--steps", type=cli.positive_int, default=5, help="timed training steps")
    p.add_argument("--eval_batch_size", type=cli.positive_int, default=16, help="inference streams")
    p.add_argument(
        "--eval_tgt_len", type=cli.positive_int, default=64, help="inference tokens per segment"
    )
    p.add_argument(
        "--eval_mem_len", type=cli.nonnegative_int, default=640,
        help="inference memory length",
    )  # fmt: skip
    p.add_argument(
        "--types", type=names_arg(("pytorch", "torchscript", "compile")), default="pytorch",
        help="comma-separated inference runtimes: pytorch, torchscript, compile",
    )  # fmt: skip
    p.add_argument("--infer_warmup", type=cli.nonnegative_int, default=2, help="untimed segments")
    p.add_argument("--infer_steps", type=cli.positive_int, default=10, help="timed segments")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--log_file", type=Path, default=None, help="DLLogger lines")
    args = p.parse_args(argv)
    check_flags(p, args)
    args.cutoffs = WT103_CUTOFFS if args.vocab_size > WT103_CUTOFFS[-1] else []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = cli.device_for_precisions(args.device, args.math)
    except PrecisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setting = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "vocab": args.vocab_size,
    }
    print(" | ".join(f"{k} {v}" for k, v in setting.items()), flush=True)
    train_rows, infer_rows = [], []
    with Logger(args.log_file, stdout=False) as logger:
        for math in args.math:
            prec = Precision.create(math, device)
            if "train" in args.mode:
                row = {
                    "math": math,
                    "batch": args.batch_size,
                    "tgt_len": args.tgt_len,
                    **bench_training(build(args.model, args, device), prec, args),
                }
                log_results(logger, row, step=("train", math))
                train_rows.append(row)
                print(f"train {math}: {row['tokens/s']:.0f} tok/s", flush=True)
            if "infer" in args.mode:
                model = build(args.model, args, device)
                for runtime in args.types.split(","):
                    row = {
                        "math": math,
                        "type": runtime,
                        "batch": args.eval_batch_size,
                        **bench_inference(model, prec, runtime, args),
                    }
                    log_results(logger, row, step=("infer", math, runtime))
                    infer_rows.append(row)
                    print(f"infer {math} {runtime}: {row['tokens/s']:.0f} tok/s", flush=True)
    for title, rows in (("Training", train_rows), ("Inference (per segment)", infer_rows)):
        if rows:
            print(f"\n{title}, latency in ms:")
            print(markdown_table([to_milliseconds(r, ("step_", "latency_")) for r in rows]))
    if args.json:
        write_json(args.json, {"setting": setting, "train": train_rows, "infer": infer_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
