"""Download BioBERT's fine-tuning data: BC5CDR (chemicals, diseases) and ChemProt as the
BLUE benchmark prepares them.

    python -m bert.biobert_download --data-dir data/biobert
    python -m bert.biobert_download --data-dir data/biobert --base-url http://mirror/blue

Source: bert_data.zip of the BLUE benchmark's release 0.1 (BLUE_URL), the release NVIDIA's
BioBERT recipe names for its NER data. The same archive holds ChemProt in the layout
bert.run_re reads (index, sentence with @CHEMICAL$ / @GENE$, label); the recipe's own
relation data (the tree-LSTM files of arwhirang/recursive_chemprot) come in another
layout, which run_re does not read. DATA_DIR afterwards holds:

    BC5CDR/chem/{train,devel,test}.tsv      token<TAB>...<TAB>tag, for bert.run_ner
    BC5CDR/disease/{train,devel,test}.tsv   (ner_bc5cdr-chem.sh, ner_bc5cdr-disease.sh)
    chemprot/{train,dev,test}.tsv           for bert.run_re (rel_chemprot.sh)
    downloads/bert_data.zip                 the archive, and its sha256 in
    downloads/sha256.json                   (recorded by the first download)

BLUE publishes no checksum: as bert.download does for the weights, the first download
records the archive's sha256 and later runs verify against it, so an archive that
changed on the server (or on disk) is refused. A file that is not a zip archive (an
error page) is deleted and its digest forgotten. The task files are copied out of the
archive, each written atomically; once all are in place a rerun makes no request, and
a deleted one is restored from the archive on disk. PubMed, the pre-training corpus,
comes from `python -m bert.data.prepare all --corpus pubmed` (docs/BERT.md).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import zipfile
from pathlib import Path

from bert.download import PrepareError, _forget
from common import cli
from common.atomic import atomic_write
from common.download import DownloadError, download_recorded

log = logging.getLogger(__name__)

BLUE_URL = "https://github.com/ncbi-nlp/BLUE_Benchmark/releases/download/0.1"
ARCHIVE = "bert_data.zip"
# Our folder -> (the folder inside the archive, its files).
TASKS = {
    "BC5CDR/chem": ("BC5CDR/chem", ("train.tsv", "devel.tsv", "test.tsv")),
    "BC5CDR/disease": ("BC5CDR/disease", ("train.tsv", "devel.tsv", "test.tsv")),
    "chemprot": ("ChemProt", ("train.tsv", "dev.tsv", "test.tsv")),
}


def task_files(data_dir: Path) -> dict[Path, str]:
    """Every file this module writes -> its member path's tail inside the archive."""
    return {
        data_dir / folder / name: f"{source}/{name}"
        for folder, (source, names) in TASKS.items()
        for name in names
    }


def fetch_archive(data_dir: Path, base_url: str | None = None, retries: int = 5) -> Path:
    """Download bert_data.zip (or verify the copy on disk against its recorded digest)."""
    dest = data_dir / "downloads" / ARCHIVE
    url = f"{(base_url or BLUE_URL).rstrip('/')}/{ARCHIVE}"
    log.info(
        "%s %s", "verifying" if dest.exists() else "downloading", dest if dest.exists() else url
    )
    download_recorded(url, dest, retries=retries)
    if not zipfile.is_zipfile(dest):
        _forget(dest)
        raise PrepareError(
            f"{dest}: not a zip archive (from {url}); deleted it, a rerun fetches it again"
        )
    return dest


def copy_out(archive: Path, wanted: dict[Path, str]) -> None:
    """Write each wanted file from its member of `archive`: the member whose path ends
    with the given tail (the archive's top folder is bert_data/)."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if not m.endswith("/")]
        for dest, tail in wanted.items():
            found = [m for m in members if m == tail or m.endswith("/" + tail)]
            if len(found) != 1:
                what = "no member" if not found else f"{len(found)} members"
                raise PrepareError(f"{archive}: {what} ending in {tail}")
            with zf.open(found[0]) as source, atomic_write(dest, "wb") as target:
                shutil.copyfileobj(source, target)


def download_biobert_data(
    data_dir: Path, base_url: str | None = None, retries: int = 5
) -> list[Path]:
    """Put the BC5CDR and ChemProt files in place unless they are; the task folders."""
    folders = [data_dir / folder for folder in TASKS]
    missing = {p: tail for p, tail in task_files(data_dir).items() if not p.is_file()}
    if missing:
        copy_out(fetch_archive(data_dir, base_url, retries), missing)
    for folder in folders:
        log.info("ready: %s", folder)
    return folders


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m bert.biobert_download", description=__doc__.splitlines()[0]
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/biobert"), help="where it all goes")
    p.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help=f"fetch URL/{ARCHIVE} (a mirror) instead of {BLUE_URL}/{ARCHIVE}",
    )
    p.add_argument(
        "--retries", type=cli.nonnegative_int, default=5, help="download retries per file"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        download_biobert_data(args.data_dir, args.base_url, args.retries)
    except (PrepareError, DownloadError, OSError, zipfile.BadZipFile) as err:
        print(f"bert.biobert_download: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
