"""A generated MediaWiki dump, BookCorpus-style books and a WordPiece vocabulary for demos
and tests. Generated text, not Wikipedia and not BookCorpus.

The articles (about made-up people and towns) carry the markup the extractor must remove
(infobox and other templates, headings, lists, tables, references, file links,
categories) around prose whose plain text is known, so a test can compare the extraction
line by line. The prose uses abbreviations (Mr., Dr., St., a.m., p.m.) the way
encyclopedic text does, so punkt trained on it learns them. Names are built from
syllables, so many are rare and WordPiece cuts them into "##" pieces. The dump also holds
pages the extractor must skip: redirects, talk and template pages, and an article whose
text is nothing but markup. Output is deterministic for a seed.

    python -m bert.data.toy_corpus --out-dir data/bert_toy --articles 200 --books 3
writes enwiki-toy-pages-articles.xml.bz2, books/book_000.txt ..., vocab.txt and README.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from bert.tokenization import CONTINUATION, BasicTokenizer
from common import cli
from common.atomic import atomic_write

DUMP_NAME = "enwiki-toy-pages-articles.xml.bz2"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NOTICE = "Generated text for demos and tests (bert.data.toy_corpus): not Wikipedia."

WOMEN = ["Anna", "Clara", "Elena", "Greta", "Ida"]
MEN = ["Boris", "David", "Felix", "Hugo", "Jonas"]
FIRST = WOMEN + MEN
SYLLABLES = ["bel", "cor", "dan", "ell", "fen", "gar", "hol", "ker", "lin", "mor", "nev", "ost"]
PLACE_ENDS = ["port", "moor", "ford", "wick", "stead", "haven", "by", "ton"]
ROLES = ["painter", "engineer", "composer", "sailor", "historian", "architect", "teacher"]
ADJECTIVES = ["careful", "generous", "patient", "restless", "quiet", "cheerful", "stubborn"]
THINGS = ["bridges", "paintings", "songs", "ships", "letters", "houses", "maps"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "March", "April", "June", "August", "October", "December"]
REGIONS = ["northern", "southern", "eastern", "western", "central"]


@dataclass
class ToyArticle:
    title: str
    wikitext: str
    text: str  # what the extractor must produce: the prose on one line


def _surname(rng: random.Random) -> str:
    return "".join(rng.sample(SYLLABLES, rng.randint(2, 3))).capitalize()


def _place(rng: random.Random) -> str:
    return (rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(PLACE_ENDS)).capitalize()


def _person_sentences(rng: random.Random, name: str, he: str, his: str) -> list[str]:
    """Prose about a person; `he`/`his` are the pronouns."""
    surname = name.split()[-1]
    place, other, year = _place(rng), _surname(rng), rng.randint(1820, 1960)
    hour = rng.randint(1, 12)
    candidates = [
        f"{name} was a {rng.choice(ROLES)} from [[{place}]].",
        f"In {year}, {he.lower()} moved to {place} with {his.lower()} family.",
        f"In {year + 3}, Mr. {surname} and Dr. {other} opened a workshop in {place}.",
        f"{he} arrived in {place} at {hour} p.m. on a {rng.choice(WEEKDAYS)} in "
        f"{rng.choice(MONTHS)} {year + 1}.",
        f"By {hour} a.m. the next day, Dr. {other} had finished the work in {place}.",
        f"{he} later lived on St. {rng.choice(FIRST)} Street near the harbour of {place}.",
        f"Many of {his.lower()} {rng.choice(THINGS)} are kept in the museum of [[{place}]].",
        f"Later, Mrs. {other} described Mr. {surname} as a {rng.choice(ADJECTIVES)} and "
        f"{rng.choice(ADJECTIVES)} {rng.choice(ROLES)}.",
        f"The largest of {his.lower()} {rng.choice(THINGS)} is about {rng.randint(2, 90)}."
        f"{rng.randint(1, 9)} metres long.",
        f"The {rng.choice(THINGS)} of Mr. {surname} were shown in {place} in {year + 7}.",
        f"For {rng.randint(2, 30)} years {his.lower()} family lived near the station of {place}.",
        f"A long road leads from {place} to the {rng.choice(REGIONS)} region of {other}.",
    ]
    return rng.sample(candidates, rng.randint(4, 7))


def _place_sentences(rng: random.Random, town: str) -> list[str]:
    founder, other, year = _surname(rng), _place(rng), rng.randint(1100, 1900)
    candidates = [
        f"{town} is a {rng.choice(['small', 'large', 'old'])} town in the "
        f"{rng.choice(REGIONS)} region.",
        f"The town was founded in {year} by Mr. {founder}.",
        f"Its population was {rng.randint(800, 90000)} in {rng.randint(1950, 2020)}.",
        f"Trains leave for [[{other}]] every day at {rng.randint(5, 11)} a.m. and "
        f"{rng.randint(1, 11)} p.m. from the old station.",
        f"St. {rng.choice(FIRST)}'s Church was built in {year + rng.randint(5, 300)}.",
        f"The first history of {town} was written by Dr. {founder} in "
        f"{year + rng.randint(50, 400)}.",
        f"The river flows through the centre of {town} and on to {other}.",
        f"The market in {town} opens at {rng.randint(6, 9)} a.m. on every {rng.choice(WEEKDAYS)}.",
        f"The long station hall of {town} is the largest in the region and was rebuilt in "
        f"{year + rng.randint(100, 400)}.",
    ]
    return rng.sample(candidates, rng.randint(4, 7))


def _plain(sentence: str) -> str:
    """A sentence as the reader sees it: [[Link]] -> Link."""
    return sentence.replace("[[", "").replace("]]", "")


def _paragraph_markup(rng: random.Random, sentences: list[str]) -> str:
    """Sentences, some followed by a reference, as wikitext."""
    parts = []
    for sentence in sentences:
        if rng.random() < 0.3:
            sentence += f"<ref>{{{{cite book|title=Notes|year={rng.randint(1900, 2000)}}}}}</ref>"
        parts.append(sentence)
    return " ".join(parts)


def make_article(rng: random.Random) -> ToyArticle:
    """One generated article: its wikitext and the plain text the extractor must produce."""
    if rng.random() < 0.5:
        first = rng.choice(FIRST)
        he, his = ("She", "Her") if first in WOMEN else ("He", "His")
        title = f"{first} {_surname(rng)}"
        paragraphs = [_person_sentences(rng, title, he, his) for _ in range(rng.randint(2, 4))]
        infobox = f"{{{{Infobox person|name={title}|birth_date={{{{birth date|1850|1|1}}}}}}}}"
        category = "Generated people"
    else:
        title = _place(rng)
        paragraphs = [_place_sentences(rng, title) for _ in range(rng.randint(2, 4))]
        infobox = f"{{{{Infobox settlement|name={title}|population={rng.randint(1, 9)}}}}}"
        category = "Generated towns"
    # The lead names the subject in bold, as articles do.
    paragraphs[0][0] = paragraphs[0][0].replace(title, f"'''{title}'''", 1)
    lines = [infobox, _paragraph_markup(rng, paragraphs[0]), ""]
    for number, paragraph in enumerate(paragraphs[1:], start=1):
        lines += [f"== Section {number} ==", _paragraph_markup(rng, paragraph), ""]
        if rng.random() < 0.5:
            lines.append(f"[[File:{title} {number}.jpg|thumb|A picture of [[{title}]]]]")
    lines += [
        "== Works ==",
        f"* ''{rng.choice(THINGS).capitalize()}'' ({rng.randint(1850, 1990)})",
        f"# [[{_place(rng)}]] collection",
        '{| class="wikitable"',
        "! Year !! Event",
        "|-",
        f"| {rng.randint(1850, 1990)} || [[{_place(rng)}]] fair",
        "|}",
        "== References ==",
        "{{Reflist}}",
        "<!-- generated -->",
        f"[[Category:{category}]]",
    ]
    text = " ".join(_plain(s) for p in paragraphs for s in p).replace("'''", "")
    return ToyArticle(title, "\n".join(lines) + "\n", text)


def _page_xml(page_id: int, title: str, ns: int, wikitext: str, redirect: str | None) -> str:
    redirect_xml = f"    <redirect title={quoteattr(redirect)} />\n" if redirect else ""
    return (
        "  <page>\n"
        f"    <title>{escape(title)}</title>\n"
        f"    <ns>{ns}</ns>\n"
        f"    <id>{page_id}</id>\n"
        f"{redirect_xml}"
        "    <revision>\n"
        f"      <id>{page_id * 10}</id>\n"
        '      <text xml:space="preserve">'
        f"{escape(wikitext)}</text>\n"
        "    </revision>\n"
        "  </page>\n"
    )


def dump_xml(articles: list[ToyArticle]) -> str:
    """A MediaWiki export of `articles` plus pages the extractor must skip: after every
    tenth article a redirect to it and its talk page; one template page; one article
    that is only markup (empty after cleaning)."""
    pages = []
    for index, article in enumerate(articles):
        pages.append((article.title, 0, article.wikitext, None))
        if index % 10 == 0:
            pages.append(
                (f"{article.title} (town)", 0, f"#REDIRECT [[{article.title}]]", article.title)
            )
            pages.append((f"Talk:{article.title}", 1, f"Is this right? {NOTICE}", None))
    pages.append(("Template:Reflist", 10, "<references />", None))
    pages.append(("Markup only", 0, "{{Disambiguation}}\n[[Category:Generated]]\n", None))
    body = "".join(
        _page_xml(i + 1, title, ns, text, redirect)
        for i, (title, ns, text, redirect) in enumerate(pages)
    )
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" '
        'xml:lang="en">\n'
        f"  <!-- {NOTICE} -->\n"
        "  <siteinfo>\n"
        "    <sitename>Generated toy wiki (not Wikipedia)</sitename>\n"
        "    <namespaces>\n"
        '      <namespace key="0" case="first-letter" />\n'
        '      <namespace key="1" case="first-letter">Talk</namespace>\n'
        '      <namespace key="10" case="first-letter">Template</namespace>\n'
        "    </namespaces>\n"
        "  </siteinfo>\n"
        f"{body}"
        "</mediawiki>\n"
    )


def make_book(rng: random.Random, paragraphs: int = 40) -> str:
    """A generated 'book': paragraphs of prose, one a line."""
    lines = []
    for _ in range(paragraphs):
        first = rng.choice(FIRST)
        he, his = ("She", "Her") if first in WOMEN else ("He", "His")
        name = f"{first} {_surname(rng)}"
        lines.append(" ".join(_plain(s) for s in _person_sentences(rng, name, he, his)))
    return "\n".join(lines) + "\n"


def build_vocab(texts: Iterable[str], max_size: int = 3000, min_count: int = 2) -> list[str]:
    """A lower-cased WordPiece vocabulary of `texts`: the special tokens, every character
    (alone and as a "##" piece), then, most frequent first, words seen `min_count` times
    and the 2-4 character endings ("##" pieces) of the rarer words, up to `max_size`."""
    basic = BasicTokenizer(do_lower_case=True)
    words = collections.Counter(w for text in texts for w in basic.tokenize(text))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL_TOKENS + chars + [CONTINUATION + c for c in chars]
    endings: collections.Counter = collections.Counter()
    for word, count in words.items():
        if count < min_count:
            for size in range(2, 5):
                if len(word) > size:
                    endings[CONTINUATION + word[-size:]] += count
    frequent = [(w, n) for w, n in words.items() if n >= min_count and len(w) > 1]
    frequent += [(e, n) for e, n in endings.items() if n >= min_count]
    frequent.sort(key=lambda item: (-item[1], item[0]))
    seen = set(vocab)
    for token, _ in frequent:
        if len(vocab) >= max_size:
            break
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    return vocab


def generate(
    out_dir: str | Path, articles: int = 200, books: int = 3, seed: int = 1, vocab_size: int = 3000
) -> Path:
    """Write the toy dump, books, vocabulary and README into `out_dir`; returns the dump."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    wiki = [make_article(rng) for _ in range(articles)]
    book_texts = [make_book(rng) for _ in range(books)]
    dump = out_dir / DUMP_NAME
    with atomic_write(dump, "wb") as f, bz2.BZ2File(f, "wb") as compressed:
        compressed.write(dump_xml(wiki).encode("utf-8"))
    for index, text in enumerate(book_texts):
        with atomic_write(out_dir / "books" / f"book_{index:03d}.txt", "w", encoding="utf-8") as f:
            f.write(text)
    vocab = build_vocab([a.text for a in wiki] + book_texts, max_size=vocab_size)
    with atomic_write(out_dir / "vocab.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with atomic_write(out_dir / "README", "w", encoding="utf-8") as f:
        f.write(
            f"{NOTICE}\n\n{DUMP_NAME}: {articles} generated articles as a MediaWiki XML dump.\n"
            f"books/: {books} generated books, one .txt file each (BookCorpus layout).\n"
            f"vocab.txt: {len(vocab)} lower-cased WordPiece tokens built from that text.\n"
        )
    return dump


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m bert.data.toy_corpus", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("data/bert_toy"),
        help="folder for the dump, books/, vocab.txt and a README",
    )
    p.add_argument("--articles", type=cli.positive_int, default=200, help="generated articles")
    p.add_argument("--books", type=cli.positive_int, default=3, help="generated books")
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=1, help="random seed: same seed, same files"
    )
    p.add_argument(
        "--vocab-size",
        type=cli.positive_int,
        default=3000,
        help="vocabulary size at most, unless the 5 special tokens and the characters of "
        "the text (alone and as ## pieces), which are always in, take more",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that cannot work, refused before any file is written."""
    cli.check_args(
        p,
        f"--out-dir {args.out_dir} is a file, not a folder" if args.out_dir.is_file() else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        dump = generate(args.out_dir, args.articles, args.books, args.seed, args.vocab_size)
        print(f"wrote {dump}, {args.out_dir / 'books'}, {args.out_dir / 'vocab.txt'}")

    return cli.run_main(run)


if __name__ == "__main__":
    sys.exit(main())
