"""Translate raw text with a GNMT checkpoint; score with sacreBLEU; benchmark inference.

    python -m gnmt.translate --model results/gnmt/model_best.pth --input test.en
        # -> test.en.trans (one line per input line)
    echo "Hello world." | python -m gnmt.translate --model model_best.pth --input -
    python -m gnmt.translate --model model_best.pth --input newstest2014.en \\
        --reference newstest2014.de --batch-size 1,32,128 --beam-size 1,2,5
        # -> a table of BLEU, sentences/s, tokens/s, latency avg/50/90/95/99/100%

Raw text goes through Moses tokenization, BPE and the vocabulary, then beam search,
then de-BPE and Moses detokenization. Sentences are translated in batches of
similar length and written back in input order. Empty lines give empty lines; a line
longer than --max-input-length tokens is truncated with a warning, never dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import sacrebleu
import torch

from common import cli
from common.atomic import atomic_write
from common.benchmark import LatencyRecorder, markdown_table
from common.distributed import resolve_device
from gnmt.beam_search import SearchConfig, beam_search
from gnmt.data import DataError, length_sorted_batches, pad, read_lines
from gnmt.model import GNMT, load_checkpoint
from gnmt.tokenizer import EOS, Tokenizer

STDIN = "-"


def translate_ids(
    model: GNMT,
    sources: list[list[int]],
    batch_size: int,
    cfg: SearchConfig,
    device: torch.device,
    latency: LatencyRecorder | None = None,
) -> list[list[int]]:
    """Beam-search every id sequence (with BOS/EOS); results in input order, no BOS/EOS."""
    results: list[list[int]] = [[] for _ in sources]
    for indices in length_sorted_batches([len(s) for s in sources], batch_size):
        src, lengths = pad([torch.tensor(sources[i]) for i in indices])
        with latency.measure() if latency else contextlib.nullcontext():
            hyps = beam_search(model, src.to(device), lengths.to(device), cfg)
        for i, hyp in zip(indices, hyps, strict=True):
            results[i] = hyp
    return results


def encode_lines(
    lines: list[str], tokenizer: Tokenizer, max_length: int, source_name: str
) -> list[list[int] | None]:
    """Ids per line (None for an empty line); over-long lines are cut with a warning."""
    out: list[list[int] | None] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            out.append(None)
            continue
        ids = tokenizer.encode(line)
        if len(ids) > max_length:
            print(
                f"warning: {source_name}:{number}: {len(ids)} tokens, truncated to {max_length}",
                file=sys.stderr,
            )
            ids = ids[: max_length - 1] + [EOS]
        out.append(ids)
    return out


def read_input(name: str) -> list[str]:
    """Lines of the input file, or of stdin for "-"; non-UTF-8 bytes are a DataError."""
    if name != STDIN:
        return read_lines(name)
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            raise DataError(f"<stdin>:{number}: not valid UTF-8 ({exc.reason})") from exc
    return lines


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def positive_ints(text: str) -> list[int]:
    """Comma-separated positive integers: "1,32,128" -> [1, 32, 128]."""
    try:
        return [positive_int(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="our checkpoint or NVIDIA's")
    p.add_argument("--input", required=True, help="raw text file, or - for stdin")
    p.add_argument("--output", default=None, help="default INPUT.trans, stdout for stdin")
    p.add_argument("--reference", type=Path, default=None, help="raw reference: print BLEU")
    p.add_argument(
        "--batch-size",
        type=positive_ints,
        default="128",
        help="comma-separated for a benchmark table",
    )
    p.add_argument(
        "--beam-size", type=positive_ints, default="5", help="comma-separated for a benchmark table"
    )
    p.add_argument("--max-length", type=positive_int, default=150, help="max generated tokens")
    p.add_argument(
        "--max-input-length", type=positive_int, default=150, help="longer inputs are cut"
    )
    p.add_argument("--len-norm-factor", type=float, default=0.6)
    p.add_argument("--len-norm-const", type=float, default=5.0)
    p.add_argument("--cov-penalty-factor", type=float, default=0.1)
    cli.add_precision_flags(p, "fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--device", type=cli.device_arg, default=None, help="default: cuda if any")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs of the first batch before the timed pass",
    )
    return p.parse_args(argv)


def translate(args: argparse.Namespace) -> None:
    """Everything `main` does; bad input raises DataError, CheckpointError, ..."""
    # Flags, then inputs, are checked before the model is loaded: no GPU time is lost.
    device = resolve_device(args.device)
    prec = cli.create_precision(args, device, gpu="fp16")
    lines = read_input(args.input)
    refs = read_lines(args.reference) if args.reference else None
    if refs is not None and len(refs) != len(lines):
        raise DataError(f"{args.reference} has {len(refs)} lines, {args.input} has {len(lines)}")

    model, tokenizer = load_checkpoint(args.model, map_location=device)
    model = model.to(device).eval()
    if prec.mode in ("fp16", "bf16"):
        model = model.to(prec.autocast_dtype)  # inference only: no master weights needed

    source_name = "<stdin>" if args.input == STDIN else args.input
    encoded = encode_lines(lines, tokenizer, args.max_input_length, source_name)
    todo = [i for i, ids in enumerate(encoded) if ids is not None]
    sources = [encoded[i] for i in todo]

    rows, outputs = [], []
    for batch_size in args.batch_size:
        for beam in args.beam_size:
            cfg = SearchConfig(
                beam,
                args.max_length,
                args.len_norm_factor,
                args.len_norm_const,
                args.cov_penalty_factor,
            )
            latency = LatencyRecorder(device=device)
            with torch.inference_mode():
                for _ in range(args.warmup if sources else 0):
                    translate_ids(model, sources[:batch_size], batch_size, cfg, device)
                hyps = translate_ids(model, sources, batch_size, cfg, device, latency)
            outputs = [""] * len(lines)
            for i, hyp in zip(todo, hyps, strict=True):
                outputs[i] = tokenizer.decode(hyp)
            row = {"batch": batch_size, "beam": beam}
            if refs is not None:
                row["bleu"] = sacrebleu.corpus_bleu(outputs, [refs]).score
            if sources:
                total = sum(latency.latencies)
                row["sent/s"] = len(sources) / total
                row["tok/s"] = sum(len(h) + 1 for h in hyps) / total  # EOS included
                row.update(
                    {
                        f"latency {k} (ms)": v * 1000
                        for k, v in latency.summary().items()
                        if k != "count"
                    }
                )
            rows.append(row)

    if args.output or args.input != STDIN:
        out_path = Path(args.output or f"{args.input}.trans")
        with atomic_write(out_path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in outputs))
        print(f"wrote {len(outputs)} lines to {out_path}", file=sys.stderr)
    else:
        sys.stdout.write("".join(line + "\n" for line in outputs))
    if len(rows) > 1 or refs is not None:
        print(markdown_table(rows), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: translate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
