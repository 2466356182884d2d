"""Download the BERT fine-tuning data (SQuAD, GLUE) and pretrained weights.

    python -m bert.download --data-dir data/bert squad glue weights
    python -m bert.download squad --squad-versions 1.1
    python -m bert.download glue --glue-tasks MRPC CoLA
    python -m bert.download weights --models bert-large-uncased
    python -m bert.download glue --base-url-override glue=http://mirror/glue
    bert/scripts/download.sh [DATA_DIR] [WHAT...] [-- flags]     (the same, from bash)

DATA_DIR afterwards holds:

    squad/v1.1/{train,dev}-v1.1.json     SQuAD, as published on rajpurkar.github.io
    squad/v2.0/{train,dev}-v2.0.json
    glue/CoLA/, glue/SST-2/, glue/MNLI/  the contents of the GLUE archives (train.tsv,
                                         dev.tsv, test.tsv; MNLI has dev_matched.tsv, ...)
    glue/MRPC/{train,dev,test}.tsv       built in GLUE's layout from the SentEval copy of
                                         the MSR Paraphrase Corpus: the training file's
                                         pairs listed in GLUE's mrpc_dev_ids.tsv form
                                         dev.tsv, the others train.tsv; test.tsv is the
                                         test file with an index column instead of labels
    weights/<model>/                     config.json, vocab.txt and model.safetensors (or
                                         pytorch_model.bin where a model has no safetensors
                                         copy) from the Hugging Face Hub, the format
                                         `bert.model` classes' `from_pretrained` read
    downloads/                           the GLUE archives and the MRPC source files

Checksums: every SQuAD and GLUE file is checked against the sha256 published for its
URL (in TensorFlow Datasets' and Hugging Face datasets' checksum lists). For the weights
no digest is pinned here: the first download records each file's sha256 in
weights/<model>/sha256.json and later runs verify against it.

Every output appears under its final name only when complete (downloads are renamed
after the checksum passes, tables are written to temporary files first). A rerun makes
no request for anything already in place, and an interrupted run resumes: half-done
downloads continue where they stopped. --base-url-override NAME=URL (NAME one of squad,
glue, weights) fetches NAME's files from URL/<file name>; for weights URL replaces the
Hub's address (URL/<repo>/resolve/<revision>/<file>, the layout Hub mirrors use).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import zipfile
from collections.abc import Iterator
from pathlib import Path

from common import cli
from common.atomic import atomic_write
from common.download import (
    MANIFEST,
    DownloadError,
    ExtractError,
    download,
    download_recorded,
    extract,
    name_url,
    read_manifest,
)
from common.errors import UserError

log = logging.getLogger(__name__)

SOURCES = ("squad", "glue", "weights")

SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
SQUAD_VERSIONS = ("1.1", "2.0")
SQUAD_SHA256 = {
    "train-v1.1.json": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    "train-v2.0.json": "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    "dev-v2.0.json": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
}

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data"
SENTEVAL_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
# GLUE itself never hosted MRPC (licence): its download script builds the task from
# SentEval's copy of the corpus and a list of the pairs that form the dev set.
MRPC_TRAIN, MRPC_TEST, MRPC_DEV_IDS = (
    "msr_paraphrase_train.txt",
    "msr_paraphrase_test.txt",
    "mrpc_dev_ids.tsv",
)
GLUE_FILES = {  # file name -> (URL, sha256)
    "CoLA.zip": (
        f"{GLUE_URL}/CoLA.zip",
        "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
    ),
    "SST-2.zip": (
        f"{GLUE_URL}/SST-2.zip",
        "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
    ),
    "MNLI.zip": (
        f"{GLUE_URL}/MNLI.zip",
        "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
    ),
    MRPC_TRAIN: (
        f"{SENTEVAL_URL}/{MRPC_TRAIN}",
        "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
    ),
    MRPC_TEST: (
        f"{SENTEVAL_URL}/{MRPC_TEST}",
        "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784",
    ),
    MRPC_DEV_IDS: (
        f"{GLUE_URL}/{MRPC_DEV_IDS}",
        "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
    ),
}
# The dev ids' first home, with the same bytes: tried when the mirror above fails.
GLUE_FALLBACKS = {
    MRPC_DEV_IDS: [
        "https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com"
        "/o/data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc"
    ]
}
GLUE_TASKS = {  # task -> the files it is made from
    "CoLA": ["CoLA.zip"],
    "SST-2": ["SST-2.zip"],
    "MNLI": ["MNLI.zip"],
    "MRPC": [MRPC_TRAIN, MRPC_TEST, MRPC_DEV_IDS],
}
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC_SPLITS = ("train", "dev", "test")

HUB_URL = "https://huggingface.co"
MODELS = {  # our folder name -> Hub repository (Google's released weights, converted)
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-base-cased": "google-bert/bert-base-cased",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "bert-large-cased": "google-bert/bert-large-cased",
    "bert-large-uncased-whole-word-masking": "google-bert/bert-large-uncased-whole-word-masking",
    "bert-large-uncased-whole-word-masking-finetuned-squad": (
        "google-bert/bert-large-uncased-whole-word-masking-finetuned-squad"
    ),
}
DEFAULT_MODELS = ("bert-base-uncased", "bert-large-uncased")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # first one the Hub has


class PrepareError(UserError, RuntimeError):
    """A downloaded file is not what the recipe expects; the message names the file."""


# --- fetching ------------------------------------------------------------------------------


def _mirror(base_url: str, url: str) -> str:
    """`url`'s file name under `base_url`."""
    return f"{base_url.rstrip('/')}/{url.rsplit('/', 1)[1]}"


def _fetch(urls: list[str], dest: Path, sha256: str, retries: int) -> Path:
    """Download `dest` from the first of `urls` that serves bytes with digest `sha256`
    (or verify the copy already there, without a request)."""
    for i, url in enumerate(urls):
        if dest.exists():
            log.info("verifying %s", dest)
        else:
            log.info("downloading %s", url)
        try:
            return download(url, dest, sha256=sha256, retries=retries)
        except DownloadError as err:
            if i == len(urls) - 1:
                raise
            log.warning("%s; trying %s", err, urls[i + 1])
    raise ValueError("no URL to download from")


# --- SQuAD ---------------------------------------------------------------------------------


def squad(
    data_dir: Path, versions: list[str], base_url: str | None = None, retries: int = 5
) -> list[Path]:
    """Download (or verify) the train and dev files of each SQuAD version; their paths."""
    paths = []
    for version in versions:
        for split in ("train", "dev"):
            name = f"{split}-v{version}.json"
            dest = data_dir / "squad" / f"v{version}" / name
            url = f"{(base_url or SQUAD_URL).rstrip('/')}/{name}"
            paths.append(_fetch([url], dest, SQUAD_SHA256[name], retries))
    return paths


# --- GLUE ----------------------------------------------------------------------------------


def _glue_file(data_dir: Path, name: str, base_url: str | None, retries: int) -> Path:
    url, sha256 = GLUE_FILES[name]
    urls = [_mirror(base_url, url)] if base_url else [url, *GLUE_FALLBACKS.get(name, [])]
    return _fetch(urls, data_dir / "downloads" / name, sha256, retries)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its line break) for a UTF-8 text file (BOM dropped)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, line in enumerate(f, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise PrepareError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_msr_pairs(path: Path) -> list[list[str]]:
    """Rows [quality, id 1, id 2, string 1, string 2] of an MSR Paraphrase Corpus file."""
    rows = []
    for number, line in _numbered_lines(path):
        if number == 1:
            if line.split("\t")[0] != "Quality":
                raise PrepareError(
                    f"{path}, line 1: expected the header {MRPC_HEADER!r}, found {line[:60]!r}"
                )
            continue
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 5:
            raise PrepareError(
                f"{path}, line {number}: expected 5 tab-separated fields, found {len(fields)}"
            )
        rows.append(fields)
    return rows


def read_dev_ids(path: Path) -> set[tuple[str, str]]:
    """The (id 1, id 2) pairs of GLUE's MRPC dev set."""
    ids = set()
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise PrepareError(
                f"{path}, line {number}: expected 2 tab-separated ids, found {len(fields)} fields"
            )
        ids.add((fields[0], fields[1]))
    return ids


def _write_tsv(path: Path, header: str, rows: list[list[str]]) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        f.writelines("\t".join(row) + "\n" for row in rows)


def build_mrpc(train_file: Path, test_file: Path, dev_ids_file: Path, out_dir: Path) -> None:
    """Write MRPC's train.tsv, dev.tsv and test.tsv in GLUE's layout into `out_dir`."""
    dev_ids = read_dev_ids(dev_ids_file)
    train, dev = [], []
    for row in read_msr_pairs(train_file):
        (dev if (row[1], row[2]) in dev_ids else train).append(row)
    missing = dev_ids - {(row[1], row[2]) for row in dev}
    if missing:
        raise PrepareError(
            f"{dev_ids_file}: {len(missing)} of its {len(dev_ids)} pairs are not in "
            f"{train_file} (e.g. {' '.join(min(missing))}); the files do not belong together"
        )
    test = [[str(i), *row[1:]] for i, row in enumerate(read_msr_pairs(test_file))]
    _write_tsv(out_dir / "train.tsv", MRPC_HEADER, train)
    _write_tsv(out_dir / "dev.tsv", MRPC_HEADER, dev)
    _write_tsv(out_dir / "test.tsv", MRPC_TEST_HEADER, test)
    log.info(
        "MRPC: %d train, %d dev, %d test pairs in %s", len(train), len(dev), len(test), out_dir
    )


def glue_ready(data_dir: Path, task: str) -> bool:
    """Whether `task`'s folder is complete (its archive extracted, or MRPC's tables written)."""
    glue = data_dir / "glue"
    if task == "MRPC":
        return all((glue / "MRPC" / f"{split}.tsv").exists() for split in MRPC_SPLITS)
    # extract() leaves this marker once every member is in place.
    return (glue / f".{GLUE_TASKS[task][0]}.extracted").exists()


def glue(
    data_dir: Path, tasks: list[str], base_url: str | None = None, retries: int = 5
) -> list[Path]:
    """Download and lay out each GLUE task unless already done; the tasks' folders."""
    folders = []
    for task in tasks:
        folder = data_dir / "glue" / task
        folders.append(folder)
        if glue_ready(data_dir, task):
            log.info("%s: ready in %s", task, folder)
            continue
        files = [_glue_file(data_dir, name, base_url, retries) for name in GLUE_TASKS[task]]
        if task == "MRPC":
            build_mrpc(*files, folder)
            continue
        (archive,) = files
        log.info("extracting %s", archive)
        extract(archive, data_dir / "glue")
        if not folder.is_dir():
            (data_dir / "glue" / f".{archive.name}.extracted").unlink()  # not done after all
            raise PrepareError(f"{archive}: holds no top-level folder {task}/")
        log.info("%s: ready in %s", task, folder)
    return folders


# --- pretrained weights --------------------------------------------------------------------


def hub_url(model: str, file: str, base_url: str | None = None, revision: str = "main") -> str:
    """The address of `file` in `model`'s Hub repository."""
    return f"{(base_url or HUB_URL).rstrip('/')}/{MODELS[model]}/resolve/{revision}/{file}"


def _forget(path: Path) -> None:
    """Delete a bad download and its recorded digest, so that a rerun fetches it afresh."""
    path.unlink(missing_ok=True)
    manifest_path = path.parent / MANIFEST
    manifest = read_manifest(manifest_path)
    if manifest.pop(path.name, None) is not None:
        with atomic_write(manifest_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def check_weights_file(path: Path) -> None:
    """Raise PrepareError unless `path` looks like what its name promises (an error page
    saved in its place would otherwise have its digest recorded as the truth)."""
    name = path.name
    if name == "config.json":
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PrepareError(f"{path}: not a JSON model configuration ({err})") from None
        if not isinstance(config, dict) or "hidden_size" not in config:
            raise PrepareError(f"{path}: not a BERT configuration (no hidden_size)")
    elif name == "vocab.txt":
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if not head.strip() or b"<html" in head.lower():
            raise PrepareError(f"{path}: not a WordPiece vocabulary")
    elif name == "model.safetensors":
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            start = f.read(1)
        if start != b"{" or size + 8 > path.stat().st_size:
            raise PrepareError(f"{path}: not a safetensors file")
    elif name == "pytorch_model.bin" and not zipfile.is_zipfile(path):
        raise PrepareError(f"{path}: not a torch checkpoint (no zip archive)")


def _fetch_recorded(url: str, dest: Path, retries: int) -> Path:
    log.info(
        "%s %s", "verifying" if dest.exists() else "downloading", dest if dest.exists() else url
    )
    download_recorded(url, dest, retries=retries)
    try:
        check_weights_file(dest)
    except PrepareError as err:
        _forget(dest)
        raise PrepareError(f"{err} (from {url}); deleted it, a rerun fetches it again") from None
    return dest


def _is_missing(err: DownloadError) -> bool:
    cause = err.__cause__
    return isinstance(cause, urllib.error.HTTPError) and cause.code == 404


def weights(
    data_dir: Path,
    models: list[str],
    base_url: str | None = None,
    revision: str = "main",
    retries: int = 5,
) -> list[Path]:
    """Download (or verify) config, vocabulary and weights of each model; their folders."""
    folders = []
    for model in models:
        folder = data_dir / "weights" / model
        for name in ("config.json", "vocab.txt"):
            _fetch_recorded(hub_url(model, name, base_url, revision), folder / name, retries)
        present = [n for n in WEIGHT_FILES if (folder / n).exists()]
        for i, name in enumerate(present or WEIGHT_FILES):
            try:
                _fetch_recorded(hub_url(model, name, base_url, revision), folder / name, retries)
                break
            except DownloadError as err:
                if present or i == len(WEIGHT_FILES) - 1 or not _is_missing(err):
                    raise
                log.info("%s has no %s; trying %s", MODELS[model], name, WEIGHT_FILES[i + 1])
        log.info("%s: ready in %s", model, folder)
        folders.append(folder)
    return folders


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.download", description=__doc__.splitlines()[0])
    p.add_argument(
        "what", nargs="*", metavar="WHAT", default=list(SOURCES), help="squad, glue and/or weights"
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/bert"), help="where it all goes")
    p.add_argument(
        "--squad-versions",
        nargs="+",
        choices=SQUAD_VERSIONS,
        default=list(SQUAD_VERSIONS),
        help="SQuAD versions",
    )
    p.add_argument(
        "--glue-tasks",
        nargs="+",
        choices=list(GLUE_TASKS),
        default=list(GLUE_TASKS),
        help="GLUE tasks",
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(DEFAULT_MODELS),
        metavar="MODEL",
        help=f"pretrained weights from the Hugging Face Hub, any of {', '.join(MODELS)}",
    )
    p.add_argument("--revision", default="main", help="Hub revision (branch, tag or commit)")
    p.add_argument(
        "--base-url-override",
        type=name_url(SOURCES),
        action="append",
        default=[],
        metavar="NAME=URL",
        help="fetch NAME's files from a mirror at URL (see the module docstring); repeatable",
    )
    p.add_argument(
        "--retries", type=cli.nonnegative_int, default=5, help="download retries per file"
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Names of WHAT this script does not know, refused before any download."""
    unknown = [w for w in args.what if w not in SOURCES]
    cli.check_args(p, f"unknown {unknown}: choose from {', '.join(SOURCES)}" if unknown else None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base_urls = dict(args.base_url_override)
    data_dir = args.data_dir
    try:
        if "squad" in args.what:
            squad(data_dir, args.squad_versions, base_urls.get("squad"), args.retries)
        if "glue" in args.what:
            glue(data_dir, args.glue_tasks, base_urls.get("glue"), args.retries)
        if "weights" in args.what:
            weights(data_dir, args.models, base_urls.get("weights"), args.revision, args.retries)
    except (PrepareError, DownloadError, ExtractError, OSError) as err:
        print(f"bert.download: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
