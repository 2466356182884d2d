"""Download WMT16 English-German and turn it into GNMT training files.

    python -m gnmt.wmt16 --data-dir data/wmt16_de_en [--base-url URL] [--merges 32000] [--workers N]
    gnmt/scripts/wmt16_en_de.sh [DATA_DIR] [MERGES]     (the same, from bash)

DATA_DIR afterwards holds:
    downloads/           the five archives from statmt.org, and sha256.json with the digest
                         of each, recorded at its first download and checked on later ones
                         (statmt.org publishes no checksums)
    extracted/           their contents
    train.{en,de}        raw training text: Europarl v7 + Common Crawl + News Commentary v11
    newstest201{4,5,6}.{en,de}
                         raw text of the SGM test sets (one line per <seg>)
    and gnmt.prepare_data's outputs, with dev = newstest2015 + newstest2016 (named
    newstest_dev) and test = newstest2014: train.tok.clean.bpe.32000.{en,de},
    newstest2014.tok.bpe.32000.{en,de}, bpe.32000, vocab.bpe.32000, ...

Each step is skipped when its output exists: a rerun after completion downloads and
rewrites nothing, a rerun after an interruption continues (half-downloaded archives are
resumed). An archive is only fetched while a raw file made from it is missing, so
downloads/ and extracted/ may be deleted once the raw files exist.
--base-url replaces the scheme and host of every URL (for a mirror with the same paths).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from common import cli
from common.download import DownloadError, ExtractError, download_recorded, extract
from gnmt.data import DataError
from gnmt.prepare_data import atomic_output, check_text_file, prepare

log = logging.getLogger(__name__)

LANGS = ("en", "de")
STATMT, STATMT_DATA = "http://www.statmt.org", "http://data.statmt.org"
# name -> (default base URL, path on the server)
ARCHIVES = {
    "europarl": (STATMT, "/europarl/v7/de-en.tgz"),
    "commoncrawl": (STATMT, "/wmt13/training-parallel-commoncrawl.tgz"),
    "news-commentary": (STATMT_DATA, "/wmt16/translation-task/training-parallel-nc-v11.tgz"),
    "dev": (STATMT_DATA, "/wmt16/translation-task/dev.tgz"),
    "test": (STATMT_DATA, "/wmt16/translation-task/test.tgz"),
}
# Training corpora: archive -> file prefix inside extracted/ (+ .en / .de).
TRAIN_PARTS = {
    "europarl": "europarl-v7.de-en",
    "commoncrawl": "commoncrawl.de-en",
    "news-commentary": "training-parallel-nc-v11/news-commentary-v11.de-en",
}
# Test sets: name -> (archive, {language: SGM file inside extracted/}).
TEST_SETS = {
    "newstest2014": (
        "dev",
        {"en": "dev/newstest2014-deen-src.en.sgm", "de": "dev/newstest2014-deen-ref.de.sgm"},
    ),
    "newstest2015": (
        "dev",
        {"en": "dev/newstest2015-ende-src.en.sgm", "de": "dev/newstest2015-ende-ref.de.sgm"},
    ),
    "newstest2016": (
        "test",
        {"en": "test/newstest2016-ende-src.en.sgm", "de": "test/newstest2016-ende-ref.de.sgm"},
    ),
}
DEV_SETS, TEST_SET, DEV_NAME = ("newstest2015", "newstest2016"), "newstest2014", "newstest_dev"


def archive_url(name: str, base_url: str | None = None) -> str:
    """The URL of archive `name`: its statmt.org address, or the same path under `base_url`."""
    default_base, path = ARCHIVES[name]
    return (base_url or default_base).rstrip("/") + path


# --- downloads --------------------------------------------------------------------------


def fetch(name: str, data_dir: Path, base_url: str | None = None) -> Path:
    """Download (or verify) archive `name` and extract it once; returns the extract folder.

    The first download records the archive's sha256 in downloads/sha256.json; later
    calls pass it to `download`, which then refuses an archive whose bytes changed.
    """
    downloads, extracted = data_dir / "downloads", data_dir / "extracted"
    url = archive_url(name, base_url)
    archive = downloads / url.rsplit("/", 1)[1]
    # extract() leaves this marker once done: the archive need not even be present.
    if (extracted / f".{archive.name}.extracted").exists():
        return extracted
    log.info("downloading %s", url)
    download_recorded(url, archive)
    log.info("extracting %s", archive)
    return extract(archive, extracted)


# --- assembling the raw text ------------------------------------------------------------


def concatenate(parts: list[Path], dest: Path) -> None:
    """Join text files byte for byte into `dest` (atomically), each part starting on a new
    line even when the one before lacks a final newline."""
    with atomic_output(dest, "wb") as out:
        for part in parts:
            if not part.is_file():
                raise DataError(f"{part}: no such file (is the archive complete?)")
            last = b"\n"
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    out.write(block)
                    last = block[-1:]
            if last != b"\n":
                out.write(b"\n")


_SEG = re.compile(r"<seg\b[^>]*>(.*?)</seg\s*>", re.DOTALL | re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#([0-9]+)|#[xX]([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));")
_NAMED_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+\s*")


def _entity(match: re.Match) -> str:
    decimal, hexadecimal, named = match.groups()
    if named:
        return _NAMED_ENTITIES[named]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    return chr(code) if code <= sys.maxunicode else match.group(0)  # not a character: kept


def unescape_xml(text: str) -> str:
    """Replace XML's five named entities and numeric character references; leave any other
    '&' alone (HTML's larger entity table would also rewrite text such as '&copy')."""
    return _ENTITY.sub(_entity, text)


def sgm_segments(sgm: str) -> list[str]:
    """The text of every <seg> element, in order, entities unescaped, stripped, and with
    any line break inside turned into a space (one line per segment, always)."""
    return [
        _LINE_BREAKS.sub(" ", unescape_xml(match.group(1))).strip() for match in _SEG.finditer(sgm)
    ]


def sgm_to_text(sgm_path: Path, dest: Path) -> int:
    """Write the segments of an SGM file, one per line, to `dest`; returns their number."""
    check_text_file(sgm_path)
    segments = sgm_segments(sgm_path.read_text(encoding="utf-8"))
    if not segments:
        raise DataError(f"{sgm_path}: no <seg> elements")
    with atomic_output(dest, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(segment + "\n" for segment in segments)
    return len(segments)


def assemble_raw(data_dir: Path, base_url: str | None = None) -> None:
    """Write the raw train.{en,de} and newstest201{4,5,6}.{en,de} that are missing,
    fetching only the archives they come from."""
    for lang in LANGS:
        dest = data_dir / f"train.{lang}"
        if not dest.exists():
            parts = [
                fetch(name, data_dir, base_url) / f"{prefix}.{lang}"
                for name, prefix in TRAIN_PARTS.items()
            ]
            concatenate(parts, dest)
            log.info("wrote %s from %d corpora", dest, len(parts))
    for test_set, (archive, sgm_files) in TEST_SETS.items():
        for lang in LANGS:
            dest = data_dir / f"{test_set}.{lang}"
            if not dest.exists():
                count = sgm_to_text(fetch(archive, data_dir, base_url) / sgm_files[lang], dest)
                log.info("wrote %s (%d segments)", dest, count)


def prepare_wmt16(
    data_dir: str | os.PathLike,
    *,
    base_url: str | None = None,
    merges: int = 32000,
    workers: int | None = None,
) -> dict[str, Path]:
    """Download, assemble and prepare WMT16 en-de in `data_dir`; returns prepare()'s paths."""
    data_dir = Path(data_dir)
    assemble_raw(data_dir, base_url)
    return prepare(
        data_dir / "train",
        [data_dir / name for name in DEV_SETS],
        data_dir / TEST_SET,
        data_dir,
        merges=merges,
        src="en",
        tgt="de",
        dev_name=DEV_NAME,
        workers=workers,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.wmt16", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/wmt16_de_en"),
        help="folder of the downloads and of all outputs",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="mirror (http, https or file URL) replacing http://(data.)statmt.org in every URL",
    )
    p.add_argument("--merges", type=cli.positive_int, default=32000, help="BPE merge operations")
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
    """Flags that cannot work, refused before anything is downloaded."""
    url = args.base_url
    cli.check_args(
        p,
        f"--base-url must be an http://, https:// or file:// URL, got {url!r}"
        if url is not None and not url.lower().startswith(("http://", "https://", "file://"))
        else None,
        f"--data-dir {args.data_dir} is a file, not a folder" if args.data_dir.is_file() else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = prepare_wmt16(
            args.data_dir, base_url=args.base_url, merges=args.merges, workers=args.workers
        )
    except (ValueError, OSError, DownloadError, ExtractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"WMT16 en-de ready in {args.data_dir} (vocabulary {paths['vocab'].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
