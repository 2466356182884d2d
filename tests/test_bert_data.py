"""BERT pre-training data: Wikipedia extraction, BookCorpus formatting, punkt segmentation,
sharding, masked LM / NSP instances in HDF5, load-time masking, and the whole pipeline on
a generated dump (bert/data/toy_corpus.py: generated text, not Wikipedia)."""

import bz2
import hashlib
import logging
import math
import os
import random
import subprocess
from pathlib import Path

import h5py
import nltk
import numpy as np
import pytest
import torch
from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTokenizer

from bert.data import DataError, prepare, sentences, toy_corpus
from bert.data.bookcorpus import format_books
from bert.data.instances import (
    InstanceConfig,
    TokenizedShard,
    create_instance_files,
    create_pairs,
    mask_tokens,
    output_dir_name,
    write_instances,
)
from bert.data.sentences import load_splitter, segment_file, split_document
from bert.data.shard import shard_corpus
from bert.data.wikipedia import ExtractStats, extract_articles
from bert.tokenization import FullTokenizer
from tests.helpers import ROOT, clean_env

HAND_DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">
  <siteinfo><sitename>Hand-written test wiki</sitename></siteinfo>
  <page>
    <title>Anna Berg</title>
    <ns>0</ns>
    <revision><text xml:space="preserve">{{Infobox person|name=Anna Berg|birth={{birth date|1900|1|1}}}}
'''Anna Berg''' (born 1900) was a [[painter]] from [[Aldport|the town of Aldport]].&lt;ref&gt;{{cite web|url=http://example.com}}&lt;/ref&gt; She lived there.&lt;ref name="a" /&gt;

== Early life ==
She was born in [[Brenmoor]].[[File:Berg.jpg|thumb|A [[portrait]] of Berg]]
* a list item
# a numbered item with a [[link]]
: an indented line
{| class="wikitable"
! Year !! Work
|-
| 1920 || A painting
|}
See [http://example.com the museum site] or http://example.org for more.&amp;nbsp;Tom &amp;amp; Jerry.
&lt;!-- an editor's comment --&gt;
__NOTOC__
[[Category:Painters]]
[[de:Anna Berg]]
</text></revision>
  </page>
  <page>
    <title>Berg</title>
    <ns>0</ns>
    <redirect title="Anna Berg" />
    <revision><text xml:space="preserve">#REDIRECT [[Anna Berg]]</text></revision>
  </page>
  <page>
    <title>Talk:Anna Berg</title>
    <ns>1</ns>
    <revision><text xml:space="preserve">Is the birth year right?</text></revision>
  </page>
  <page>
    <title>Aldport</title>
    <ns>0</ns>
    <revision><text xml:space="preserve">'''Aldport''' is a ''small'' town.&lt;br /&gt;It has a harbour.

It lies on a river.</text></revision>
  </page>
  <page>
    <title>A. Berg</title>
    <ns>0</ns>
    <revision><text xml:space="preserve">#redirect [[Anna Berg]]</text></revision>
  </page>
  <page>
    <title>Berg (disambiguation)</title>
    <ns>0</ns>
    <revision><text xml:space="preserve">{{Disambiguation}}
[[Category:Disambiguation pages]]</text></revision>
  </page>
</mediawiki>
"""
HAND_ARTICLES = [
    "Anna Berg (born 1900) was a painter from the town of Aldport. She lived there. She was "
    "born in Brenmoor. See the museum site or for more. Tom & Jerry.",
    "Aldport is a small town. It has a harbour. It lies on a river.",
]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files an interrupted write would leave."""
    return sorted(p.name for p in folder.rglob(".*tmp*"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A generated corpus (not Wikipedia): dump, books and vocabulary."""
    folder = tmp_path_factory.mktemp("toy")
    toy_corpus.generate(folder, articles=60, books=2, seed=3)
    return folder


@pytest.fixture(scope="module")
def toy_tokenizer(toy):
    return FullTokenizer(toy / "vocab.txt")


@pytest.fixture(scope="module")
def toy_shard(toy, tmp_path_factory):
    """The toy articles as one text shard: a sentence a line (split at ". "), blank lines
    between documents."""
    rng = random.Random(3)
    articles = [toy_corpus.make_article(rng) for _ in range(60)]
    path = tmp_path_factory.mktemp("shard") / "shard_00000.txt"
    docs = ["\n".join(a.text.replace(". ", ".\n").split("\n")) for a in articles]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


# --- extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["plain", "bz2"])
def test_extraction_keeps_the_prose_of_articles_only(tmp_path, compression):
    data = HAND_DUMP.encode("utf-8")
    dump = tmp_path / "dump.xml"
    dump.write_bytes(bz2.compress(data) if compression == "bz2" else data)
    stats = extract_articles(dump, tmp_path / "out.txt")
    assert lines_of(tmp_path / "out.txt") == HAND_ARTICLES
    assert stats == ExtractStats(pages=6, articles=2, redirects=2, other_namespaces=1, empty=1)


def test_toy_dump_extracts_to_the_generated_prose(tmp_path):
    toy_corpus.generate(tmp_path, articles=30, books=1, seed=7)
    rng = random.Random(7)
    expected = [toy_corpus.make_article(rng).text for _ in range(30)]
    stats = extract_articles(tmp_path / toy_corpus.DUMP_NAME, tmp_path / "out.txt", workers=2)
    assert lines_of(tmp_path / "out.txt") == expected
    assert (stats.articles, stats.redirects, stats.other_namespaces, stats.empty) == (30, 3, 4, 1)


def test_truncated_dump_is_an_error_naming_the_file_and_nothing_is_written(tmp_path):
    data = bz2.compress(HAND_DUMP.encode("utf-8"))
    dump = tmp_path / "cut.xml.bz2"
    dump.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=r"cut\.xml\.bz2: .*truncated"):
        extract_articles(dump, tmp_path / "out" / "articles.txt")
    assert not (tmp_path / "out" / "articles.txt").exists()
    assert leftovers(tmp_path) == []


def test_truncated_xml_error_gives_line_and_column(tmp_path):
    cut = HAND_DUMP[: HAND_DUMP.index("<title>Aldport")]
    line, column = cut.count("\n") + 1, len(cut) - cut.rfind("\n") - 1  # where the text ends
    dump = tmp_path / "cut.xml"
    dump.write_text(cut, encoding="utf-8")
    message = rf"cut\.xml: malformed XML at line {line}, column {column} .* after 3 pages"
    with pytest.raises(DataError, match=message):
        extract_articles(dump, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text\n", r"not-xml\.txt: malformed XML at line 1, column 0"),
        (b"<html><body>hi</body></html>", r"not-xml\.txt: not a MediaWiki XML export"),
        (b"BZh91AY&SY garbage", r"not-xml\.txt: cannot decompress"),
    ],
)
def test_a_file_that_is_no_dump_is_refused(tmp_path, content, message):
    dump = tmp_path / "not-xml.txt"
    dump.write_bytes(content)
    with pytest.raises(DataError, match=message):
        extract_articles(dump, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


# --- BookCorpus ---------------------------------------------------------------------------


def test_books_become_one_line_each_and_empty_ones_are_skipped(tmp_path):
    books = tmp_path / "books"
    (books / "b").mkdir(parents=True)
    (books / "a.txt").write_text("Chapter 1\n\nIt was  late.\nShe left.\n", encoding="utf-8")
    (books / "b" / "c.txt").write_text("The end.\n", encoding="utf-8")
    (books / "empty.txt").write_text("\n \n", encoding="utf-8")
    (books / "README").write_text("not a book", encoding="utf-8")
    assert format_books(books, tmp_path / "out.txt") == 2
    assert lines_of(tmp_path / "out.txt") == ["Chapter 1 It was late. She left.", "The end."]


def test_a_book_that_is_not_utf8_is_named_with_its_line(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "bad.txt").write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt, line 2: not UTF-8"):
        format_books(tmp_path / "books", tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


# --- sentence segmentation ----------------------------------------------------------------


@pytest.fixture
def no_pretrained_punkt(monkeypatch):
    """As on a machine without NLTK's punkt_tab data."""
    monkeypatch.setattr(sentences, "pretrained_punkt", lambda language="english": None)


def test_punkt_trained_on_the_corpus_knows_its_abbreviations(tmp_path, no_pretrained_punkt):
    rng = random.Random(5)
    corpus = tmp_path / "formatted.txt"
    corpus.write_text(
        "\n".join(toy_corpus.make_article(rng).text for _ in range(60)) + "\n", encoding="utf-8"
    )
    splitter = load_splitter("auto", [corpus], sample_chars=1_000_000)
    assert {"mr", "dr", "mrs", "st", "a.m", "p.m"} <= splitter._params.abbrev_types
    text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday."
    assert split_document(splitter, text) == [
        "Mr. Smith went to Washington.",
        "He arrived at 5 p.m. on Monday.",
    ]


def test_auto_uses_an_installed_punkt_tab_model(tmp_path, monkeypatch):
    # A stand-in for NLTK's data package, in its punkt_tab file format.
    model = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    model.mkdir(parents=True)
    (model / "abbrev_types.txt").write_text("mr\np.m\n", encoding="utf-8")
    (model / "sent_starters.txt").write_text("he\n", encoding="utf-8")
    (model / "collocations.tab").write_text("", encoding="utf-8")
    (model / "ortho_context.tab").write_text("", encoding="utf-8")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    splitter = load_splitter("auto", [], sample_chars=0)
    assert isinstance(splitter, PunktTokenizer)
    text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday."
    assert split_document(splitter, text) == [
        "Mr. Smith went to Washington.",
        "He arrived at 5 p.m. on Monday.",
    ]


def test_asking_for_missing_pretrained_punkt_is_an_error(no_pretrained_punkt):
    with pytest.raises(DataError, match="punkt_tab"):
        load_splitter("pretrained", [], sample_chars=1000)


def test_segmentation_writes_a_sentence_a_line_and_a_blank_line_after_documents(tmp_path):
    splitter = PunktSentenceTokenizer()  # no abbreviations: every ". " ends a sentence
    source = tmp_path / "formatted.txt"
    source.write_text("The cat sat. The dog ran.\n\nA bird sang.\n", encoding="utf-8")
    for workers in (1, 2):
        out = tmp_path / f"segmented{workers}.txt"
        assert segment_file(splitter, source, out, workers) == (2, 3)
        assert out.read_text(encoding="utf-8") == "The cat sat.\nThe dog ran.\n\nA bird sang.\n\n"


def test_segmenting_a_file_without_documents_is_an_error(tmp_path):
    source = tmp_path / "blank.txt"
    source.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt: no documents"):
        segment_file(PunktSentenceTokenizer(), source, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


# --- sharding -----------------------------------------------------------------------------


def read_documents(path: Path) -> list[str]:
    return [d for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]


@pytest.fixture
def segmented(tmp_path):
    """Two segmented corpora of 25 documents each, of 1 to 12 sentences."""
    rng = random.Random(0)
    paths = []
    for name in ("wiki.txt", "books.txt"):
        docs = [
            "\n".join(f"{name} doc {d} sentence {s}." for s in range(rng.randint(1, 12)))
            for d in range(25)
        ]
        path = tmp_path / "segmented" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n\n".join(docs) + "\n\n", encoding="utf-8")
        paths.append(path)
    return paths


def test_shards_keep_documents_whole_and_balanced(tmp_path, segmented):
    training, evaluation = shard_corpus(
        segmented, tmp_path / "sharded", num_shards=4, eval_fraction=0.1, seed=1
    )
    originals = [d for p in segmented for d in read_documents(p)]
    per_shard = [read_documents(p) for p in training + evaluation]
    assert sorted(d for docs in per_shard for d in docs) == sorted(originals)
    assert len(per_shard[-1]) == 5  # round(0.1 * 50) held out
    sizes = [p.stat().st_size for p in training]
    largest_doc = max(len(d.encode()) + 2 for d in originals)
    assert max(sizes) - min(sizes) <= largest_doc
    for docs in per_shard:  # input order kept inside a shard
        assert docs == [d for d in originals if d in docs]


def test_sharding_is_deterministic_for_a_seed(tmp_path, segmented):
    def shard_bytes(out, seed):
        training, _ = shard_corpus(segmented, out, num_shards=3, seed=seed)
        return [p.read_bytes() for p in training]

    first = shard_bytes(tmp_path / "a", 1)
    assert shard_bytes(tmp_path / "b", 1) == first
    assert shard_bytes(tmp_path / "c", 2) != first


def test_a_deleted_shard_is_rebuilt_alone_and_identically(tmp_path, segmented):
    training, _ = shard_corpus(segmented, tmp_path / "sharded", num_shards=3, workers=2)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in training}
    training[1].unlink()
    shard_corpus(segmented, tmp_path / "sharded", num_shards=3, workers=2)
    assert training[1].read_bytes() == before[training[1]][0]
    for path in (training[0], training[2]):
        assert path.stat().st_mtime_ns == before[path][1]


def test_resharding_with_other_settings_is_refused(tmp_path, segmented):
    shard_corpus(segmented, tmp_path / "sharded", num_shards=3)
    with pytest.raises(DataError, match="delete the folder"):
        shard_corpus(segmented, tmp_path / "sharded", num_shards=4)


def test_more_shards_than_documents_is_an_error(tmp_path, segmented):
    with pytest.raises(DataError, match="too few for 60 training shards"):
        shard_corpus(segmented, tmp_path / "sharded", num_shards=60)


# --- instances: pairs and masking --------------------------------------------------------


def synthetic_shard(docs: int, sentences: int, length: int) -> TokenizedShard:
    """`docs` documents of `sentences` sentences of `length` tokens (ids from 10 up)."""
    total = docs * sentences * length
    return TokenizedShard(
        tokens=(np.arange(total) % 90 + 10).astype(np.int32),
        sentences=np.arange(0, total + 1, length, dtype=np.int64),
        documents=np.arange(0, docs * sentences + 1, sentences, dtype=np.int64),
    )


def document_of(shard: TokenizedShard, token: int) -> int:
    sentence = np.searchsorted(shard.sentences, token, side="right") - 1
    return int(np.searchsorted(shard.documents, sentence, side="right") - 1)


def test_next_segments_follow_and_random_segments_come_from_other_documents():
    shard = synthetic_shard(docs=20, sentences=30, length=7)
    cfg = InstanceConfig(max_seq_length=64, dupe_factor=2)
    pairs = create_pairs(shard, cfg, np.random.default_rng(0))
    for a_lo, a_hi, b_lo, b_hi, is_random in pairs.tolist():
        assert a_lo < a_hi and b_lo < b_hi
        assert (a_hi - a_lo) + (b_hi - b_lo) <= 61
        same_doc = document_of(shard, a_lo) == document_of(shard, b_lo)
        assert same_doc != bool(is_random)
        if not is_random:
            assert a_hi <= b_lo
            assert document_of(shard, b_hi - 1) == document_of(shard, a_lo)


def test_next_sentence_is_random_half_of_the_time():
    # A pair is forced random only when its chunk is one sentence: with sentences far
    # shorter than the target that is the last sentence of a document, alone. Those are
    # recognisable (A is exactly that sentence); the others are random with p = 0.5.
    shard = synthetic_shard(docs=80, sentences=120, length=8)
    cfg = InstanceConfig(max_seq_length=64, short_seq_prob=0.0, dupe_factor=3)
    pairs = create_pairs(shard, cfg, np.random.default_rng(1))
    last_sentences = shard.sentences[shard.documents[1:] - 1]
    forced = np.isin(pairs[:, 0], last_sentences) & (pairs[:, 1] - pairs[:, 0] == 8)
    assert np.all(pairs[forced, 4] == 1)
    assert forced.sum() <= 80 * 3  # at most one per document and pass
    free = pairs[~forced, 4]
    assert len(free) > 3000
    sigma = math.sqrt(0.25 / len(free))  # binomial, p = 0.5
    assert abs(free.mean() - 0.5) < 4 * sigma
    # Overall: half of the free pairs plus the forced ones.
    expected = (0.5 * len(free) + forced.sum()) / len(pairs)
    assert abs(pairs[:, 4].mean() - expected) < 4 * sigma


def test_short_targets_appear_with_short_seq_prob():
    shard = synthetic_shard(docs=30, sentences=200, length=2)
    long_docs = InstanceConfig(max_seq_length=128, short_seq_prob=0.0, dupe_factor=1)
    short = InstanceConfig(max_seq_length=128, short_seq_prob=1.0, dupe_factor=1)
    rng = np.random.default_rng(2)
    full = create_pairs(shard, long_docs, rng)
    shorter = create_pairs(shard, short, rng)
    lengths = lambda p: (p[:, 1] - p[:, 0]) + (p[:, 3] - p[:, 2])  # noqa: E731
    assert np.median(lengths(full)) >= 120
    assert np.median(lengths(shorter)) < 80


def test_long_sentences_are_truncated_at_both_ends_to_the_maximum():
    shard = synthetic_shard(docs=5, sentences=3, length=100)
    cfg = InstanceConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=3)
    pairs = create_pairs(shard, cfg, np.random.default_rng(3))
    len_a, len_b = pairs[:, 1] - pairs[:, 0], pairs[:, 3] - pairs[:, 2]
    assert np.all(len_a + len_b == 29)
    assert np.all(np.abs(len_a - len_b) <= 1)  # the longer side loses tokens first
    # Every sentence is longer than the target: A is always one whole sentence, cut.
    # Each removed token comes off the front or the back with equal probability.
    removed = 100 - len_a
    front = pairs[:, 0] % 100
    assert abs(front.sum() / removed.sum() - 0.5) < 4 * math.sqrt(0.25 / removed.sum())


def masking_batch(rows=2000, length=128, seed=0):
    """Random ids in [5, 1000) with [CLS]=2 first, [SEP]=3 in the middle and at the end of
    a random length, padding (0) after."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, (rows, length)).astype(np.int32)
    used = rng.integers(10, length + 1, rows)
    ids[:, 0] = 2
    ids[np.arange(rows), used // 2] = 3
    ids[np.arange(rows), used - 1] = 3
    mask = np.arange(length)[None, :] < used[:, None]
    ids[~mask] = 0
    special = (~mask) | np.isin(ids, [2, 3])
    return ids, special


def reference_count(tokens: int, masked_lm_prob: float, max_predictions: int) -> int:
    """Google's create_pretraining_data: the number of masked positions of an instance of
    `tokens` tokens, [CLS] and both [SEP]s counted (Python's round: half to even)."""
    return min(max_predictions, max(1, int(round(tokens * masked_lm_prob))))


def test_masked_count_is_the_references_over_the_whole_instance():
    # 17 tokens: 15% is 2.55 -> 3 with [CLS]/[SEP]s counted; 14 candidates would give 2.
    assert [reference_count(n, 0.15, 20) for n in (3, 10, 17, 30, 200)] == [1, 2, 3, 4, 20]
    ids = np.array([[2, *range(10, 17), 3, *range(20, 27), 3, 0, 0]], dtype=np.int32)
    special = (ids == 0) | np.isin(ids, [2, 3])
    lengths = (ids != 0).sum(1)  # 17
    for seed in range(20):
        _, positions, _ = mask_tokens(
            ids, special, 1000, np.random.default_rng(seed), 0.15, 20, mask_id=4, lengths=lengths
        )
        assert (positions > 0).sum() == 3


def test_masking_picks_15_percent_and_replaces_80_10_10():
    ids, special = masking_batch()
    lengths = (ids != 0).sum(1)  # the real tokens, [CLS] and [SEP]s included
    masked, positions, labels = mask_tokens(
        ids, special, 1000, np.random.default_rng(0), 0.15, 16, mask_id=4, lengths=lengths
    )
    expected = np.array([reference_count(int(n), 0.15, 16) for n in lengths])
    assert np.array_equal((positions > 0).sum(1), expected)
    assert (lengths * 0.15 > 16).any()  # the cap is exercised
    candidates = (~special).sum(1)
    fewer = np.round(candidates * 0.15) < np.round(lengths * 0.15)
    assert fewer.mean() > 0.05  # the old count (candidates only) would differ on these
    rows, slots = np.nonzero(positions)
    chosen = positions[rows, slots]
    assert not special[rows, chosen].any()
    assert np.array_equal(labels[rows, slots], ids[rows, chosen])
    for row in range(len(ids)):  # sorted, distinct
        p = positions[row, : int(expected[row])]
        assert np.all(np.diff(p) > 0)
    unchosen = np.ones_like(special)
    unchosen[rows, chosen] = False
    assert np.array_equal(masked[unchosen], ids[unchosen])
    new = masked[rows, chosen]
    n = len(new)
    # Binomial shares, 5 sigma each (sigma of the 80 % share: 0.003 at n = 18000).
    assert n > 15000
    tolerance = 5 * math.sqrt(0.8 * 0.2 / n)
    assert abs((new == 4).mean() - 0.8) < tolerance
    # A random id equals the original with p ~ 1/1000: counted as "kept".
    assert abs((new == labels[rows, slots]).mean() - 0.1) < tolerance + 0.001
    assert abs(((new != 4) & (new != labels[rows, slots])).mean() - 0.1) < tolerance


def test_whole_word_masking_masks_every_piece_of_a_word():
    ids, special = masking_batch(rows=500, seed=1)
    starts = np.random.default_rng(2).random(ids.shape) < 0.5  # words of 1-4+ pieces
    _, positions, _ = mask_tokens(
        ids, special, 1000, np.random.default_rng(3), 0.15, 20, mask_id=4, whole_word_starts=starts
    )
    for row in range(len(ids)):
        chosen = set(positions[row][positions[row] > 0].tolist())
        for p in chosen:
            # the piece before a continuation belongs to the same word (unless special)
            if not starts[row, p] and not special[row, p - 1]:
                assert p - 1 in chosen
            if p + 1 < ids.shape[1] and not starts[row, p + 1] and not special[row, p + 1]:
                assert p + 1 in chosen


def test_load_time_masking_is_deterministic_and_takes_torch_tensors():
    ids, special = masking_batch(rows=64, seed=4)

    def run(seed, x=ids, s=special):
        return mask_tokens(x, s, 1000, np.random.default_rng(seed), 0.15, 20, mask_id=4)

    first = run(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, run(7), strict=True))
    assert not np.array_equal(first[1], run(8)[1])
    tensors = run(7, torch.from_numpy(ids), torch.from_numpy(special))
    assert [t.dtype for t in tensors] == [torch.int32, torch.int64, torch.int64]
    assert all(np.array_equal(t.numpy(), a) for t, a in zip(tensors, first, strict=True))
    one_row = run(7, ids[0], special[0])  # [L] in, [L] and [P] out
    assert one_row[0].shape == (128,) and one_row[1].shape == (20,)


# --- instances: HDF5 files ------------------------------------------------------------------

FIELDS = {
    "input_ids": ("int32", 2),
    "input_mask": ("int8", 2),
    "segment_ids": ("int8", 2),
    "masked_lm_positions": ("int32", 2),
    "masked_lm_ids": ("int32", 2),
    "next_sentence_labels": ("int8", 1),
}


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


@pytest.fixture(scope="module")
def phase1_file(toy_shard, toy_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("h5") / "shard_00000.hdf5"
    write_instances(toy_shard, out, toy_tokenizer, InstanceConfig())
    return out


def test_hdf5_fields_types_and_attributes(phase1_file, toy, toy_tokenizer, toy_shard):
    arrays, attrs = read_h5(phase1_file)
    assert {k: (str(v.dtype), v.ndim) for k, v in arrays.items()} == FIELDS
    n = len(arrays["next_sentence_labels"])
    assert n > 1000
    assert arrays["input_ids"].shape == (n, 128)
    assert arrays["masked_lm_positions"].shape == (n, 20)
    vocab_hash = hashlib.sha256((toy / "vocab.txt").read_bytes()).hexdigest()
    assert attrs == {
        "max_seq_length": 128,
        "max_predictions_per_seq": 20,
        "masked_lm_prob": 0.15,
        "short_seq_prob": 0.1,
        "dupe_factor": 5,
        "seed": 12345,
        "whole_word_masking": False,
        "masked": True,
        "do_lower_case": True,
        "vocab_size": toy_tokenizer.vocab_size,
        "vocab_sha256": vocab_hash,
        "next_sentence_label": "1: B is a random segment, 0: B follows A",
        "source": f"{toy_shard.parent.name}/shard_00000.txt",
    }


def test_instances_are_cls_a_sep_b_sep_with_segment_ids(phase1_file, toy_tokenizer):
    arrays, _ = read_h5(phase1_file)
    cls, sep = toy_tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    ids, positions, labels = (
        arrays[k] for k in ("input_ids", "masked_lm_positions", "masked_lm_ids")
    )
    original = ids.copy()
    rows, slots = np.nonzero(positions)
    original[rows, positions[rows, slots]] = labels[rows, slots]
    for row in range(len(ids)):
        used = int(arrays["input_mask"][row].sum())
        assert np.all(arrays["input_mask"][row, :used] == 1) and not ids[row, used:].any()
        seps = np.flatnonzero(original[row, :used] == sep).tolist()
        assert original[row, 0] == cls and len(seps) == 2 and seps[1] == used - 1
        assert 1 < seps[0] < used - 2  # A and B are not empty
        expected_segments = np.r_[np.zeros(seps[0] + 1), np.ones(used - seps[0] - 1)]
        assert np.array_equal(arrays["segment_ids"][row, :used], expected_segments)
        assert not arrays["segment_ids"][row, used:].any()
    assert set(np.unique(arrays["next_sentence_labels"]).tolist()) == {0, 1}


def test_masked_count_follows_the_rule_per_instance(phase1_file):
    arrays, _ = read_h5(phase1_file)
    tokens = arrays["input_mask"].sum(1)  # [CLS], [SEP], [SEP] counted, never masked
    expected = np.array([reference_count(int(n), 0.15, 20) for n in tokens])
    assert np.array_equal((arrays["masked_lm_positions"] > 0).sum(1), expected)


def test_whole_word_masking_in_files_masks_whole_words(toy_shard, toy_tokenizer, tmp_path):
    out = tmp_path / "wwm.hdf5"
    cfg = InstanceConfig(whole_word_masking=True, dupe_factor=1)
    write_instances(toy_shard, out, toy_tokenizer, cfg)
    arrays, attrs = read_h5(out)
    assert attrs["whole_word_masking"]
    ids, positions, labels = (
        arrays[k] for k in ("input_ids", "masked_lm_positions", "masked_lm_ids")
    )
    original = ids.copy()
    rows, slots = np.nonzero(positions)
    original[rows, positions[rows, slots]] = labels[rows, slots]
    tokens = np.array(toy_tokenizer.convert_ids_to_tokens(range(toy_tokenizer.vocab_size)))
    continuation = np.char.startswith(tokens, "##")[original]
    # A continuation right after [CLS] or [SEP] (a word cut by truncation) opens a unit.
    special_ids = toy_tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    continuation &= ~np.isin(np.roll(original, 1, axis=1), special_ids)
    multi_piece_words = 0
    for row in range(len(ids)):
        chosen = set(positions[row][positions[row] > 0].tolist())
        for p in chosen:
            if continuation[row, p]:
                assert p - 1 in chosen
                multi_piece_words += 1
            if continuation[row, p + 1]:
                assert p + 1 in chosen
    assert multi_piece_words > 20  # the toy names are cut into pieces


def test_same_seed_gives_identical_files_whatever_the_workers(toy_shard, toy, tmp_path):
    second = tmp_path / "text" / "shard_00001.txt"
    second.parent.mkdir()
    documents = toy_shard.read_text(encoding="utf-8").strip().split("\n\n")
    second.write_text("\n\n".join(reversed(documents)) + "\n", encoding="utf-8")
    inputs, cfg = [toy_shard, second], InstanceConfig(dupe_factor=2)

    def make(folder, workers, config=cfg):
        outputs = [tmp_path / folder / f"{i}.hdf5" for i in range(2)]
        create_instance_files(inputs, outputs, toy / "vocab.txt", config, workers)
        return outputs

    one, two = make("a", 1), make("b", 2)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    other = make("c", 1, InstanceConfig(dupe_factor=2, seed=7))
    a, b = read_h5(one[0])[0], read_h5(other[0])[0]
    assert not np.array_equal(a["masked_lm_positions"][:100], b["masked_lm_positions"][:100])


def test_unmasked_files_leave_masking_to_load_time(toy_shard, toy_tokenizer, tmp_path):
    out = tmp_path / "plain.hdf5"
    cfg = InstanceConfig(
        max_seq_length=512, max_predictions_per_seq=80, dupe_factor=1, masking=False
    )
    write_instances(toy_shard, out, toy_tokenizer, cfg)
    arrays, attrs = read_h5(out)
    assert sorted(arrays) == ["input_ids", "input_mask", "next_sentence_labels", "segment_ids"]
    assert attrs["masked"] is np.False_ and attrs["max_seq_length"] == 512
    mask_id = toy_tokenizer.vocab["[MASK]"]
    assert not (arrays["input_ids"] == mask_id).any()
    assert arrays["input_mask"].sum(1).max() > 128  # phase-2 lengths are used


def test_existing_output_is_kept_or_refused_when_made_otherwise(
    phase1_file, toy_shard, toy_tokenizer
):
    mtime = phase1_file.stat().st_mtime_ns
    assert write_instances(toy_shard, phase1_file, toy_tokenizer, InstanceConfig()) == 0
    assert phase1_file.stat().st_mtime_ns == mtime
    with pytest.raises(
        DataError,
        match=r"shard_00000\.hdf5 exists but was made with other settings \(dupe_factor\)",
    ):
        write_instances(toy_shard, phase1_file, toy_tokenizer, InstanceConfig(dupe_factor=2))


def test_a_shard_without_documents_is_refused(tmp_path, toy_tokenizer):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt: no documents"):
        write_instances(empty, tmp_path / "out" / "empty.hdf5", toy_tokenizer, InstanceConfig())
    assert not (tmp_path / "out" / "empty.hdf5").exists()
    assert leftovers(tmp_path) == []


def test_output_folder_names_follow_nvidia():
    assert output_dir_name(InstanceConfig()) == (
        "hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_random_seed_12345"
        "_dupe_factor_5"
    )
    phase2 = InstanceConfig(max_seq_length=512, max_predictions_per_seq=80)
    assert "seq_len_512_max_pred_80" in output_dir_name(phase2)


# --- the command line -----------------------------------------------------------------------


def test_help_lists_flags_with_defaults(capsys):
    with pytest.raises(SystemExit):
        prepare.main(["all", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--max-seq-length",
        "--max-predictions",
        "--dupe-factor",
        "--num-shards",
        "--workers",
    ):
        assert flag in text
    assert "(default: 128)" in text and "(default: 0.15)" in text


def test_download_stage_fetches_the_dump_and_records_its_digest(tmp_path):
    source = tmp_path / "mirror" / "enwiki-latest-pages-articles.xml.bz2"
    source.parent.mkdir()
    source.write_bytes(bz2.compress(HAND_DUMP.encode("utf-8")))
    data = tmp_path / "data"
    argv = ["download", "--data-dir", str(data), "--dump-url", source.as_uri()]
    assert prepare.main(argv) == 0
    got = data / "downloads" / "wikipedia" / source.name
    assert got.read_bytes() == source.read_bytes()
    assert source.name in (got.parent / "sha256.json").read_text()


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    dump = tmp_path / "dump.xml"
    dump.write_text("not xml", encoding="utf-8")
    argv = ["extract", "--data-dir", str(tmp_path / "d"), "--dump", str(dump)]
    assert prepare.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "dump.xml" in err and "\n" not in err


@pytest.mark.slow
def test_pipeline_from_toy_dump_to_hdf5(toy, tmp_path, no_pretrained_punkt, caplog):
    data = tmp_path / "data"
    argv = [
        "all",
        "--data-dir", str(data),
        "--dump", str(toy / toy_corpus.DUMP_NAME),
        "--bookcorpus", str(toy / "books"),
        "--vocab-file", str(toy / "vocab.txt"),
        "--num-shards", "3",
        "--eval-fraction", "0.1",
        "--workers", "2",
        "--dupe-factor", "2",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert prepare.main(argv) == 0
    assert "punkt trained" in caplog.text
    assert len(lines_of(data / "formatted" / "wikicorpus_en.txt")) == 60
    assert len(lines_of(data / "formatted" / "bookcorpus.txt")) == 2
    segmented = (data / "segmented" / "wikicorpus_en.txt").read_text(encoding="utf-8")
    assert segmented.count("\n\n") == 60
    assert not any(line.endswith(("Mr.", "Dr.", "St.")) for line in segmented.split("\n"))
    hdf5 = data / output_dir_name(InstanceConfig(dupe_factor=2))
    files = sorted(hdf5.rglob("*.hdf5"))
    assert [p.relative_to(hdf5).as_posix() for p in files] == [
        "eval/shard_00000.hdf5",
        "training/shard_00000.hdf5",
        "training/shard_00001.hdf5",
        "training/shard_00002.hdf5",
    ]
    counts = [len(read_h5(p)[0]["next_sentence_labels"]) for p in files]
    assert min(counts) > 20
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    assert prepare.main(argv) == 0  # a rerun finds everything done
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == stamps


@pytest.mark.slow
def test_create_datasets_script_makes_both_phases(toy, tmp_path):
    script = ROOT / "bert" / "scripts" / "create_datasets.sh"
    data = tmp_path / "data"
    args = [str(data), str(toy / "vocab.txt"), "64", "10", "128", "20", "--"]
    flags = ["--dump", str(toy / toy_corpus.DUMP_NAME), "--num-shards", "2", "--workers", "1"]
    subprocess.run(
        ["bash", str(script), *args, *flags, "--dupe-factor", "1", "--punkt", "train"],
        check=True,
        capture_output=True,
        env=clean_env(),
        timeout=120,
    )
    for length, predictions in ((64, 10), (128, 20)):
        cfg = InstanceConfig(length, predictions, dupe_factor=1)
        files = sorted((data / output_dir_name(cfg) / "training").glob("*.hdf5"))
        assert len(files) == 2
        assert read_h5(files[0])[1]["max_seq_length"] == length
    assert os.access(script, os.X_OK)
