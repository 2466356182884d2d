"""Evaluate a Transformer-XL checkpoint: loss and perplexity, throughput and latency.

    python -m transformer_xl.eval --model LM-TFM/checkpoint_best.pt --data data/wikitext-103
    torchrun --nproc_per_node 8 -m transformer_xl.eval --model ... --precision fp16 \\
        --type torchscript --batch_size 16 --save_data
    python -m transformer_xl.eval --model ... --manual "The cat sat on the mat ."

The evaluation lengths default to the recipe's (`--config_file`, section `eval`):
segments of `--tgt_len` tokens with `--mem_len` tokens of memory, positions clamped at
`--clamp_len`, and with `--same_length` every token attends to the same number of
tokens. Each batch is split across the processes and the loss averaged over the whole
batch. `--type torchscript` runs a traced module once the memory has reached its full
length (the first segments, whose memory is still growing, run eagerly); `--type
compile` uses torch.compile. When the checkpoint carries a vocabulary the text is
encoded with it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from common import cli, distributed
from common.benchmark import LatencyRecorder, percentiles, write_json
from common.checkpoint import CheckpointError
from common.config import parse_with_config
from common.logging import Logger, jsonable, progress
from common.precision import (
    Precision,
)
from transformer_xl import data
from transformer_xl.model import MemTransformerLM, load_checkpoint
from transformer_xl.train import check_config_values, clamp_len_arg

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "wt103_base.yaml"


UNKNOWN_WARN = 0.05  # text of the training corpus has few: only words below its count cut-off


def percentile_arg(value: str) -> float:
    """argparse type: a percentile, a number in [0, 100]."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 100], got {value!r}")
    return number


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag combinations that cannot work, before the model or data is read."""
    check_config_values(p, args)
    problems = [
        f"{flag} needs --type torchscript (got --type {args.type})"
        for flag in ("--save_torchscript", "--load_torchscript")
        if getattr(args, flag[2:]) is not None and args.type != "torchscript"
    ]
    cli.check_args(
        p,
        *problems,
        cli.conflict(args, "--load_torchscript", "--save_torchscript", "nothing is traced"),
        cli.conflict(args, "--manual", "--target_perplexity", "--manual checks no target"),
        cli.conflict(args, "--manual", "--target_throughput", "--manual checks no target"),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m transformer_xl.eval", description=__doc__.splitlines()[0]
    )
    p.add_argument("--work_dir", type=Path, default=Path("LM-TFM"), help="logs and saved data")
    p.add_argument(
        "--model", type=Path, default=None,
        help="checkpoint to score; when not given: WORK_DIR/checkpoint_best.pt",
    )  # fmt: skip
    p.add_argument(
        "--data", type=Path, default=Path("data/wikitext-103"),
        help="dataset folder, as transformer_xl.getdata writes it",
    )  # fmt: skip
    p.add_argument(
        "--dataset", choices=data.DATASET_NAMES, default="wt103", help="the dataset in --data"
    )
    p.add_argument(
        "--split", choices=("all", "valid", "test"), default="all", help="splits to score"
    )
    p.add_argument("--manual", nargs="+", default=None, help="score this text instead")
    p.add_argument(
        "--type", choices=("pytorch", "torchscript", "compile"), default="pytorch",
        help="runtime: eager, traced once the memory is full, or torch.compile",
    )  # fmt: skip
    p.add_argument("--batch_size", type=cli.positive_int, default=16, help="global batch (streams)")
    p.add_argument(
        "--tgt_len", type=cli.positive_int, default=64, help="tokens predicted per segment"
    )
    p.add_argument("--ext_len", type=cli.nonnegative_int, default=0, help="extended context")
    p.add_argument("--mem_len", type=cli.nonnegative_int, default=640, help="memory length")
    p.add_argument(
        "--clamp_len", type=clamp_len_arg, default=-1,
        help="clamp relative distances at this; 0 or -1: no clamping",
    )  # fmt: skip
    p.add_argument(
        "--same_length", action="store_true", help="every token attends to as many tokens"
    )
    p.add_argument("--seed", type=cli.nonnegative_int, default=1111, help="random seed")
    cli.add_precision_flags(p, "tf32 on GPUs from Ampere on, else fp32")
    p.add_argument(
        "--device", type=cli.device_arg, default=None,
        help="cpu, cuda or cuda:N; when not given: cuda if a GPU is visible, else cpu",
    )  # fmt: skip
    p.add_argument(
        "--log_all_ranks", action="store_true", help="every process logs, not only rank 0"
    )
    p.add_argument("--dllog_file", default="eval_log.json", help="JSON log, in WORK_DIR")
    p.add_argument(
        "--log_interval", type=cli.nonnegative_int, default=10,
        help="segments between progress lines; 0: none",
    )  # fmt: skip
    p.add_argument(
        "--target_perplexity", type=cli.positive_float, default=None,
        help="exit 1 when a split's perplexity is above it",
    )  # fmt: skip
    p.add_argument(
        "--target_throughput", type=cli.positive_float, default=None,
        help="tokens/s; exit 1 below it",
    )  # fmt: skip
    p.add_argument("--save_data", action="store_true", help="write latencies to WORK_DIR")
    p.add_argument("--repeat", type=cli.positive_int, default=1, help="passes over each split")
    p.add_argument(
        "--max_size", type=cli.positive_int, default=None,
        help="score at most this many batches; when not given: all",
    )  # fmt: skip
    p.add_argument(
        "--percentiles", type=percentile_arg, nargs="+", default=[90, 95, 99],
        help="latency percentiles to report",
    )  # fmt: skip
    p.add_argument(
        "--save_torchscript", type=Path, default=None, help="write the traced model here"
    )
    p.add_argument("--load_torchscript", type=Path, default=None, help="run this traced model")
    args = parse_with_config(p, argv, DEFAULT_CONFIG, "eval")
    check_flags(p, args)
    return args


def trace(model: MemTransformerLM, inp: torch.Tensor, target: torch.Tensor, mems: Any) -> Any:
    """A TorchScript trace of `model` for segments shaped like these, with full memory."""
    with warnings.catch_warnings():
        # The trace's shapes are constant on purpose; torch's warnings about tracing
        # shape-dependent code and about its deprecation say nothing new here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(model, (inp, target, mems), check_trace=False, strict=False)


class Runner:
    """Calls the model segment by segment; a traced or compiled module where it applies."""

    def __init__(self, model: MemTransformerLM, args: argparse.Namespace) -> None:
        self.model, self.args = model, args
        self.traced: Any = None
        if args.load_torchscript:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # as in trace()
                device = next(model.parameters()).device
                self.traced = torch.jit.load(str(args.load_torchscript), map_location=device)
        self.compiled = torch.compile(model) if args.type == "compile" else None
        self.checked = False

    def __call__(self, inp: torch.Tensor, target: torch.Tensor, mems: Any) -> tuple[Any, Any]:
        if self.compiled is not None:
            loss, new_mems = self.compiled(inp, target, mems)
            if not self.checked:  # the compiler can be wrong on some CPUs: never silently
                self.checked = True
                self.check_parity(loss, self.model(inp, target, mems)[0])
            return loss, new_mems
        full = mems is not None and mems[0].size(0) == self.model.mem_len
        if self.args.type != "torchscript" or not full or inp.size(0) != self.args.tgt_len:
            return self.model(inp, target, mems)
        if self.traced is None:
            # Steady state: fixed shapes, so a trace is exact for every later segment.
            self.traced = trace(self.model, inp, target, mems)
            if self.args.save_torchscript:
                self.traced.save(str(self.args.save_torchscript))
        return self.traced(inp, target, mems)

    @staticmethod
    def check_parity(compiled: torch.Tensor, eager: torch.Tensor) -> None:
        """The compiled model's loss on the first segment against the eager model's."""
        got, want = compiled.float().mean().item(), eager.float().mean().item()
        tol = 1e-3 if compiled.dtype == torch.float32 else 3e-2
        if not math.isfinite(got) or abs(got - want) > tol * max(abs(want), 1.0):
            raise data.DataError(
                f"--type compile: the compiled model scores the first segment {got:.5g}, "
                f"the eager model {want:.5g}; torch.compile is wrong on this machine: use "
                "--type pytorch or --type torchscript"
            )


def score(
    runner: Runner,
    iterator: Any,
    args: argparse.Namespace,
    env: distributed.DistEnv,
    prec: Precision,
    latency: LatencyRecorder,
    split: str,
) -> tuple[float, int]:
    """(mean per-token loss over the global batch, tokens scored by this rank)."""
    total = torch.zeros((), dtype=torch.float64, device=env.device)
    count = tokens = 0
    batches = 0
    todo = getattr(iterator, "n_batch", None)
    if todo is not None:
        todo = min(todo * args.repeat, args.max_size or todo * args.repeat)
    bar = progress(total=todo, desc=f"scoring {split}", unit="segments")
    for _ in range(args.repeat):
        mems = None
        for inp, target, seq_len in iterator:
            if args.max_size is not None and batches >= args.max_size:
                break
            with latency.measure(), prec.autocast():
                loss, mems = runner(inp, target, mems)
            total += loss.float().mean().double() * seq_len
            count += seq_len
            tokens += seq_len * inp.size(1)
            batches += 1
            bar.update(1)
            if env.rank == 0 and args.log_interval and batches % args.log_interval == 0:
                running = total.item() / count
                print(f"| {split} batch {batches:>6d} | running loss {running:5.2f}", flush=True)
    bar.close()
    if count == 0:
        raise data.DataError(f"{split}: no segment to score (split shorter than one segment?)")
    return distributed.all_reduce_mean(total).item() / count, tokens


def score_manual(
    model: MemTransformerLM, vocab: data.Vocab, text: str, prec: Precision, device: torch.device
) -> tuple[float, int, int]:
    """(mean loss, scored tokens, unknown tokens) of `text` as one stream with memory."""
    ids = vocab.encode_line(text, add_eos=True)
    unk = sum(1 for i in ids if vocab.unk_id is not None and i == vocab.unk_id)
    if len(ids) < 2:
        raise data.DataError("--manual text must hold at least one word to predict")
    if unk == len(ids) - 1:
        raise data.DataError(f"--manual text: every word is unknown to the vocabulary: {text!r}")
    stream = torch.tensor(ids, device=device).unsqueeze(1)  # [T + 1, 1]
    total, count, mems = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, stream.size(0) - 1, model.tgt_len):
            inp = stream[start : start + model.tgt_len]
            target = stream[start + 1 : start + 1 + model.tgt_len]
            inp = inp[: target.size(0)]
            with prec.autocast():
                loss, mems = model(inp, target, mems)
            total += loss.float().sum().item()
            count += target.numel()
    return total / count, count, unk


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: evaluate(parse_args(argv)))


def evaluate(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    distributed.seed_everything(args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(args.work_dir / args.dllog_file, all_ranks=args.log_all_ranks, stdout=False)
    path = args.model or args.work_dir / "checkpoint_best.pt"
    model, symbols = load_checkpoint(path, map_location="cpu")
    model.reset_length(args.tgt_len, args.ext_len, args.mem_len)
    model.same_length = args.same_length
    model.clamp_len = args.clamp_len
    model = model.to(env.device).eval()

    if args.manual is not None:
        if symbols is None:
            raise CheckpointError(f"{path} carries no vocabulary: --manual needs one")
        vocab = data.Vocab(symbols)
        loss, n, unk = score_manual(model, vocab, " ".join(args.manual), prec, env.device)
        if unk:
            print(f"note: {unk} of {n} words are unknown to the vocabulary", file=sys.stderr)
        if env.rank == 0:
            print(f"| manual text | tokens {n} | loss {loss:5.2f} | ppl {math.exp(loss):9.3f}")
        logger.log((), {"manual_loss": loss, "manual_ppl": math.exp(loss), "tokens": n})
        logger.close()
        distributed.cleanup()
        return 0

    corpus = data.Corpus.load(
        args.data, args.dataset, vocab=data.Vocab(symbols) if symbols else None
    )
    if len(corpus.vocab) != model.n_token:
        raise CheckpointError(
            f"{path}: the model predicts {model.n_token} symbols but the vocabulary of "
            f"{args.data} has {len(corpus.vocab)}"
        )
    if env.rank == 0:
        print(
            f"Evaluating with math {prec.mode} type {args.type} bsz {args.batch_size} "
            f"tgt_len {args.tgt_len} ext_len {args.ext_len} mem_len {args.mem_len} "
            f"clamp_len {args.clamp_len}",
            flush=True,
        )
    runner = Runner(model, args)
    splits = ["valid", "test"] if args.split == "all" else [args.split]
    passed = True
    results: dict[str, Any] = {}
    for split in splits:
        unknown = corpus.unknown_rate(split)
        if unknown is not None and env.rank == 0:
            print(f"{split}: {100 * unknown:.2f}% of the tokens are unknown to the vocabulary")
            if unknown > UNKNOWN_WARN:
                print(
                    f"warning: {100 * unknown:.1f}% of the {split} tokens are unknown to the "
                    f"vocabulary (more than {100 * UNKNOWN_WARN:.0f}%): the perplexity is not "
                    f"comparable to one on the corpus the model was trained on; is --data "
                    f"{args.data} the right corpus?",
                    file=sys.stderr,
                    flush=True,
                )
        iterator = corpus.iterator(
            split,
            args.batch_size,
            args.tgt_len,
            device=env.device,
            ext_len=args.ext_len,
            world_size=env.world_size,
            rank=env.rank,
        )
        latency = LatencyRecorder(warmup=0, device=env.device)
        start = time.perf_counter()
        with torch.no_grad():
            loss, tokens = score(runner, iterator, args, env, prec, latency, split)
        elapsed = time.perf_counter() - start
        lat = latency.latencies
        throughput = tokens * env.world_size / sum(lat)
        stats = percentiles(lat, args.percentiles)
        ppl = math.exp(min(loss, 50))
        if env.rank == 0:
            print(f"Time : {elapsed:.2f}s, {elapsed / len(lat) * 1000:.2f}ms/segment")
            print("=" * 100)
            print(f"| {split} loss {loss:5.2f} | {split} {quality(args.dataset, loss)}")
            print("=" * 100)
            print(f"Throughput Avg: {throughput:.2f} tok/s")
            print(f"Latency Avg: {1000 * sum(lat) / len(lat):.2f} ms")
            for p, value in zip(args.percentiles, stats.values(), strict=True):
                print(f"Latency {p:g}%: {1000 * value:.2f} ms")
            print("=" * 100, flush=True)
        results[split] = {
            "unknown_rate": unknown,
            "loss": loss,
            "ppl": ppl,
            "tokens/s": throughput,
            "latency_avg": sum(lat) / len(lat),
            **{f"latency_{k}": v for k, v in stats.items()},
        }
        logger.log((split,), results[split])
        if args.save_data and env.rank == 0:
            write_json(
                args.work_dir / f"eval_data_{split}.json",
                {
                    "latencies_s": lat,
                    "tokens/s": throughput,
                    "loss": loss,
                    "args": jsonable(vars(args)),
                },
            )
        if args.target_perplexity is not None and ppl > args.target_perplexity:
            print(f"target perplexity {args.target_perplexity} not reached on {split}")
            passed = False
        if args.target_throughput is not None and throughput < args.target_throughput:
            print(f"target throughput {args.target_throughput} tok/s not reached on {split}")
            passed = False
    logger.close()
    distributed.cleanup()
    return 0 if passed else 1


def quality(dataset: str, loss: float) -> str:
    if dataset in ("enwik8", "text8"):
        return f"bpc {loss / math.log(2):9.5f}"
    return f"ppl {math.exp(min(loss, 50)):9.3f}"


if __name__ == "__main__":
    sys.exit(main())
