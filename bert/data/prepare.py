"""BERT pre-training data, stage by stage: Wikipedia or PubMed (+ BookCorpus) -> HDF5 shards.

    python -m bert.data.prepare all --data-dir data/bert --vocab-file vocab.txt \\
        [--bookcorpus DIR] [--dump PATH] [--max-seq-length 128 --max-predictions 20] ...

Stages (subcommands) and what they write under --data-dir:

  download   downloads/wikipedia/enwiki-latest-pages-articles.xml.bz2 (+ sha256.json);
             skipped with --dump PATH (a dump already on disk); with --corpus pubmed:
             downloads/pubmed/pubmedYYnNNNN.xml.gz (+ .md5, index.html)
  extract    formatted/wikicorpus_en.txt       one plain-text article per line
             formatted/pubmed.txt              one title + abstract per line (--corpus pubmed)
             formatted/bookcorpus.txt          one book per line (with --bookcorpus DIR)
  segment    segmented/<same names>            one sentence per line, blank line after
                                               each document (NLTK punkt)
  shard      sharded/training/shard_NNNNN.txt  --num-shards shards, documents kept whole
             sharded/eval/shard_NNNNN.txt      with --eval-fraction > 0
  instances  hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_random_seed_
             12345_dupe_factor_5/{training,eval}/shard_NNNNN.hdf5 (NVIDIA's folder name)
  all        every stage in turn; stages whose outputs exist are skipped (the dump is not
             even needed once formatted/wikicorpus_en.txt exists)

segment and shard take every formatted corpus in --data-dir: give PubMed a --data-dir of
its own to pre-train on it alone.

Every output is written atomically and skipped when present, so rerunning an interrupted
command continues where it stopped; to redo a stage, delete its outputs (and those made
from them). Phase 2 (512/80) reuses the text stages of phase 1: run `all` again with the
other lengths. Bad input stops with a one-line error naming the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bert.data import DataError
from bert.data.bookcorpus import format_books
from bert.data.instances import InstanceConfig, create_instance_files, output_dir_name
from bert.data.pubmed import BASELINE_URL, download_baseline, extract_abstracts
from bert.data.sentences import MODES, load_splitter, segment_file
from bert.data.shard import shard_corpus
from bert.data.wikipedia import DUMP_URL, download_dump, extract_articles
from common import cli

log = logging.getLogger(__name__)

WIKI, BOOKS, PUBMED = "wikicorpus_en.txt", "bookcorpus.txt", "pubmed.txt"
CORPORA = (WIKI, BOOKS, PUBMED)  # shard input order
# The flags that only one --corpus reads.
CORPUS_FLAGS = {"wikipedia": ("--dump", "--dump-url"), "pubmed": ("--pubmed-url", "--max-files")}


def _formatted(data_dir: Path) -> Path:
    return data_dir / "formatted"


def _segmented(data_dir: Path) -> Path:
    return data_dir / "segmented"


def _sharded(data_dir: Path) -> Path:
    return data_dir / "sharded"


def _existing(folder: Path) -> list[Path]:
    return [folder / name for name in CORPORA if (folder / name).is_file()]


# --- stages ----------------------------------------------------------------------------


def pubmed_files(args: argparse.Namespace) -> list[Path]:
    """The PubMed baseline files (the first --max-files), downloaded from --pubmed-url."""
    dest = args.data_dir / "downloads" / "pubmed"
    return download_baseline(args.pubmed_url, dest, args.max_files)


def download(args: argparse.Namespace) -> Path | list[Path]:
    """The dump: --dump as given, else downloaded from --dump-url; with --corpus pubmed,
    the baseline files."""
    if args.corpus == "pubmed":
        return pubmed_files(args)
    if args.dump is not None:
        if not args.dump.is_file():
            raise DataError(f"Wikipedia dump {args.dump} does not exist")
        return args.dump
    return download_dump(args.dump_url, args.data_dir / "downloads" / "wikipedia")


def extract(args: argparse.Namespace) -> None:
    """Wikipedia dump (or PubMed files) -> one article per line; BookCorpus folder -> one
    book per line."""
    out = _formatted(args.data_dir)
    corpus = PUBMED if args.corpus == "pubmed" else WIKI
    if (out / corpus).exists():
        log.info("%s exists: extraction skipped", out / corpus)
    elif args.corpus == "pubmed":
        extract_abstracts(pubmed_files(args), out / PUBMED, args.workers)
    else:
        extract_articles(download(args), out / WIKI, args.workers)
    if args.bookcorpus is not None:
        if (out / BOOKS).exists():
            log.info("%s exists: BookCorpus formatting skipped", out / BOOKS)
        else:
            format_books(args.bookcorpus, out / BOOKS)


def segment(args: argparse.Namespace) -> None:
    """Formatted corpora -> one sentence per line, blank line between documents."""
    inputs = _existing(_formatted(args.data_dir))
    if not inputs:
        raise DataError(f"nothing to segment in {_formatted(args.data_dir)}: run extract first")
    todo = [p for p in inputs if not (_segmented(args.data_dir) / p.name).exists()]
    if not todo:
        log.info("all segmented corpora present: segmentation skipped")
        return
    # The model is learned from all corpora, even those already segmented, so that a
    # resumed run splits with the same model as the first.
    splitter = load_splitter(args.punkt, inputs, args.punkt_sample_chars)
    for path in todo:
        segment_file(splitter, path, _segmented(args.data_dir) / path.name, args.workers)


def shard(args: argparse.Namespace) -> None:
    """Segmented corpora -> training (and held-out) text shards."""
    inputs = _existing(_segmented(args.data_dir))
    if not inputs:
        raise DataError(f"nothing to shard in {_segmented(args.data_dir)}: run segment first")
    shard_corpus(
        inputs,
        _sharded(args.data_dir),
        num_shards=args.num_shards,
        eval_fraction=args.eval_fraction,
        num_eval_shards=args.num_eval_shards,
        seed=args.seed,
        workers=args.workers,
    )


def instance_config(args: argparse.Namespace) -> InstanceConfig:
    return InstanceConfig(
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions,
        masked_lm_prob=args.masked_lm_prob,
        short_seq_prob=args.short_seq_prob,
        dupe_factor=args.dupe_factor,
        seed=args.seed,
        whole_word_masking=args.whole_word_masking,
        masking=not args.no_masking,
        do_lower_case=args.do_lower_case,
    )


def instances(args: argparse.Namespace) -> Path:
    """HDF5 files for every text shard under --input-dir; returns the output folder."""
    cfg = instance_config(args)
    input_dir = args.input_dir or _sharded(args.data_dir)
    output_dir = args.output_dir or args.data_dir / output_dir_name(cfg)
    inputs = sorted(input_dir.rglob("*.txt"))
    if not inputs:
        raise DataError(f"no text shards (*.txt) under {input_dir}: run shard first")
    outputs = [output_dir / p.relative_to(input_dir).with_suffix(".hdf5") for p in inputs]
    written = create_instance_files(inputs, outputs, args.vocab_file, cfg, args.workers)
    log.info("%s: %d files, %d instances written in this run", output_dir, len(outputs), written)
    return output_dir


def run_all(args: argparse.Namespace) -> None:
    """Every stage; those whose outputs exist are skipped."""
    extract(args)
    segment(args)
    shard(args)
    instances(args)


STAGE_HELP = {
    "download": "download the Wikipedia dump (skipped with --dump) or the PubMed files",
    "extract": "dump or PubMed files -> one article per line; BookCorpus folder -> one "
    "book per line",
    "segment": "one sentence per line, blank line between documents (punkt)",
    "shard": "training (and held-out) text shards, documents kept whole",
    "instances": "masked LM + next-sentence instances, one HDF5 file per text shard",
    "all": "every stage in turn; those whose outputs exist are skipped",
}
STAGES = {
    "download": download,
    "extract": extract,
    "segment": segment,
    "shard": shard,
    "instances": instances,
    "all": run_all,
}


# --- command line ----------------------------------------------------------------------


class _StoreTyped(argparse.Action):
    """Store the value and, in `<dest>_flag`, the option as typed (an alias or not), so
    that a message about the value names the flag the user gave."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_flag", option_string)


def masking_share(value: str) -> float:
    """argparse type for --masked-lm-prob: a number in (0, 1] (InstanceConfig's range)."""
    try:
        share = cli.fraction(value)
    except argparse.ArgumentTypeError:
        share = 0.0
    if share <= 0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {value!r}")
    return share


def _common_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", type=Path, default=Path("data/bert"), help="working folder")
    p.add_argument(
        "--workers",
        type=cli.positive_int,
        default=os.cpu_count(),
        help="processes (default: %(default)s, this machine's CPU count)",
    )
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=12345, help="seed of sharding and instances"
    )
    return p


def _source_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--corpus",
        choices=tuple(CORPUS_FLAGS),
        default="wikipedia",
        help="English Wikipedia, or the titles and abstracts of PubMed (as BioBERT)",
    )
    p.add_argument(
        "--dump-url", default=None, help=f"Wikipedia dump to download; when not given: {DUMP_URL}"
    )
    p.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="a dump already on disk; when not given: the one of --dump-url, downloaded",
    )
    p.add_argument(
        "--pubmed-url",
        default=None,
        help=f"PubMed baseline folder (an index of .xml.gz files); when not given: {BASELINE_URL}",
    )
    p.add_argument(
        "--max-files",
        type=cli.positive_int,
        default=None,
        help="the first N PubMed files only; when not given: all",
    )
    return p


def _extract_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--bookcorpus",
        type=Path,
        default=None,
        help="folder of BookCorpus .txt books; when not given: the --corpus alone",
    )
    return p


def _segment_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--punkt",
        choices=MODES,
        default="auto",
        help="punkt model: NLTK's pretrained one, one trained on the corpus, or the "
        "pretrained one when installed",
    )
    p.add_argument(
        "--punkt-sample-chars",
        type=cli.positive_int,
        default=20_000_000,
        help="characters of the corpus to train punkt on",
    )
    return p


def _shard_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--num-shards", type=cli.positive_int, default=256, help="training shards")
    p.add_argument(
        "--eval-fraction",
        type=cli.probability,
        default=0.0,
        help="share of documents held out for evaluation, in [0, 1); 0: none",
    )
    p.add_argument(
        "--num-eval-shards",
        type=cli.positive_int,
        default=None,
        help="held-out shards (with --eval-fraction > 0); when not given: 1",
    )
    return p


def _instance_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--vocab-file",
        type=Path,
        required=True,
        default=argparse.SUPPRESS,
        help="WordPiece vocab.txt",
    )
    p.add_argument(
        "--do-lower-case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower-case and strip accents (uncased vocabularies)",
    )
    p.add_argument(
        "--max-seq-length",
        type=cli.positive_int,
        default=128,
        help="tokens per instance (at least 5: [CLS] a [SEP] b [SEP])",
    )
    p.add_argument(
        "--max-predictions",
        "--max-predictions-per-seq",
        dest="max_predictions",
        type=cli.positive_int,
        action=_StoreTyped,
        default=20,
        help="masked tokens per instance at most (up to --max-seq-length - 3)",
    )
    p.set_defaults(max_predictions_flag="--max-predictions")
    p.add_argument(
        "--masked-lm-prob",
        type=masking_share,
        default=0.15,
        help="share of tokens masked, in (0, 1]",
    )
    p.add_argument(
        "--short-seq-prob",
        type=cli.fraction,
        default=0.1,
        help="chance of a shorter target length, in [0, 1]",
    )
    p.add_argument(
        "--dupe-factor",
        type=cli.positive_int,
        default=5,
        help="passes over the data, each masked anew",
    )
    p.add_argument(
        "--whole-word-masking", action="store_true", help="mask all pieces of a word together"
    )
    p.add_argument(
        "--no-masking",
        action="store_true",
        help="write unmasked instances, for masking at load time",
    )
    p.add_argument(
        "--input-dir",
        type=Path,
        default=None,
        help="text shards; when not given: DATA_DIR/sharded",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="HDF5 folder; when not given: DATA_DIR/<NVIDIA-style name>",
    )
    return p


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and, by name, the parser of each stage."""
    parser = cli.ArgumentParser(
        prog="python -m bert.data.prepare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    sub = parser.add_subparsers(
        dest="stage",
        required=True,
        metavar="STAGE",
        help="the stage to run; STAGE --help: its flags",
    )
    common, source, books = _common_flags(), _source_flags(), _extract_flags()
    segment_, shard_, instance_ = _segment_flags(), _shard_flags(), _instance_flags()
    groups = {
        "download": [common, source],
        "extract": [common, source, books],
        "segment": [common, segment_],
        "shard": [common, shard_],
        "instances": [common, instance_],
        "all": [common, source, books, segment_, shard_, instance_],
    }
    stages = {
        name: sub.add_parser(
            name,
            parents=parents,
            help=STAGE_HELP[name],
            description=STAGE_HELP[name],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        for name, parents in groups.items()
    }
    return parser, stages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser, stages = build_parser()
    args = parser.parse_args(argv)
    check_flags(stages[args.stage], args)
    # Defaults that are None only so that check_flags can tell a flag given from one not.
    if "dump_url" in args and args.dump_url is None:
        args.dump_url = DUMP_URL
    if "pubmed_url" in args and args.pubmed_url is None:
        args.pubmed_url = BASELINE_URL
    if "num_eval_shards" in args and args.num_eval_shards is None:
        args.num_eval_shards = 1
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations the stage cannot work with, refused before any file is read
    (`p`: the stage's parser). Only the flags of the stage are looked at."""
    problems: list[str | None] = [
        f"--data-dir {args.data_dir} is a file, not a folder" if args.data_dir.is_file() else None
    ]
    if "dump" in args:
        problems.append(
            cli.conflict(args, "--dump", "--dump-url", "a dump on disk is not downloaded")
        )
        problems += [
            f"{flag} is for --corpus {corpus} only, not --corpus {args.corpus}"
            for corpus, flags in CORPUS_FLAGS.items()
            if corpus != args.corpus
            for flag in flags
            if getattr(args, flag[2:].replace("-", "_")) is not None
        ]
    if "num_eval_shards" in args:
        problems.append(
            f"--num-eval-shards {args.num_eval_shards} needs --eval-fraction > 0: without "
            "held-out documents there are no eval shards"
            if args.num_eval_shards is not None and args.eval_fraction == 0
            else None
        )
    if "max_seq_length" in args:
        length, predictions = args.max_seq_length, args.max_predictions
        problems += [
            f"--max-seq-length {length} is too short: an instance needs at least 5 tokens "
            "([CLS] a [SEP] b [SEP])"
            if length < 5
            else None,
            f"{args.max_predictions_flag} {predictions} exceeds --max-seq-length {length} "
            f"minus its 3 special tokens ([CLS], [SEP], [SEP]): at most {length - 3}"
            if predictions > length - 3
            else None,
            None
            if args.vocab_file.is_file()
            else f"--vocab-file {args.vocab_file} "
            + ("is not a file" if args.vocab_file.exists() else "does not exist"),
        ]
    cli.check_args(p, *problems)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:
        STAGES[args.stage](args)

    return cli.run_main(run)


if __name__ == "__main__":
    sys.exit(main())
