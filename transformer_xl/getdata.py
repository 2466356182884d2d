"""Download and prepare the Transformer-XL datasets.

    python -m transformer_xl.getdata --data-dir data --datasets wt103 enwik8 text8 lm1b
    python -m transformer_xl.getdata --datasets wt103 --base-url-override wt103=http://mirror/dir
    transformer_xl/scripts/getdata.sh [DATA_DIR] [DATASETS...]     (the same, from bash)

DATA_DIR afterwards holds (what `transformer_xl.data.Corpus.load` reads):

    wikitext-103/{train,valid,test}.txt   wiki.{train,valid,test}.tokens of WikiText-103
    enwik8/{train,valid,test}.txt         the first 100M bytes of Wikipedia XML: the last
                                          HELDOUT bytes are test, the HELDOUT before them
                                          valid, the rest (90M) train; every byte written as
                                          its decimal value, tokens separated by spaces,
                                          and byte 10 as a line break
    text8/{train,valid,test}.txt          the same split by characters, each part stripped,
                                          every character a token, '_' for a space
    one-billion-words/                    the extracted lm1b archive
                                          (1-billion-word-language-modeling-benchmark-r13output/
                                          training-monolingual.tokenized.shuffled/news.en-*
                                          are the training shards), 1b_word_vocab.txt, and
                                          valid.txt = test.txt = heldout shard 00000-of-00050
    downloads/                            the archives, and sha256.json with the digest of
                                          each, recorded at its first download and checked
                                          on later ones (no checksums are published)

HELDOUT is --heldout-size (5,000,000, the reference split). Every output is written
under a temporary name and renamed when complete; a dataset whose outputs all exist is
skipped without any request, and an interrupted run resumes (half-downloaded archives
continue). --base-url-override NAME=URL fetches dataset NAME's files from URL/<file name>.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from common import cli
from common.atomic import atomic_write, replace_durably
from common.download import DownloadError, ExtractError, download_recorded, extract, name_url
from common.errors import UserError

log = logging.getLogger(__name__)

DATASETS = ("wt103", "enwik8", "text8", "lm1b")
SPLITS = ("train", "valid", "test")
HELDOUT = 5_000_000  # bytes (enwik8) or characters (text8) in each of valid and test
LM1B_ROOT = "1-billion-word-language-modeling-benchmark-r13output"
LM1B_HELDOUT = f"{LM1B_ROOT}/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"
LM1B_VOCAB = "1b_word_vocab.txt"

# dataset -> the URLs of its files
URLS = {
    "wt103": ["https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"],
    "enwik8": ["http://mattmahoney.net/dc/enwik8.zip"],
    "text8": ["http://mattmahoney.net/dc/text8.zip"],
    "lm1b": [
        f"http://www.statmt.org/lm-benchmark/{LM1B_ROOT}.tar.gz",
        f"https://github.com/rafaljozefowicz/lm/raw/master/{LM1B_VOCAB}",
    ],
}
FOLDERS = {
    "wt103": "wikitext-103",
    "enwik8": "enwik8",
    "text8": "text8",
    "lm1b": "one-billion-words",
}
CHUNK = 1 << 20  # bytes or characters converted per write


class PrepareError(UserError, RuntimeError):
    """An archive's contents are not what the recipe expects; the message names the file."""


# --- downloads ---------------------------------------------------------------------------


def fetch(url: str, data_dir: Path, retries: int = 5) -> Path:
    """Download `url` into DATA_DIR/downloads (or verify the copy there); returns its path.

    The first download records the file's sha256 in downloads/sha256.json; later calls
    pass it to `download`, which then refuses a file whose bytes changed.
    """
    downloads = data_dir / "downloads"
    dest = downloads / url.rsplit("/", 1)[1]
    log.info(
        "%s %s", "verifying" if dest.exists() else "downloading", dest if dest.exists() else url
    )
    download_recorded(url, dest, retries=retries)
    return dest


def dataset_urls(dataset: str, base_url: str | None = None) -> list[str]:
    """The URLs of `dataset`'s files; with `base_url`, the same file names under it."""
    if base_url is None:
        return list(URLS[dataset])
    return [f"{base_url.rstrip('/')}/{url.rsplit('/', 1)[1]}" for url in URLS[dataset]]


# --- outputs -----------------------------------------------------------------------------


def outputs(dataset: str, data_dir: Path) -> list[Path]:
    """The files whose presence means `dataset` is ready (each written atomically)."""
    folder = data_dir / FOLDERS[dataset]
    if dataset != "lm1b":
        return [folder / f"{split}.txt" for split in SPLITS]
    archive = URLS["lm1b"][0].rsplit("/", 1)[1]
    # extract() writes this marker after every member is in place.
    marker = folder / f".{archive}.extracted"
    return [marker, folder / LM1B_VOCAB, folder / "valid.txt", folder / "test.txt"]


def _copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as source, atomic_write(dest, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)


def _write_tokens(dest: Path, chunks: Iterable[Iterable[str]]) -> None:
    """Write all tokens of `chunks` separated by single spaces, atomically."""
    with atomic_write(dest, "w", encoding="utf-8", newline="\n") as f:
        first = True
        for chunk in chunks:
            text = " ".join(chunk)
            if not text:
                continue
            if not first:
                f.write(" ")
            f.write(text)
            first = False


def split_heldout(data: bytes | str, heldout: int, source: Path) -> dict[str, bytes | str]:
    """train / valid / test: valid and test are the last two blocks of `heldout` items."""
    if len(data) <= 2 * heldout:
        raise PrepareError(
            f"{source}: {len(data)} bytes or characters, too few for a train part and two "
            f"held-out parts of {heldout}"
        )
    return {
        "train": data[: -2 * heldout],
        "valid": data[-2 * heldout : -heldout],
        "test": data[-heldout:],
    }


def _read_member(archive: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    except KeyError:
        raise PrepareError(f"{archive}: no member {member!r}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PrepareError(f"{archive}: cannot read {member!r} ({err})") from None


# Byte -> token for enwik8: its decimal value; a newline byte stays a line break.
_BYTE_TOKENS = [str(b) for b in range(256)]
_BYTE_TOKENS[10] = "\n"


def _enwik8_tokens(part: bytes) -> Iterable[Iterable[str]]:
    for i in range(0, len(part), CHUNK):
        yield map(_BYTE_TOKENS.__getitem__, part[i : i + CHUNK])


def _text8_tokens(part: str) -> Iterable[str]:
    part = part.strip().replace(" ", "_")
    for i in range(0, len(part), CHUNK):
        yield part[i : i + CHUNK]  # a string is its characters: " ".join spaces them


# --- datasets ----------------------------------------------------------------------------


def prepare_wt103(data_dir: Path, files: list[Path]) -> None:
    (archive,) = files
    folder = data_dir / FOLDERS["wt103"]
    staging = data_dir / "downloads" / archive.name.removesuffix(".zip")
    for split in SPLITS:
        final = folder / f"{split}.txt"
        if final.exists():
            continue
        tokens = staging / "wikitext-103" / f"wiki.{split}.tokens"
        if not tokens.exists():
            shutil.rmtree(staging, ignore_errors=True)  # a partial earlier run: start afresh
            extract(archive, staging)
        if not tokens.exists():
            raise PrepareError(f"{archive}: no member wikitext-103/wiki.{split}.tokens")
        folder.mkdir(parents=True, exist_ok=True)
        replace_durably(tokens, final)
    shutil.rmtree(staging, ignore_errors=True)


def _prepare_chars(
    data_dir: Path,
    dataset: str,
    archive: Path,
    read: Callable[[bytes], bytes | str],
    tokens: Callable[[bytes | str], Iterable[Iterable[str]]],
    heldout: int,
) -> None:
    folder = data_dir / FOLDERS[dataset]
    todo = [split for split in SPLITS if not (folder / f"{split}.txt").exists()]
    if not todo:
        return
    member = archive.name.removesuffix(".zip")
    parts = split_heldout(read(_read_member(archive, member)), heldout, archive)
    for split in todo:
        log.info("writing %s", folder / f"{split}.txt")
        _write_tokens(folder / f"{split}.txt", tokens(parts[split]))


def prepare_enwik8(data_dir: Path, files: list[Path], heldout: int = HELDOUT) -> None:
    (archive,) = files
    _prepare_chars(data_dir, "enwik8", archive, bytes, _enwik8_tokens, heldout)


def prepare_text8(data_dir: Path, files: list[Path], heldout: int = HELDOUT) -> None:
    (archive,) = files

    def decode(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PrepareError(f"{archive}: text8 is not UTF-8 (byte {err.start})") from None

    _prepare_chars(data_dir, "text8", archive, decode, _text8_tokens, heldout)


def prepare_lm1b(data_dir: Path, files: list[Path]) -> None:
    archive, vocab = files
    folder = data_dir / FOLDERS["lm1b"]
    log.info("extracting %s", archive)
    extract(archive, folder)
    heldout = folder / LM1B_HELDOUT
    if not heldout.is_file():
        raise PrepareError(
            f"{heldout}: missing after extracting {archive} (delete "
            f"{folder / ('.' + archive.name + '.extracted')} to extract again)"
        )
    for name in ("valid.txt", "test.txt"):
        if not (folder / name).exists():
            _copy(heldout, folder / name)
    if not (folder / LM1B_VOCAB).exists():
        _copy(vocab, folder / LM1B_VOCAB)


def prepare(
    dataset: str,
    data_dir: str | os.PathLike,
    base_url: str | None = None,
    heldout: int = HELDOUT,
    retries: int = 5,
) -> Path:
    """Download and prepare `dataset` in `data_dir` unless done; returns its folder."""
    data_dir = Path(data_dir)
    folder = data_dir / FOLDERS[dataset]
    if all(path.exists() for path in outputs(dataset, data_dir)):
        log.info("%s: ready in %s", dataset, folder)
        return folder
    files = [fetch(url, data_dir, retries) for url in dataset_urls(dataset, base_url)]
    if dataset == "wt103":
        prepare_wt103(data_dir, files)
    elif dataset == "enwik8":
        prepare_enwik8(data_dir, files, heldout)
    elif dataset == "text8":
        prepare_text8(data_dir, files, heldout)
    else:
        prepare_lm1b(data_dir, files)
    log.info("%s: ready in %s", dataset, folder)
    return folder


# --- command line ------------------------------------------------------------------------


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse mirrors that would be ignored, before anything is downloaded."""
    names = [name for name, _ in args.base_url_override]
    unused = [name for name in names if name not in args.datasets]
    twice = [name for name in DATASETS if names.count(name) > 1]
    cli.check_args(
        p,
        f"--base-url-override {unused[0]}=...: {unused[0]} is not in --datasets "
        f"({' '.join(args.datasets)})"
        if unused
        else None,
        f"--base-url-override gives {twice[0]} more than one URL" if twice else None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m transformer_xl.getdata", description=__doc__.splitlines()[0]
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets go")
    p.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="which to prepare"
    )
    p.add_argument(
        "--base-url-override",
        type=name_url(DATASETS),
        action="append",
        default=[],
        metavar="NAME=URL",
        help="fetch dataset NAME's files from URL/<file name> (a mirror); repeatable",
    )
    p.add_argument(
        "--heldout-size",
        type=cli.positive_int,
        default=HELDOUT,
        help="enwik8 bytes / text8 characters in each of valid and test",
    )
    p.add_argument(
        "--retries", type=cli.nonnegative_int, default=5,
        help="download retries per file after the first attempt",
    )  # fmt: skip
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base_urls = dict(args.base_url_override)
    try:
        for dataset in args.datasets:
            prepare(dataset, args.data_dir, base_urls.get(dataset), args.heldout_size, args.retries)
    except (PrepareError, DownloadError, ExtractError, OSError) as err:
        print(f"getdata: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
