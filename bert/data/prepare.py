"""BERT pre-training data, stage by stage: Wikipedia (+ BookCorpus) -> HDF5 instance shards.

    python -m bert.data.prepare all --data-dir data/bert --vocab-file vocab.txt \\
        [--bookcorpus DIR] [--dump PATH] [--max-seq-length 128 --max-predictions 20] ...

Stages (subcommands) and what they write under --data-dir:

  download   downloads/wikipedia/enwiki-latest-pages-articles.xml.bz2 (+ sha256.json);
             skipped with --dump PATH (a dump already on disk)
  extract    formatted/wikicorpus_en.txt       one plain-text article per line
             formatted/bookcorpus.txt          one book per line (with --bookcorpus DIR)
  segment    segmented/<same names>            one sentence per line, blank line after
                                               each document (NLTK punkt)
  shard      sharded/training/shard_NNNNN.txt  --num-shards shards, documents kept whole
             sharded/eval/shard_NNNNN.txt      with --eval-fraction > 0
  instances  hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_random_seed_
             12345_dupe_factor_5/{training,eval}/shard_NNNNN.hdf5 (NVIDIA's folder name)
  all        every stage in turn; stages whose outputs exist are skipped (the dump is not
             even needed once formatted/wikicorpus_en.txt exists)

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
from bert.data.sentences import MODES, load_splitter, segment_file
from bert.data.shard import shard_corpus
from bert.data.wikipedia import DUMP_URL, download_dump, extract_articles
from bert.tokenization import VocabError
from common.download import DownloadError, ExtractError

log = logging.getLogger(__name__)

WIKI, BOOKS = "wikicorpus_en.txt", "bookcorpus.txt"
CORPORA = (WIKI, BOOKS)  # shard input order


def _formatted(data_dir: Path) -> Path:
    return data_dir / "formatted"


def _segmented(data_dir: Path) -> Path:
    return data_dir / "segmented"


def _sharded(data_dir: Path) -> Path:
    return data_dir / "sharded"


def _existing(folder: Path) -> list[Path]:
    return [folder / name for name in CORPORA if (folder / name).is_file()]


# --- stages ----------------------------------------------------------------------------


def download(args: argparse.Namespace) -> Path:
    """The dump: --dump as given, else downloaded from --dump-url."""
    if args.dump is not None:
        if not args.dump.is_file():
            raise DataError(f"Wikipedia dump {args.dump} does not exist")
        return args.dump
    return download_dump(args.dump_url, args.data_dir / "downloads" / "wikipedia")


def extract(args: argparse.Namespace) -> None:
    """Wikipedia dump -> one article per line; BookCorpus folder -> one book per line."""
    out = _formatted(args.data_dir)
    if (out / WIKI).exists():
        log.info("%s exists: extraction skipped", out / WIKI)
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
    "download": "download the Wikipedia dump (skipped with --dump)",
    "extract": "dump -> one article per line; BookCorpus folder -> one book per line",
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


def _common_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", type=Path, default=Path("data/bert"), help="working folder")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)"
    )
    p.add_argument("--seed", type=int, default=12345, help="seed of sharding and instances")
    return p


def _source_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--dump-url", default=DUMP_URL, help="Wikipedia dump to download")
    p.add_argument("--dump", type=Path, help="a dump already on disk (no download)")
    return p


def _extract_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--bookcorpus", type=Path, help="folder of BookCorpus .txt books (optional)")
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
        type=int,
        default=20_000_000,
        help="characters of the corpus to train punkt on",
    )
    return p


def _shard_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--num-shards", type=int, default=256, help="training shards")
    p.add_argument("--eval-fraction", type=float, default=0.0, help="share of documents held out")
    p.add_argument("--num-eval-shards", type=int, default=1, help="held-out shards")
    return p


def _instance_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--vocab-file", type=Path, required=True, help="WordPiece vocab.txt")
    p.add_argument(
        "--do-lower-case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower-case and strip accents (uncased vocabularies)",
    )
    p.add_argument("--max-seq-length", type=int, default=128, help="tokens per instance")
    p.add_argument(
        "--max-predictions",
        "--max-predictions-per-seq",
        dest="max_predictions",
        type=int,
        default=20,
        help="masked tokens per instance at most",
    )
    p.add_argument("--masked-lm-prob", type=float, default=0.15, help="share of tokens masked")
    p.add_argument(
        "--short-seq-prob", type=float, default=0.1, help="chance of a shorter target length"
    )
    p.add_argument(
        "--dupe-factor", type=int, default=5, help="passes over the data, each masked anew"
    )
    p.add_argument(
        "--whole-word-masking", action="store_true", help="mask all pieces of a word together"
    )
    p.add_argument(
        "--no-masking",
        action="store_true",
        help="write unmasked instances, for masking at load time",
    )
    p.add_argument("--input-dir", type=Path, help="text shards; None: DATA_DIR/sharded")
    p.add_argument(
        "--output-dir", type=Path, help="HDF5 folder; None: DATA_DIR/<NVIDIA-style name>"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bert.data.prepare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
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
    for name, parents in groups.items():
        sub.add_parser(
            name,
            parents=parents,
            help=STAGE_HELP[name],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        STAGES[args.stage](args)
    except (DataError, VocabError, DownloadError, ExtractError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
