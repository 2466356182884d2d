"""Translate raw text with a GNMT checkpoint; score with sacreBLEU; benchmark inference.

    python -m gnmt.translate --model results/gnmt/model_best.pth --input test.en
        # -> test.en.trans (one line per input line)
    echo "Hello world." | python -m gnmt.translate --model model_best.pth --input -
    python -m gnmt.translate --backend onnxruntime --onnx-dir onnx/ --input test.en
        # the same search on graphs written by `python -m gnmt.export`
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
from common.atomic import OutputError, atomic_write, check_writable
from common.benchmark import LatencyRecorder, markdown_table
from common.distributed import resolve_device
from common.logging import progress
from gnmt.beam_search import SearchConfig, add_scoring_flags, beam_search, search_config
from gnmt.data import DataError, length_sorted_batches, pad, read_lines
from gnmt.model import GNMT, load_checkpoint
from gnmt.onnx_backend import load_onnx_folder
from gnmt.tokenizer import EOS, Tokenizer

STDIN = "-"


# How BLEU is computed: NVIDIA's recipe scores `sacrebleu --score-only -lc --tokenize intl`
# (its published figures, and the target, are case-insensitive with the international
# tokenisation); sacreBLEU's defaults (cased, 13a) are the WMT convention.
BLEU_KINDS = {"nvidia": {"lowercase": True, "tokenize": "intl"}, "sacrebleu": {}}


def corpus_bleu(hypotheses: list[str], references: list[str], kind: str = "nvidia") -> float:
    """Detokenized corpus BLEU of `hypotheses` against one reference each."""
    return sacrebleu.corpus_bleu(hypotheses, [references], **BLEU_KINDS[kind]).score


def add_bleu_flag(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--bleu",
        choices=tuple(BLEU_KINDS),
        default="nvidia",
        help="nvidia: case-insensitive, international tokenisation (sacrebleu -lc "
        "--tokenize intl, as NVIDIA's recipe reports BLEU); sacrebleu: sacreBLEU's "
        "defaults (cased, 13a)",
    )


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
    batches = list(length_sorted_batches([len(s) for s in sources], batch_size))
    for indices in progress(batches, desc="translating", unit="batches"):
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


def positive_ints(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, "1,32,128" -> [1, 32, 128]."""
    try:
        return [cli.positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, got {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.translate", description=__doc__.splitlines()[0])
    required = {"required": True, "default": argparse.SUPPRESS}  # no default to show
    p.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        default="pytorch",
        help="run the model in PyTorch (--model), or its ONNX export in onnxruntime "
        "(--onnx-dir, CPU, fp32); the beam search is the same",
    )
    p.add_argument(
        "--model", type=Path, default=None, help="our checkpoint or NVIDIA's (--backend pytorch)"
    )
    p.add_argument(
        "--onnx-dir",
        type=Path,
        default=None,
        help="folder written by python -m gnmt.export (--backend onnxruntime)",
    )
    p.add_argument(
        "--threads",
        type=cli.positive_int,
        default=None,
        help="CPU threads of the model: onnxruntime's (when not given: 1) or torch's "
        "(when not given: torch's choice)",
    )
    p.add_argument("--input", help="raw text file, or - for stdin", **required)
    p.add_argument(
        "--output",
        default=None,
        help="translations, one line per input line; when not given: INPUT.trans, or "
        "stdout for stdin",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="raw reference text: print the BLEU score",
    )
    add_bleu_flag(p)
    p.add_argument(
        "--batch-size",
        type=positive_ints,
        default="128",
        help="sentences per batch; comma-separated for a benchmark table",
    )
    p.add_argument(
        "--beam-size",
        type=positive_ints,
        default="5",
        help="beam width; comma-separated for a benchmark table",
    )
    p.add_argument("--max-length", type=cli.positive_int, default=150, help="most tokens generated")
    p.add_argument(
        "--max-input-length",
        type=cli.positive_int,
        default=150,
        help="longer inputs are cut to this many tokens (BOS/EOS included), with a warning",
    )
    add_scoring_flags(p)
    cli.add_precision_flags(p, "fp16 on a GPU, fp32 on the CPU")
    p.add_argument(
        "--device",
        type=cli.device_arg,
        default=None,
        help="torch device (cpu, cuda, cuda:1); when not given: cuda if there is one",
    )
    p.add_argument(
        "--warmup",
        type=cli.nonnegative_int,
        default=1,
        help="untimed runs of the first batch before the timed pass",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before the model is loaded."""
    same_file = args.input != STDIN and args.output is not None
    same_file = same_file and Path(args.output).resolve() == Path(args.input).resolve()
    cli.check_args(
        p,
        *backend_problems(args),
        f"--max-input-length must be at least 3 (BOS, a token, EOS), got {args.max_input_length}"
        if args.max_input_length < 3
        else None,
        f"--output {args.output} would overwrite --input {args.input}" if same_file else None,
    )


def backend_problems(args: argparse.Namespace) -> list[str | None]:
    """What --backend needs: a checkpoint for pytorch; for onnxruntime an ONNX folder,
    which holds the tokenizer too, on the CPU in fp32 (the precision it was exported in)."""
    if args.backend == "pytorch":
        return [
            "--backend pytorch needs --model" if args.model is None else None,
            "--onnx-dir is read only with --backend onnxruntime" if args.onnx_dir else None,
        ]
    return [
        "--backend onnxruntime needs --onnx-dir (python -m gnmt.export writes one)"
        if args.onnx_dir is None
        else None,
        "--model conflicts with --backend onnxruntime: the --onnx-dir folder holds the tokenizer"
        if args.model is not None
        else None,
        f"--device {args.device}: --backend onnxruntime runs on the CPU"
        if args.device not in (None, "cpu")
        else None,
        f"{args.math_flag}: --backend onnxruntime runs the exported graphs in fp32"
        if args.math not in (None, "fp32")
        else None,
    ]


def translate(args: argparse.Namespace) -> None:
    """Everything `main` does; bad input raises DataError, CheckpointError, ..."""
    # Flags, then inputs, are checked before the model is loaded: no GPU time is lost.
    device = resolve_device("cpu" if args.backend == "onnxruntime" else args.device)
    prec = cli.create_precision(args, device, gpu="fp16")
    out_path = (
        Path(args.output or f"{args.input}.trans") if args.output or args.input != STDIN else None
    )
    if out_path is not None:
        check_writable(out_path, "--output" if args.output else "the output (--input + .trans)")
    lines = read_input(args.input)
    refs = read_lines(args.reference) if args.reference else None
    if refs is not None and len(refs) != len(lines):
        raise DataError(f"{args.reference} has {len(refs)} lines, {args.input} has {len(lines)}")

    if args.backend == "onnxruntime":
        model, tokenizer = load_onnx_folder(args.onnx_dir, threads=args.threads or 1)
    else:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
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
            cfg = search_config(args, beam, args.max_length)
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
                row["bleu"] = corpus_bleu(outputs, refs, args.bleu)
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

    if out_path is not None:
        try:
            with atomic_write(out_path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in outputs))
        except OSError as exc:
            raise OutputError(f"writing {out_path}: {exc.strerror or exc}") from exc
        print(f"wrote {len(outputs)} lines to {out_path}", file=sys.stderr)
    else:
        sys.stdout.write("".join(line + "\n" for line in outputs))
    if len(rows) > 1 or refs is not None:
        print(markdown_table(rows), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: translate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
