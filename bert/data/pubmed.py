"""PubMed abstracts for BioBERT-style pre-training: download the baseline, write one
title-and-abstract document per line.

Download. The annual baseline (`BASELINE_URL`) is a folder of `pubmedYYnNNNN.xml.gz`
files, each published with `<name>.md5` holding "MD5(<name>)= <hex>". The folder's HTML
index is saved once as `index.html` and its .xml.gz links, sorted, are the file list
(only the first `max_files` are fetched when given); delete `index.html` to pick up a
newer listing. Every file goes through `common.download` (resumed, retried) and is
verified against its .md5; a file already present with the right digest is not fetched
again, so a rerun that has everything makes no request at all.

Extraction. Each file is stream-parsed (`iterparse` over the gzip stream, every finished
article cleared), and each <PubmedArticle> becomes one line: its ArticleTitle (given a
final full stop when it lacks one, so that the sentence splitter keeps it apart), then
the AbstractText sections of its Abstract in order, a section with a Label attribute
written "LABEL: text". Inline markup (<i>, <sup>, ...) keeps its text and whitespace is
collapsed. Skipped and counted, checked in this order: articles none of whose Language
elements is "eng", articles without AbstractText, and abstracts left empty by cleaning.

Each file is written to its own part, `<output stem>.parts/<file stem>.txt`, atomically;
an existing part is not redone, so an interrupted extraction resumes file by file. A
file that cannot be read to its end (truncated gzip stream, malformed XML) is reported,
counted as bad, and contributes nothing, not even the articles before the damage: a part
holding them would look finished, and no later run would read the file again. The
output joins the parts in file order. The parts are then deleted when every file was
good; otherwise they are kept, so that once a bad file is replaced (and the output
deleted) only that file is extracted again.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from bert.data import DataError
from common.atomic import atomic_write
from common.download import ChecksumError, download
from common.logging import progress
from common.parallel import map_chunks

log = logging.getLogger(__name__)

BASELINE_URL = "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/"
INDEX = "index.html"

_DATA_FILE = re.compile(r"[\w.-]+\.xml\.gz")
_MD5_LINE = re.compile(r"MD5\((?P<name>[^)]+)\)\s*=\s*(?P<digest>[0-9a-fA-F]{32})\b")
_SENTENCE_END = (".", "?", "!")


@dataclass
class PubmedStats:
    """What `extract_abstracts` saw. Counts are of the files read in this call; parts
    left by an earlier call are only counted in `reused`."""

    files: int = 0  # read to their end in this call
    reused: int = 0  # parts from an earlier call, not read again
    bad_files: list[str] = field(default_factory=list)  # one message per file, naming it
    articles: int = 0  # <PubmedArticle> elements read
    written: int = 0  # lines written
    not_english: int = 0
    no_abstract: int = 0
    empty: int = 0  # abstract present but without text

    def add(self, other: PubmedStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# --- download --------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [value for name, value in attrs if name == "href" and value]


def listed_files(index_html: str, base_url: str) -> list[tuple[str, str]]:
    """(file name, URL) of every .xml.gz link on an HTML index page, sorted by name."""
    parser = _Links()
    parser.feed(index_html)
    parser.close()
    found = {}
    for href in parser.hrefs:
        url = urljoin(base_url, href)
        name = urlparse(url).path.rsplit("/", 1)[-1]
        if _DATA_FILE.fullmatch(name):
            found[name] = url
    return sorted(found.items())


def published_md5(md5_file: Path, name: str) -> str:
    """The digest of `name` in its .md5 file. A file that holds none (an error page saved
    in its place) is deleted, so that the next run fetches it again, and DataError names it."""
    match = _MD5_LINE.search(md5_file.read_text(encoding="utf-8", errors="replace"))
    if match is None or match["name"] != name:
        md5_file.unlink()
        raise DataError(
            f"{md5_file}: expected 'MD5({name})= <32 hex digits>'; the file was deleted, "
            "the next run fetches it again"
        )
    return match["digest"].lower()


def download_baseline(
    url: str, dest_dir: str | os.PathLike, max_files: int | None = None, **download_kwargs: Any
) -> list[Path]:
    """Fetch the baseline files listed at `url` (the first `max_files` when given) into
    `dest_dir`, each verified against its .md5; returns their paths in name order.

    `download_kwargs` go to `common.download.download` (retries, timeout, ...). Raises
    `ChecksumError` naming the file whose digest differs; its saved .md5 is deleted with
    it, so that the next run fetches both again.
    """
    dest_dir = Path(dest_dir)
    base = url if url.endswith("/") else url + "/"
    index = download(base, dest_dir / INDEX, **download_kwargs)
    listed = listed_files(index.read_text(encoding="utf-8", errors="replace"), base)
    if not listed:
        index.unlink()  # perhaps an error page: fetch the listing again next time
        raise DataError(f"{base}: the index page links no .xml.gz files")
    files = []
    for name, file_url in progress(listed[:max_files], desc="downloading PubMed", unit="files"):
        md5_file = download(file_url + ".md5", dest_dir / f"{name}.md5", **download_kwargs)
        digest = published_md5(md5_file, name)
        try:
            files.append(download(file_url, dest_dir / name, md5=digest, **download_kwargs))
        except ChecksumError:
            md5_file.unlink()
            raise
    return files


# --- XML -> documents ------------------------------------------------------------------


def _flat_text(elem: ET.Element) -> str:
    """The text of `elem` and everything inside it, whitespace collapsed."""
    return " ".join("".join(elem.itertext()).split())


def article_document(article: ET.Element) -> tuple[str, str | None]:
    """(the article's line, None), or ("", why it is skipped): "not_english",
    "no_abstract" or "empty", each a `PubmedStats` counter."""
    body = article.find("MedlineCitation/Article")
    languages = [] if body is None else [_flat_text(e) for e in body.iterfind("Language")]
    if "eng" not in languages:
        return "", "not_english"
    sections = body.findall("Abstract/AbstractText")
    if not sections:
        return "", "no_abstract"
    abstract = []
    for section in sections:
        text = _flat_text(section)
        if text:
            label = " ".join((section.get("Label") or "").split())
            abstract.append(f"{label}: {text}" if label else text)
    if not abstract:
        return "", "empty"
    title = body.find("ArticleTitle")
    title_text = "" if title is None else _flat_text(title)
    if title_text and not title_text.endswith(_SENTENCE_END):
        title_text += "."
    return " ".join([title_text, *abstract] if title_text else abstract), None


def iter_articles(path: str | os.PathLike) -> Iterator[ET.Element]:
    """Every <PubmedArticle> of a gzipped PubMed XML file, in file order; each leaves the
    parsed tree once the caller asks for the next. DataError naming the file when it is
    damaged."""
    path = Path(path)
    articles = depth = 0
    try:
        with gzip.open(path, "rb") as stream:
            root = None
            for event, elem in ET.iterparse(stream, events=("start", "end")):
                if event == "start":
                    depth += 1
                    if root is None:
                        root = elem
                        if root.tag != "PubmedArticleSet":
                            raise DataError(
                                f"{path}: not a PubMed XML file (root element <{root.tag}>, "
                                "expected <PubmedArticleSet>)"
                            )
                    continue
                depth -= 1
                if depth == 1:  # a child of the root is complete
                    if elem.tag == "PubmedArticle":
                        yield elem
                        articles += 1
                    root.clear()  # finished articles must not pile up in memory
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(
            f"{path}: malformed XML at line {line}, column {column} of the decompressed "
            f"text after {articles} articles ({exc})"
        ) from None
    except EOFError as exc:
        raise DataError(
            f"{path}: the gzip stream ends early after {articles} articles ({exc}); the "
            "file is truncated"
        ) from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress ({exc})") from None


def extract_file(path: Path, part: Path) -> PubmedStats:
    """Write the kept articles of one file to `part`, atomically. A damaged file writes
    nothing and comes back as one of `bad_files`, with no other count."""
    stats = PubmedStats(files=1)
    try:
        with atomic_write(part, "w", encoding="utf-8") as out:
            for article in iter_articles(path):
                stats.articles += 1
                text, skipped = article_document(article)
                if skipped:
                    setattr(stats, skipped, getattr(stats, skipped) + 1)
                else:
                    out.write(text + "\n")
                    stats.written += 1
    except DataError as exc:
        return PubmedStats(bad_files=[str(exc)])
    return stats


def _make_extractor(parts_dir: Path) -> Callable[[list[Path]], list[PubmedStats]]:
    return lambda paths: [extract_file(p, part_path(parts_dir, p)) for p in paths]


def parts_folder(output: Path) -> Path:
    """Where the per-file parts of `output` go: formatted/pubmed.txt -> formatted/pubmed.parts."""
    return output.with_name(output.stem + ".parts")


def part_path(parts_dir: Path, source: Path) -> Path:
    return parts_dir / (source.name.removesuffix(".xml.gz") + ".txt")


def extract_abstracts(
    files: Iterable[str | os.PathLike], output: str | os.PathLike, workers: int = 1
) -> PubmedStats:
    """Write the kept articles of `files` to `output`, one per line, in file order
    (module docstring: parts, resuming, bad files); files are read in `workers` processes."""
    files, output = [Path(f) for f in files], Path(output)
    if not files:
        raise DataError("no PubMed files to extract")
    parts_dir = parts_folder(output)
    parts = [part_path(parts_dir, f) for f in files]
    todo = [f for f, part in zip(files, parts, strict=True) if not part.exists()]
    stats = PubmedStats(reused=len(files) - len(todo))
    extractor = functools.partial(_make_extractor, parts_dir)
    with progress(total=len(todo), desc="extracting PubMed", unit="files") as bar:
        for results in map_chunks(extractor, todo, min(workers, max(len(todo), 1)), 1):
            for result in results:
                stats.add(result)
            bar.update(len(results))
    for message in stats.bad_files:
        log.warning("skipped a damaged PubMed file: %s", message)
    with atomic_write(output, "wb") as out:
        for part in parts:
            if part.exists():
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        if out.tell() == 0:
            raise DataError(
                f"no article with an English abstract in {len(files)} PubMed files "
                f"({len(stats.bad_files)} of them damaged)"
            )
    if stats.bad_files:
        log.warning(
            "%d damaged PubMed files left out of %s; %s is kept: replace them, delete %s "
            "and run again to add them",
            len(stats.bad_files),
            output,
            parts_dir,
            output,
        )
    else:
        shutil.rmtree(parts_dir, ignore_errors=True)
    log.info(
        "PubMed: %d files read (%d more from an earlier run), %d damaged; %d of %d articles "
        "written to %s; skipped %d not in English, %d without abstract, %d with an empty one",
        stats.files,
        stats.reused,
        len(stats.bad_files),
        stats.written,
        stats.articles,
        output,
        stats.not_english,
        stats.no_abstract,
        stats.empty,
    )
    return stats
