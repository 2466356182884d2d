"""Raw parallel text -> GNMT training files: Moses tokens, cleaning, joint BPE, vocabulary.

    python -m gnmt.prepare_data --train data/wmt16_de_en/train \\
        --dev data/wmt16_de_en/newstest2015 data/wmt16_de_en/newstest2016 \\
        --test data/wmt16_de_en/newstest2014 --out-dir data/wmt16_de_en --merges 32000

Inputs are prefixes of raw (detokenized, UTF-8, one sentence per line) file pairs:
PREFIX.en / PREFIX.de. Outputs in --out-dir, stage by stage (NAME: train, the dev name,
the test name; M: the number of BPE merges):

1. NAME.tok.{en,de}            Moses tokenization (sacremoses, with its escaping); the
                               raw test files are also copied to TEST.{en,de} (BLEU reference)
2. NAME.tok.clean.{en,de}      train and dev only: clean-corpus-n rules (whitespace, length,
                               length ratio), then pairs that latin-1 cannot encode dropped
3. bpe.M                       joint BPE codes learned on the clean training source + target
4. NAME.tok.clean.bpe.M.{en,de} train and dev with BPE; TEST.tok.bpe.M.{en,de} for the test
                               set, which is never cleaned: one output line per input line
5. vocab.bpe.M                 BPE pieces of the training text, most frequent first

Every output is written atomically and skipped when it already exists, so an interrupted
run continues where it stopped. To rebuild an output, delete it and the outputs made
from it. One run per output folder at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sacremoses import MosesTokenizer
from subword_nmt.apply_bpe import BPE
from subword_nmt.learn_bpe import learn_bpe

from common import cli
from common.atomic import atomic_write
from common.logging import progress
from common.parallel import map_chunks
from gnmt.data import DataError

log = logging.getLogger(__name__)

CHUNK_LINES = 2000  # lines per task sent to a worker process


# --- cleaning rules -----------------------------------------------------------------


@dataclass
class CleanStats:
    """Pair counts of one cleaning pass."""

    pairs: int = 0
    bad_length: int = 0  # empty, too short, too long or too unequal (clean-corpus-n)
    not_latin1: int = 0

    @property
    def kept(self) -> int:
        return self.pairs - self.bad_length - self.not_latin1


def _is_latin1(text: str) -> bool:
    return text.isascii() or max(text) <= "\xff"


def clean_pairs(
    pairs: Iterable[tuple[str, str]],
    min_len: int = 1,
    max_len: int = 80,
    max_ratio: float = 9.0,
    stats: CleanStats | None = None,
) -> Iterator[tuple[str, str]]:
    """The pairs that pass Moses' clean-corpus-n rules and then the latin-1 filter.

    Whitespace runs collapse to one space and ends are stripped (the kept lines are
    yielded in that form). A pair is dropped when a side is empty, has fewer than
    `min_len` or more than `max_len` words, when one side has more than `max_ratio` times
    the words of the other, or when a side has characters outside latin-1 (NVIDIA's
    recipe drops those: they are mostly misaligned or foreign-script noise). Drops are
    counted in `stats`.
    """
    stats = stats if stats is not None else CleanStats()
    for src, tgt in pairs:
        stats.pairs += 1
        src_words, tgt_words = src.split(), tgt.split()
        n_src, n_tgt = len(src_words), len(tgt_words)
        if (
            not n_src
            or not n_tgt
            or not min_len <= n_src <= max_len
            or not min_len <= n_tgt <= max_len
            or n_src / n_tgt > max_ratio
            or n_tgt / n_src > max_ratio
        ):
            stats.bad_length += 1
            continue
        src, tgt = " ".join(src_words), " ".join(tgt_words)
        if not (_is_latin1(src) and _is_latin1(tgt)):
            stats.not_latin1 += 1
            continue
        yield src, tgt


# --- input checks and line I/O --------------------------------------------------------


def check_text_file(path: str | os.PathLike) -> int:
    """Number of lines of a UTF-8 text file; `DataError` naming the file (and line) for a
    missing or empty file or bytes that are not UTF-8. Checked before any work starts, so
    bad input fails in seconds rather than after an hour of tokenization."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    count = 0
    with open(path, "rb") as f:
        for count, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{count}: not valid UTF-8 ({exc.reason})") from None
    if not count:
        raise DataError(f"{path}: file is empty")
    return count


def check_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> int:
    """Line count of a file pair; `DataError` when either is bad or the counts differ."""
    n_src, n_tgt = check_text_file(src_path), check_text_file(tgt_path)
    if n_src != n_tgt:
        raise DataError(f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}")
    return n_src


def read_lines(paths: Iterable[Path]) -> Iterator[str]:
    """Lines of the files in turn, without line ends. Only '\\n' ends a line: a stray
    '\\r' or U+2028 inside a sentence must not split it (that would misalign pairs)."""
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line.rstrip("\r\n")


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """`atomic_write`, first deleting the temp files of `path` that a killed run left."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
        stale.unlink(missing_ok=True)
    with atomic_write(path, mode, **open_kwargs) as f:
        yield f


def write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write `lines` to `path` atomically; returns their number."""
    count = 0
    with atomic_output(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    return count


def _moses_fn(lang: str) -> Callable[[list[str]], list[str]]:
    moses = MosesTokenizer(lang=lang)
    return lambda lines: [moses.tokenize(line, return_str=True) for line in lines]


def _bpe_fn(codes_path: str) -> Callable[[list[str]], list[str]]:
    with open(codes_path, encoding="utf-8") as f:
        bpe = BPE(f)
    return lambda lines: [bpe.process_line(line) for line in lines]


def _count_fn() -> Callable[[list[str]], Counter]:
    return lambda lines: Counter(word for line in lines for word in line.split())


def _map_lines(make_fn: Callable, inputs: list[Path], output: Path, workers: int) -> None:
    """Write `make_fn()` applied to the lines of `inputs` (in parallel) to `output`."""
    with progress(desc=output.name, unit=" lines", unit_scale=True) as bar:

        def lines() -> Iterator[str]:
            for chunk in map_chunks(make_fn, read_lines(inputs), workers, CHUNK_LINES):
                bar.update(len(chunk))
                yield from chunk

        count = write_lines(output, lines())
    log.info("wrote %s (%d lines)", output, count)


def count_words(paths: list[Path], workers: int) -> Counter:
    """Occurrences of each space-separated word (or BPE piece) in the files."""
    total: Counter = Counter()
    for counts in map_chunks(_count_fn, read_lines(paths), workers, CHUNK_LINES):
        total.update(counts)
    return total


def _by_frequency(counts: Counter) -> list[tuple[str, int]]:
    """Most frequent first; ties in code-point order, so equal data gives equal files."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


# --- the pipeline -----------------------------------------------------------------------


@dataclass
class _Split:
    name: str
    prefixes: list[Path]


def _lang_file(prefix: Path, lang: str) -> Path:
    return Path(f"{prefix}.{lang}")


def _check_options(merges: int, min_len: int, max_len: int, max_ratio: float, workers: int) -> None:
    if merges < 1:
        raise ValueError(f"merges must be >= 1, got {merges}")
    if not 0 <= min_len <= max_len:
        raise ValueError(f"need 0 <= min_len <= max_len, got {min_len} and {max_len}")
    if max_ratio <= 0:
        raise ValueError(f"max_ratio must be > 0, got {max_ratio}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _tokenize(splits: list[_Split], test: _Split, out: Path, langs: tuple[str, str], workers):
    """Stage 1; all inputs still needed are checked before the first file is tokenized."""
    jobs = [
        (split, lang, out / f"{split.name}.tok.{lang}")
        for split in splits
        for lang in langs
        if not (out / f"{split.name}.tok.{lang}").exists()
    ]
    copies = []  # the raw test files, kept next to the outputs as the BLEU reference
    for lang in langs:
        dest = out / f"{test.name}.{lang}"
        if not dest.exists():
            copies.append((_lang_file(test.prefixes[0], lang), dest))
    to_check = {split.name: split for split, _, _ in jobs}
    if copies:
        to_check[test.name] = test
    for split in to_check.values():
        for prefix in split.prefixes:
            check_parallel(_lang_file(prefix, langs[0]), _lang_file(prefix, langs[1]))
    for src, dest in copies:
        with open(src, "rb") as f, atomic_output(dest, "wb") as g:
            shutil.copyfileobj(f, g)
        log.info("copied %s to %s", src, dest)
    for split, lang, dest in jobs:
        inputs = [_lang_file(prefix, lang) for prefix in split.prefixes]
        _map_lines(functools.partial(_moses_fn, lang), inputs, dest, workers)


def _clean(name: str, out: Path, langs: tuple[str, str], min_len, max_len, max_ratio) -> None:
    """Stage 2 for one split: writes whichever of the two outputs is missing."""
    outputs = [out / f"{name}.tok.clean.{lang}" for lang in langs]
    if all(p.exists() for p in outputs):
        return
    stats = CleanStats()
    inputs = (read_lines([out / f"{name}.tok.{lang}"]) for lang in langs)
    kept = clean_pairs(zip(*inputs, strict=True), min_len, max_len, max_ratio, stats)
    with contextlib.ExitStack() as stack:
        sinks = []
        for path in outputs:
            if path.exists():
                sinks.append(None)
            else:
                sink = atomic_output(path, "w", encoding="utf-8", newline="\n")
                sinks.append(stack.enter_context(sink))
        for pair in kept:
            for sink, line in zip(sinks, pair, strict=True):
                if sink is not None:
                    sink.write(line + "\n")
        if not stats.kept:  # raised inside the `with`: no empty file is left behind
            raise DataError(f"{out / name}.tok.*: no sentence pair is left after cleaning")
    log.info(
        "%s: kept %d of %d pairs; dropped %d (empty, outside %d..%d words or ratio > %g) "
        "and %d (not latin-1)",
        name,
        stats.kept,
        stats.pairs,
        stats.bad_length,
        min_len,
        max_len,
        max_ratio,
        stats.not_latin1,
    )


def _learn_bpe(train_files: list[Path], codes: Path, merges: int, workers: int) -> None:
    """Stage 3: joint BPE over source and target (one shared vocabulary)."""
    if codes.exists():
        return
    # Counting words is the part of learn_bpe that scales with the corpus: do it in
    # parallel, then hand subword-nmt the word counts (its "dictionary" input).
    counts = count_words(train_files, workers)
    dictionary = (f"{word} {n}" for word, n in _by_frequency(counts))
    with atomic_output(codes, "w", encoding="utf-8") as f:
        learn_bpe(dictionary, f, merges, is_dict=True)
    log.info("wrote %s (%d merges asked, %d distinct words)", codes, merges, len(counts))


def _write_vocab(bpe_files: list[Path], vocab: Path, workers: int) -> None:
    """Stage 5: the pieces of the BPE'd training text, most frequent first."""
    if vocab.exists():
        return
    pieces = _by_frequency(count_words(bpe_files, workers))
    count = write_lines(vocab, (piece for piece, _ in pieces))
    log.info("wrote %s (%d pieces)", vocab, count)


def prepare(
    train: str | os.PathLike,
    dev: Sequence[str | os.PathLike] | str | os.PathLike,
    test: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    merges: int = 32000,
    src: str = "en",
    tgt: str = "de",
    dev_name: str = "newstest_dev",
    test_name: str | None = None,
    min_len: int = 1,
    max_len: int = 80,
    max_ratio: float = 9.0,
    workers: int | None = None,
) -> dict[str, Path]:
    """Run the five stages (see the module docstring); returns the files training needs.

    Keys follow gnmt/train.py's file flags: vocab, bpe_codes, train_src, train_tgt,
    test_src (BPE'd), test_tgt (raw, the BLEU reference); plus dev_src, dev_tgt,
    test_src_raw (translation input) and test_tgt_bpe. Raises `DataError` for bad input
    (the message names the file and line) and `ValueError` for bad options.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    _check_options(merges, min_len, max_len, max_ratio, workers)
    out = Path(out_dir)
    langs = (src, tgt)
    dev_prefixes = [dev] if isinstance(dev, (str, os.PathLike)) else list(dev)
    test_name = test_name or Path(test).name
    train_split = _Split("train", [Path(train)])
    dev_split = _Split(dev_name, [Path(p) for p in dev_prefixes])
    test_split = _Split(test_name, [Path(test)])
    if len({"train", dev_name, test_name}) < 3:
        raise ValueError(f"train, dev ({dev_name}) and test ({test_name}) need distinct names")
    out.mkdir(parents=True, exist_ok=True)

    _tokenize([train_split, dev_split, test_split], test_split, out, langs, workers)
    for name in ("train", dev_name):
        _clean(name, out, langs, min_len, max_len, max_ratio)
    codes = out / f"bpe.{merges}"
    _learn_bpe([out / f"train.tok.clean.{lang}" for lang in langs], codes, merges, workers)
    bpe = functools.partial(_bpe_fn, str(codes))
    for name, stem in (("train", "tok.clean"), (dev_name, "tok.clean"), (test_name, "tok")):
        for lang in langs:
            dest = out / f"{name}.{stem}.bpe.{merges}.{lang}"
            if not dest.exists():
                _map_lines(bpe, [out / f"{name}.{stem}.{lang}"], dest, workers)
    train_bpe = [out / f"train.tok.clean.bpe.{merges}.{lang}" for lang in langs]
    vocab = out / f"vocab.bpe.{merges}"
    _write_vocab(train_bpe, vocab, workers)
    return {
        "vocab": vocab,
        "bpe_codes": codes,
        "train_src": train_bpe[0],
        "train_tgt": train_bpe[1],
        "dev_src": out / f"{dev_name}.tok.clean.bpe.{merges}.{src}",
        "dev_tgt": out / f"{dev_name}.tok.clean.bpe.{merges}.{tgt}",
        "test_src": out / f"{test_name}.tok.bpe.{merges}.{src}",
        "test_tgt": out / f"{test_name}.{tgt}",
        "test_src_raw": out / f"{test_name}.{src}",
        "test_tgt_bpe": out / f"{test_name}.tok.bpe.{merges}.{tgt}",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m gnmt.prepare_data",
        description=__doc__.splitlines()[0],
    )
    required = {"required": True, "default": argparse.SUPPRESS, "metavar": "PREFIX"}
    p.add_argument("--train", type=Path, help="raw training files PREFIX.{src,tgt}", **required)
    p.add_argument("--dev", type=Path, nargs="+", help="raw dev sets, joined into one", **required)
    p.add_argument("--dev-name", default="newstest_dev", help="output name of the dev set")
    p.add_argument("--test", type=Path, help="raw test set", **required)
    p.add_argument(
        "--test-name",
        default=None,
        help="output name of the test set; when not given: the last part of --test",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        default=argparse.SUPPRESS,
        help="folder of the outputs (made if missing)",
    )
    p.add_argument("--src", default="en", help="source language suffix")
    p.add_argument("--tgt", default="de", help="target language suffix")
    p.add_argument("--merges", type=cli.positive_int, default=32000, help="BPE merge operations")
    p.add_argument(
        "--min-len", type=cli.nonnegative_int, default=1, help="cleaning: min words per side"
    )
    p.add_argument(
        "--max-len", type=cli.positive_int, default=80, help="cleaning: max words per side"
    )
    p.add_argument(
        "--max-ratio", type=cli.positive_float, default=9.0, help="cleaning: max word ratio"
    )
    p.add_argument(
        "--workers",
        type=cli.positive_int,
        default=os.cpu_count(),
        help="worker processes (default: %(default)s, this machine's CPU count)",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before any file is read."""
    test_name = args.test_name or args.test.name
    names = {"train": "train", "--dev-name": args.dev_name, "--test-name": test_name}
    clash = len(set(names.values())) < len(names)
    cli.check_args(
        p,
        f"--min-len {args.min_len} exceeds --max-len {args.max_len}"
        if args.min_len > args.max_len
        else None,
        f"--dev-name {args.dev_name!r}, --test-name {test_name!r} and the training split "
        "'train' need distinct names"
        if clash
        else None,
        f"--src and --tgt are both {args.src!r}" if args.src == args.tgt else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = prepare(
            args.train,
            args.dev,
            args.test,
            args.out_dir,
            merges=args.merges,
            src=args.src,
            tgt=args.tgt,
            dev_name=args.dev_name,
            test_name=args.test_name,
            min_len=args.min_len,
            max_len=args.max_len,
            max_ratio=args.max_ratio,
            workers=args.workers,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"prepared {args.out_dir}: vocabulary {paths['vocab'].name}, codes {paths['bpe_codes'].name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
