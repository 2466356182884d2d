"""GNMT throughput on synthetic data: training tokens/s and beam-search sentences/s.

    python -m gnmt.benchmark --device cpu --math fp32,bf16
    python -m gnmt.benchmark --device cuda --math fp16,bf16,tf32 --batch-size 256 \\
        --infer-batch-size 1,32,128 --beam-size 1,5 --json results/gnmt_bench.json

Training: full steps (forward under autocast, label-smoothed loss, scaled backward,
gradient clipping, Adam) on random sentence pairs whose lengths are drawn uniformly
from [--min-len, --max-len] (the recipe trains on pairs of at most 50 tokens); tokens/s
counts source plus target tokens, as the recipe's epoch summary does. Inference: beam
search of random source sentences with a randomly initialised model, which never ends
a hypothesis early, so every sentence decodes exactly --decode-len steps (about the
length of a newstest2014 translation). For BLEU and latency on real text with a trained
model use `gnmt.translate --batch-size ... --beam-size ...`.
Warm-up steps and batches are excluded from every figure; CUDA is synchronised.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
from common.precision import Precision, PrecisionError
from common.step import OptimizerStep
from gnmt.beam_search import SearchConfig, beam_search
from gnmt.data import ParallelData, collate, pad
from gnmt.model import GNMT, label_smoothed_loss
from gnmt.tokenizer import BOS, EOS

FIRST_WORD = EOS + 1


def random_pairs(n: int, vocab: int, min_len: int, max_len: int, seed: int) -> ParallelData:
    """`n` pairs of [BOS, words..., EOS] with independent uniform lengths (BOS/EOS incl.)."""
    g = torch.Generator().manual_seed(seed)

    def sentence() -> torch.Tensor:
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        words = torch.randint(FIRST_WORD, vocab, (length - 2,), generator=g)
        return torch.cat((torch.tensor([BOS]), words, torch.tensor([EOS])))

    pairs = ParallelData([], [])
    for _ in range(n):
        pairs.src.append(sentence())
        pairs.tgt.append(sentence())
    return pairs


def bench_training(model: GNMT, prec: Precision, args: argparse.Namespace) -> dict[str, float]:
    device = next(model.parameters()).device
    steps = args.warmup + args.steps
    pairs = random_pairs(args.batch_size * steps, args.vocab_size, args.min_len, args.max_len, 0)
    batches = [
        collate(pairs, range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(steps)
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = OptimizerStep(model, optimizer, prec, clip_norm=5.0)  # train.py's step
    model.train()
    tokens = ThroughputMeter(warmup_steps=args.warmup, device=device)
    sentences = ThroughputMeter(warmup_steps=args.warmup, device=device)
    latency = LatencyRecorder(warmup=args.warmup, device=device)
    for cpu_batch in batches:
        with latency.measure():
            batch = cpu_batch.to(device)
            with prec.autocast():
                logits = model(batch.src, batch.src_lengths, batch.tgt_input)
            loss, _ = label_smoothed_loss(logits, batch.tgt_output)
            step.backward(loss / batch.src.size(0))
            step.finish()
        tokens.update(cpu_batch.tokens)
        sentences.update(cpu_batch.src.size(0))
    return {
        "tokens/s": tokens.throughput,
        "sentences/s": sentences.throughput,
        **{f"step_{k}": v for k, v in latency.summary().items() if k != "count"},
    }


def bench_inference(
    model: GNMT, prec: Precision, batch_size: int, beam: int, args: argparse.Namespace
) -> dict[str, float]:
    device = next(model.parameters()).device
    model.eval()
    if prec.mode in ("fp16", "bf16"):
        model = model.to(prec.autocast_dtype)  # as gnmt.translate runs inference
    cfg = SearchConfig(beam_size=beam, max_length=args.decode_len)
    calls = args.infer_warmup + args.infer_batches
    pairs = random_pairs(batch_size * calls, args.vocab_size, args.min_len, args.max_len, 1)
    latency = LatencyRecorder(warmup=args.infer_warmup, device=device)
    generated = 0
    with torch.inference_mode():
        for i in range(calls):
            src, lengths = pad(pairs.src[i * batch_size : (i + 1) * batch_size])
            with latency.measure(), prec.autocast():
                hyps = beam_search(model, src.to(device), lengths.to(device), cfg)
            if i >= args.infer_warmup:
                generated += sum(len(h) for h in hyps)
    summary = latency.summary(items_per_call=batch_size)
    total = summary["avg"] * summary["count"]
    return {
        "sentences/s": summary["throughput"],
        "tokens/s": generated / total,
        "tokens/sentence": generated / (batch_size * args.infer_batches),
        **{f"latency_{k}": summary[k] for k in ("avg", "p50", "p90", "p95", "p99", "p100")},
    }


MODES = ("train", "infer")


def modes_arg(value: str) -> str:
    """argparse type for --mode: comma-separated parts from MODES (kept as typed)."""
    parts = value.split(",")
    if not all(part in MODES for part in parts):
        raise argparse.ArgumentTypeError(f"must be train, infer or train,infer, got {value!r}")
    return value


def sizes_arg(value: str) -> str:
    """argparse type: comma-separated positive integers (kept as typed: main splits it)."""
    try:
        for part in value.split(","):
            cli.positive_int(part)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, got {value!r}"
        ) from None
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.benchmark", description=__doc__.splitlines()[0])
    p.add_argument(
        "--device",
        type=cli.device_arg,
        default=None,
        help="torch device (cpu, cuda, cuda:1); when not given: cuda if there is one",
    )
    p.add_argument(
        "--math", type=cli.precisions_arg, default="fp32,bf16", help="comma-separated precisions"
    )
    p.add_argument(
        "--mode", type=modes_arg, default="train,infer", help="train, infer or train,infer"
    )
    p.add_argument(
        "--threads",
        type=cli.positive_int,
        default=None,
        help="CPU threads; when not given: torch's default",
    )
    m = p.add_argument_group("model (the recipe's by default)")
    m.add_argument("--vocab-size", type=cli.positive_int, default=32320, help="vocabulary size")
    m.add_argument(
        "--hidden-size", type=cli.positive_int, default=1024, help="LSTM and embedding size"
    )
    m.add_argument(
        "--num-layers",
        type=cli.positive_int,
        default=4,
        help="LSTM layers of the encoder and of the decoder (at least 2)",
    )
    t = p.add_argument_group("training")
    t.add_argument(
        "--batch-size", type=cli.positive_int, default=128, help="sentence pairs per step"
    )
    t.add_argument(
        "--min-len", type=cli.positive_int, default=10, help="tokens, BOS/EOS included (>= 2)"
    )
    t.add_argument("--max-len", type=cli.positive_int, default=50, help="tokens, BOS/EOS included")
    t.add_argument("--warmup", type=cli.nonnegative_int, default=2, help="untimed steps")
    t.add_argument("--steps", type=cli.positive_int, default=5, help="timed steps")
    i = p.add_argument_group("inference")
    i.add_argument(
        "--infer-batch-size", type=sizes_arg, default="1,32", help="comma-separated batch sizes"
    )
    i.add_argument("--beam-size", type=sizes_arg, default="1,5", help="comma-separated widths")
    i.add_argument(
        "--decode-len",
        type=cli.positive_int,
        default=30,
        help="generated tokens per sentence",
    )
    i.add_argument("--infer-warmup", type=cli.nonnegative_int, default=1, help="untimed batches")
    i.add_argument("--infer-batches", type=cli.positive_int, default=5, help="timed batches")
    o = p.add_argument_group("output")
    o.add_argument("--json", type=Path, default=None, help="write all results here")
    o.add_argument("--log-file", type=Path, default=None, help="write DLLogger lines here")
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before any model is built."""
    cli.check_args(
        p,
        f"--num-layers must be at least 2, got {args.num_layers}" if args.num_layers < 2 else None,
        f"--vocab-size must be above {FIRST_WORD} (the special tokens), got {args.vocab_size}"
        if args.vocab_size <= FIRST_WORD
        else None,
        f"--min-len must be at least 2 (BOS and EOS), got {args.min_len}"
        if args.min_len < 2
        else None,
        f"--min-len {args.min_len} exceeds --max-len {args.max_len}"
        if args.min_len > args.max_len
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    maths, modes = args.math, args.mode.split(",")
    try:
        device = cli.device_for_precisions(args.device, maths)
    except PrecisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setting = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": f"GNMT h{args.hidden_size} l{args.num_layers} V{args.vocab_size}",
    }
    print(" | ".join(f"{k} {v}" for k, v in setting.items()), flush=True)
    train_rows, infer_rows = [], []
    with Logger(args.log_file, stdout=False) as logger:
        for math in maths:
            prec = Precision.create(math, device)
            if "train" in modes:
                torch.manual_seed(1)  # the same random model for every precision
                model = GNMT(args.vocab_size, args.hidden_size, args.num_layers).to(device)
                row = {"math": math, "batch": args.batch_size, **bench_training(model, prec, args)}
                log_results(logger, row, step=("train", math))
                train_rows.append(row)
                print(f"train {math}: {row['tokens/s']:.1f} tok/s", flush=True)
            if "infer" in modes:
                torch.manual_seed(1)  # the same random model for every precision
                model = GNMT(args.vocab_size, args.hidden_size, args.num_layers).to(device)
                for batch_size in map(int, args.infer_batch_size.split(",")):
                    for beam in map(int, args.beam_size.split(",")):
                        row = {
                            "math": math,
                            "batch": batch_size,
                            "beam": beam,
                            **bench_inference(model, prec, batch_size, beam, args),
                        }
                        log_results(logger, row, step=("infer", math, batch_size, beam))
                        infer_rows.append(row)
                        print(
                            f"infer {math} batch {batch_size} beam {beam}: "
                            f"{row['sentences/s']:.2f} sent/s",
                            flush=True,
                        )
    if train_rows:
        print("\nTraining (latency in ms per step):")
        print(markdown_table([to_milliseconds(r, ("step_", "latency_")) for r in train_rows]))
    if infer_rows:
        print("Beam search (latency in ms per batch):")
        print(markdown_table([to_milliseconds(r, ("step_", "latency_")) for r in infer_rows]))
    if args.json:
        write_json(args.json, {"setting": setting, "train": train_rows, "infer": infer_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
