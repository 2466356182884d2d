"""English Wikipedia for BERT: download the dump, extract one plain-text article per line.

The dump (`pages-articles.xml.bz2`, about 20 GB compressed) is stream-parsed with
`xml.etree.ElementTree.iterparse`, never loaded whole. Only articles are kept: pages in
namespace 0 that are not redirects. Their wikitext becomes plain text with
`mwparserfromhell`; dropped are headings, list items (`*`, `#`, `:`, `;` lines), tables,
templates, references, comments, math and galleries, file/image links, categories,
interlanguage links and bare URLs. Link texts, bold/italic text and paragraphs stay; an
article's paragraphs are joined into one output line (title not included). Articles left
empty by this are dropped and counted.

A damaged dump (truncated compressed stream, malformed or non-XML content, or XML that is
no MediaWiki export) raises `DataError` naming the file and, for XML errors, the line and
column of the decompressed text. The output is then not written at all, not even the
articles read before the damage: a partial corpus would silently shrink the training set,
so the dump should be downloaded again.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import os
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, HTMLEntity, Tag, Text, Wikilink
from mwparserfromhell.parser import ParserError

from bert.data import DataError
from common.atomic import atomic_write
from common.download import download_recorded
from common.logging import progress
from common.parallel import map_chunks

log = logging.getLogger(__name__)

DUMP_URL = "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-pages-articles.xml.bz2"
ARTICLES_PER_TASK = 64

# Link namespaces whose links show nothing in the article's text.
_HIDDEN_LINK_NAMESPACES = {"file", "image", "media", "category"}
# [[de:Titel]]: a link to the same article in another language's Wikipedia.
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)*:")
# Tags whose contents are not prose.
_DROPPED_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "math",
    "chem",
    "ce",
    "score",
    "timeline",
    "imagemap",
    "graph",
    "mapframe",
    "maplink",
    "templatestyles",
    "syntaxhighlight",
    "source",
    "pre",
    "code",
    "includeonly",
}
_LIST_MARKUPS = {"*", "#", ":", ";"}
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)])")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_TABLE_LINE = re.compile(r"^\s*(\{\||\|\}|\||!)")


@dataclass
class ExtractStats:
    """What `extract_articles` saw: pages in the dump and what became of them."""

    pages: int = 0
    articles: int = 0  # written to the output
    redirects: int = 0
    other_namespaces: int = 0
    empty: int = 0  # articles with no text left after cleaning


def download_dump(url: str, dest_dir: str | os.PathLike) -> Path:
    """Fetch the dump into `dest_dir` (resuming, retrying); its sha256 is recorded on the
    first download and verified on later calls, since a "latest" dump changes over time."""
    dest = Path(dest_dir) / url.rstrip("/").rsplit("/", 1)[-1]
    return download_recorded(url, dest)


# --- wikitext -> plain text ------------------------------------------------------------


def _hidden_link(link: Wikilink) -> bool:
    title = str(link.title).strip()
    namespace = title.split(":", 1)[0].strip().lower() if ":" in title else ""
    if namespace in _HIDDEN_LINK_NAMESPACES:
        return True
    return link.text is None and bool(_INTERLANGUAGE.match(title))


def _render(nodes, out: list[str]) -> None:
    """Append the visible prose of `nodes` to `out` (module docstring says what is dropped)."""
    in_list_item = False  # a list marker hides everything up to the end of its line
    for node in nodes:
        if in_list_item:
            if isinstance(node, Text) and "\n" in node.value:
                in_list_item = False
                out.append(node.value[node.value.index("\n") :])
            continue
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, Wikilink):
            if _hidden_link(node):
                continue
            if node.text is not None:
                _render(node.text.nodes, out)
            else:
                out.append(str(node.title).split("#", 1)[0])
        elif isinstance(node, ExternalLink):
            if node.brackets and node.title is not None:  # bare URLs are dropped
                _render(node.title.nodes, out)
        elif isinstance(node, Tag):
            if node.wiki_markup in _LIST_MARKUPS:
                in_list_item = True
            elif str(node.tag).strip().lower() == "br":
                out.append(" ")
            elif str(node.tag).strip().lower() not in _DROPPED_TAGS and node.contents:
                _render(node.contents.nodes, out)
        # Headings, templates, comments and template arguments show nothing.


def wikitext_to_text(wikitext: str) -> str:
    """An article's wikitext -> its prose on one line ('' when nothing is left, or when
    the wikitext cannot be parsed: one odd article must not stop a run of hours)."""
    out: list[str] = []
    try:
        _render(mwparserfromhell.parse(wikitext).nodes, out)
    except (ParserError, RecursionError):
        return ""
    lines = []
    for line in "".join(out).split("\n"):
        if _TABLE_LINE.match(line):  # remains of a table the parser did not recognise
            continue
        line = " ".join(_MAGIC_WORD.sub(" ", line).split())
        if line:
            lines.append(line)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(lines))
    return " ".join(_EMPTY_PARENS.sub(" ", text).split())


def _make_cleaner():
    return lambda texts: [wikitext_to_text(t) for t in texts]


# --- the XML stream --------------------------------------------------------------------


@dataclass
class Page:
    title: str
    namespace: int
    redirect: bool
    text: str


def _local(tag: str) -> str:
    """'{http://www.mediawiki.org/xml/export-0.11/}page' -> 'page'."""
    return tag.rsplit("}", 1)[-1]


def _open_dump(path: Path):
    """A binary stream of the XML, decompressing bz2 or gzip (told by the magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic == b"BZh":
        return bz2.open(path, "rb")
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _page(elem: ET.Element) -> Page:
    title, namespace, redirect, text = "", 0, False, ""
    for child in elem:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            value = (child.text or "0").strip()
            namespace = int(value) if value.lstrip("-").isdigit() else -1
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            for field in child:
                if _local(field.tag) == "text":
                    text = field.text or ""
    if text.lstrip()[:9].upper() == "#REDIRECT":
        redirect = True
    return Page(title, namespace, redirect, text)


def iter_pages(dump: str | os.PathLike) -> Iterator[Page]:
    """Every page of a MediaWiki XML export (plain, .bz2 or .gz), in dump order.

    Raises `DataError` naming the file for a truncated or damaged dump.
    """
    dump = Path(dump)
    pages = 0
    try:
        with _open_dump(dump) as stream:
            root = None
            for event, elem in ET.iterparse(stream, events=("start", "end")):
                if root is None:
                    root = elem
                    if _local(root.tag) != "mediawiki":
                        raise DataError(
                            f"{dump}: not a MediaWiki XML export (root element "
                            f"<{_local(root.tag)}>, expected <mediawiki>)"
                        )
                if event == "end" and _local(elem.tag) == "page":
                    yield _page(elem)
                    pages += 1
                    root.clear()  # finished pages must not pile up in memory
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(
            f"{dump}: malformed XML at line {line}, column {column} of the decompressed "
            f"text after {pages} pages ({exc}); the dump is truncated or damaged: download "
            "it again"
        ) from None
    except EOFError as exc:
        raise DataError(
            f"{dump}: the compressed stream ends early after {pages} pages ({exc}); the "
            "dump is truncated: download it again"
        ) from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"{dump}: cannot decompress ({exc})") from None


def _article_texts(dump: Path, stats: ExtractStats) -> Iterator[str]:
    for page in iter_pages(dump):
        stats.pages += 1
        if page.namespace != 0:
            stats.other_namespaces += 1
        elif page.redirect:
            stats.redirects += 1
        else:
            yield page.text


def extract_articles(
    dump: str | os.PathLike, output: str | os.PathLike, workers: int = 1
) -> ExtractStats:
    """Write the dump's articles as plain text to `output`, one article per line.

    The output appears only when the whole dump was read (module docstring); wikitext is
    cleaned in `workers` processes, the order of the dump kept.
    """
    dump, output = Path(dump), Path(output)
    if not dump.is_file():
        raise DataError(f"Wikipedia dump {dump} does not exist")
    stats = ExtractStats()
    with (
        atomic_write(output, "w", encoding="utf-8") as out,
        progress(desc=f"extracting {dump.name}", unit="articles") as bar,
    ):
        texts = _article_texts(dump, stats)
        for cleaned in map_chunks(_make_cleaner, texts, workers, ARTICLES_PER_TASK):
            for text in cleaned:
                if text:
                    out.write(text + "\n")
                    stats.articles += 1
                else:
                    stats.empty += 1
            bar.update(len(cleaned))
        if stats.articles == 0:
            raise DataError(f"{dump}: no article with text among {stats.pages} pages")
    log.info(
        "%s: %d articles written to %s; skipped %d redirects, %d pages of other namespaces, "
        "%d articles without text",
        dump,
        stats.articles,
        output,
        stats.redirects,
        stats.other_namespaces,
        stats.empty,
    )
    return stats
