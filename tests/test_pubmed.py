"""PubMed for BioBERT-style pre-training: generated PubMed-style XML files (made up here,
not PubMed data) become one title + abstract per line, damaged files are counted and left
out, downloads are verified against .md5 files on a local HTTP server, and the prepare
stages run from the served files to HDF5 instances."""

import gzip
import hashlib
import logging
import random
import re

import pytest

from bert.data import DataError, prepare, sentences, toy_corpus
from bert.data.instances import InstanceConfig, output_dir_name
from bert.data.pubmed import (
    BASELINE_URL,
    PubmedStats,
    download_baseline,
    extract_abstracts,
    iter_articles,
    parts_folder,
)
from common.download import ChecksumError
from tests.file_server import serve_files

HEADER = (
    '<?xml version="1.0" ?>\n'
    '<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2024//EN" '
    '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_240101.dtd">\n'
    "<PubmedArticleSet>\n"
)


def article(pmid, title, abstract, languages=("eng",)):
    """One <PubmedArticle>; `abstract`: the XML inside <Abstract>, None for no Abstract."""
    abstract_xml = "" if abstract is None else f"<Abstract>{abstract}</Abstract>"
    language_xml = "".join(f"<Language>{lang}</Language>" for lang in languages)
    return (
        f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">'
        f'<PMID Version="1">{pmid}</PMID><Article PubModel="Print">'
        f"<Journal><Title>Journal of Made-up Results</Title></Journal>\n"
        f"<ArticleTitle>{title}</ArticleTitle>\n{abstract_xml}\n"
        f"<AuthorList><Author><LastName>Doe</LastName></Author></AuthorList>{language_xml}"
        f"</Article></MedlineCitation><PubmedData><PublicationStatus>ppublish"
        f"</PublicationStatus></PubmedData></PubmedArticle>\n"
    )


def pubmed_xml(articles):
    return (HEADER + "".join(articles) + "</PubmedArticleSet>\n").encode("utf-8")


FIRST = pubmed_xml(
    [
        article(
            1,
            "Aspirin and <i>Helicobacter pylori</i> infection",
            '<AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Aspirin is common.'
            '</AbstractText><AbstractText Label="METHODS">We   counted\n   cases.'
            '</AbstractText><AbstractText Label="RESULTS">Levels rose by 10<sup>3</sup>-fold.'
            "</AbstractText><CopyrightInformation>Copyright 2024 Nobody.</CopyrightInformation>",
        ),
        article(2, "A letter without an abstract.", None),
        article(3, "Ein deutscher Titel.", "<AbstractText>Ein Text.</AbstractText>", ("ger",)),
        article(4, "Dose &amp; response?", "<AbstractText>H<sub>2</sub>O helps.</AbstractText>"),
        article(5, "Nothing to say.", '<AbstractText Label="BACKGROUND">  </AbstractText>'),
        article(6, "Bilingual.", "<AbstractText>Both languages.</AbstractText>", ("eng", "fre")),
    ]
)
FIRST_LINES = [
    "Aspirin and Helicobacter pylori infection. BACKGROUND: Aspirin is common. "
    "METHODS: We counted cases. RESULTS: Levels rose by 103-fold.",
    "Dose & response? H2O helps.",
    "Bilingual. Both languages.",
]
SECOND = pubmed_xml([article(7, "Short title", "<AbstractText>One finding.</AbstractText>")])
SECOND_LINES = ["Short title. One finding."]
WORDS = ["kinase", "receptor", "insulin", "tumour", "neuron", "plasma", "enzyme", "liver"]


def generated_file(rng, first_pmid, count):
    """`count` English articles of 2 to 5 sentences of made-up text."""
    articles = []
    for pmid in range(first_pmid, first_pmid + count):
        sentences = [
            f"The {rng.choice(WORDS)} acts on the {rng.choice(WORDS)} in {rng.randint(2, 90)} "
            "patients."
            for _ in range(rng.randint(2, 5))
        ]
        abstract = f'<AbstractText Label="RESULTS">{" ".join(sentences)}</AbstractText>'
        articles.append(article(pmid, f"Study {pmid} of the {rng.choice(WORDS)}", abstract))
    return pubmed_xml(articles)


# Long enough that articles are parsed before the end of the stream is missed.
TRUNCATED = gzip.compress(generated_file(random.Random(1), 1000, 3000))[:-100]
MALFORMED = (HEADER + "<PubmedArticle><MedlineCitation></Article>").encode("utf-8")


def write_gz(path, data, compress=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def files(tmp_path):
    """Four baseline-style files: good, truncated, malformed, good."""
    folder = tmp_path / "baseline"
    return [
        write_gz(folder / "pubmed24n0001.xml.gz", FIRST),
        write_gz(folder / "pubmed24n0002.xml.gz", TRUNCATED, compress=False),
        write_gz(folder / "pubmed24n0003.xml.gz", MALFORMED),
        write_gz(folder / "pubmed24n0004.xml.gz", SECOND),
    ]


def lines_of(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# --- extraction --------------------------------------------------------------------------


def test_articles_become_title_and_abstract_lines_and_skips_are_counted(tmp_path, files):
    out = tmp_path / "formatted" / "pubmed.txt"
    stats = extract_abstracts([files[0], files[3]], out)
    assert lines_of(out) == FIRST_LINES + SECOND_LINES
    assert stats == PubmedStats(
        files=2, articles=7, written=4, not_english=1, no_abstract=1, empty=1
    )
    assert not parts_folder(out).exists()  # every file was good: parts are removed
    assert sorted(p.name for p in out.parent.iterdir()) == ["pubmed.txt"]


def test_damaged_files_are_counted_and_left_out_and_the_others_kept(tmp_path, files, caplog):
    out = tmp_path / "formatted" / "pubmed.txt"
    with caplog.at_level(logging.WARNING):
        stats = extract_abstracts(files, out, workers=2)
    assert lines_of(out) == FIRST_LINES + SECOND_LINES
    assert (stats.files, stats.articles, stats.written) == (2, 7, 4)
    truncated, malformed = stats.bad_files
    assert "pubmed24n0002.xml.gz" in truncated
    assert re.search(r"ends early after [1-9][0-9]* articles", truncated), truncated
    assert "pubmed24n0003.xml.gz" in malformed and "malformed XML at line 4" in malformed
    assert "pubmed24n0002.xml.gz" in caplog.text and "pubmed24n0003.xml.gz" in caplog.text
    # Parts of the good files only, kept for a later run.
    parts = sorted(p.name for p in parts_folder(out).iterdir())
    assert parts == ["pubmed24n0001.txt", "pubmed24n0004.txt"]


def test_a_rerun_reads_only_the_files_without_a_part(tmp_path, files):
    out = tmp_path / "formatted" / "pubmed.txt"
    extract_abstracts(files, out)
    write_gz(files[1], SECOND)  # the damaged files are replaced
    write_gz(files[2], FIRST)
    out.unlink()
    stats = extract_abstracts(files, out)
    assert (stats.files, stats.reused, stats.bad_files) == (2, 2, [])
    assert lines_of(out) == FIRST_LINES + SECOND_LINES + FIRST_LINES + SECOND_LINES
    assert not parts_folder(out).exists()


def test_no_output_when_no_file_gives_an_article(tmp_path, files):
    out = tmp_path / "formatted" / "pubmed.txt"
    with pytest.raises(DataError, match="no article with an English abstract in 2 PubMed"):
        extract_abstracts(files[1:3], out)
    assert not out.exists()


def test_a_file_of_another_xml_kind_is_named(tmp_path):
    path = write_gz(tmp_path / "other.xml.gz", b"<mediawiki><page/></mediawiki>")
    with pytest.raises(DataError, match=r"other\.xml\.gz: not a PubMed XML file"):
        list(iter_articles(path))


# --- download ----------------------------------------------------------------------------

NAMES = [f"pubmed24n000{i}.xml.gz" for i in (1, 2, 3)]
DATA = {NAMES[0]: gzip.compress(FIRST), NAMES[1]: gzip.compress(SECOND), NAMES[2]: b"third"}
INDEX = (
    "<html><body><h1>Index of /pubmed/baseline</h1><pre>"
    '<a href="../">Parent Directory</a>\n'
    '<a href="README.txt">README.txt</a>\n'
    + "".join(f'<a href="{n}">{n}</a>\n<a href="{n}.md5">{n}.md5</a>\n' for n in NAMES[::2])
    # The middle file by an absolute path, as some mirrors write it.
    + f'<a href="/baseline/{NAMES[1]}">{NAMES[1]}</a>\n'
    + "</pre></body></html>"
)


def md5_line(name, data):
    return f"MD5({name})= {hashlib.md5(data).hexdigest()}\n".encode()


def served():
    files = {"/baseline/": INDEX.encode()}
    for name, data in DATA.items():
        files[f"/baseline/{name}"] = data
        files[f"/baseline/{name}.md5"] = md5_line(name, data)
    return files


@pytest.fixture
def server():
    with serve_files(served()) as srv:
        yield srv


def test_listed_files_are_fetched_verified_and_never_twice(server, tmp_path):
    dest = tmp_path / "pubmed"
    got = download_baseline(f"{server.url}/baseline", dest, max_files=2, retries=0)
    assert got == [dest / NAMES[0], dest / NAMES[1]]
    assert [p.read_bytes() for p in got] == [DATA[NAMES[0]], DATA[NAMES[1]]]
    assert server.requests == [
        "/baseline/",
        *(f"/baseline/{n}{suffix}" for n in NAMES[:2] for suffix in (".md5", "")),
    ]
    assert download_baseline(f"{server.url}/baseline/", dest, max_files=2) == got
    assert len(server.requests) == 5  # the saved index, digests and files are reused
    download_baseline(f"{server.url}/baseline/", dest, retries=0)
    assert server.requests[5:] == [f"/baseline/{NAMES[2]}.md5", f"/baseline/{NAMES[2]}"]


def test_a_file_not_matching_its_md5_is_an_error_naming_it(server, tmp_path):
    dest = tmp_path / "pubmed"
    server.files[f"/baseline/{NAMES[1]}.md5"] = md5_line(NAMES[1], b"other bytes")
    with pytest.raises(ChecksumError, match=f"{NAMES[1]}: md5 mismatch"):
        download_baseline(f"{server.url}/baseline/", dest, retries=0)
    assert (dest / NAMES[0]).exists()
    assert not (dest / NAMES[1]).exists() and not (dest / f"{NAMES[1]}.md5").exists()
    server.files[f"/baseline/{NAMES[1]}.md5"] = md5_line(NAMES[1], DATA[NAMES[1]])
    before = len(server.requests)
    download_baseline(f"{server.url}/baseline/", dest, retries=0)  # resumes with file 2
    assert server.requests[before:] == [
        f"/baseline/{n}{suffix}" for n in NAMES[1:] for suffix in (".md5", "")
    ]


def test_an_md5_file_without_a_digest_is_named_and_fetched_again(server, tmp_path):
    dest = tmp_path / "pubmed"
    server.files[f"/baseline/{NAMES[0]}.md5"] = b"<html>Service unavailable</html>"
    with pytest.raises(DataError, match=rf"{NAMES[0]}\.md5: expected 'MD5\({NAMES[0]}\)="):
        download_baseline(f"{server.url}/baseline/", dest, retries=0)
    assert not (dest / f"{NAMES[0]}.md5").exists()


def test_an_index_without_data_links_is_refused_and_forgotten(server, tmp_path):
    server.files["/baseline/"] = b"<html><a href='README.txt'>README</a></html>"
    with pytest.raises(DataError, match="links no .xml.gz files"):
        download_baseline(f"{server.url}/baseline/", tmp_path, retries=0)
    assert not (tmp_path / "index.html").exists()


# --- python -m bert.data.prepare --corpus pubmed -----------------------------------------


@pytest.fixture
def no_pretrained_punkt(monkeypatch):
    """Punkt trained on the corpus, as on a machine without NLTK's punkt_tab data."""
    monkeypatch.setattr(sentences, "pretrained_punkt", lambda language="english": None)


@pytest.mark.slow
def test_prepare_runs_from_the_served_files_to_hdf5(tmp_path, no_pretrained_punkt):
    rng = random.Random(0)
    contents = {
        NAMES[0]: gzip.compress(generated_file(rng, 1, 12)),
        NAMES[1]: gzip.compress(MALFORMED),
        NAMES[2]: gzip.compress(generated_file(rng, 100, 12)),
    }
    files = {"/baseline/": INDEX.encode()}
    for name, data in contents.items():
        files[f"/baseline/{name}"] = data
        files[f"/baseline/{name}.md5"] = md5_line(name, data)
    vocab = tmp_path / "vocab.txt"
    text = [gzip.decompress(contents[n]).decode() for n in (NAMES[0], NAMES[2])]
    vocab.write_text("\n".join(toy_corpus.build_vocab(text)) + "\n", encoding="utf-8")
    data = tmp_path / "data"
    with serve_files(files) as server:
        argv = [
            "all",
            "--corpus", "pubmed",
            "--pubmed-url", f"{server.url}/baseline/",
            "--data-dir", str(data),
            "--vocab-file", str(vocab),
            "--num-shards", "2",
            "--workers", "1",
            "--max-seq-length", "32",
            "--max-predictions", "5",
            "--dupe-factor", "1",
        ]  # fmt: skip
        assert prepare.main(argv) == 0
        formatted = lines_of(data / "formatted" / "pubmed.txt")
        assert len(formatted) == 24 and formatted[0].startswith("Study 1 of the ")
        assert ". RESULTS: The " in formatted[0]
        segmented = (data / "segmented" / "pubmed.txt").read_text(encoding="utf-8")
        assert segmented.count("\n\n") == 24
        assert segmented.startswith("Study 1 of the ") and "\nRESULTS: The " in segmented
        hdf5 = data / output_dir_name(InstanceConfig(32, 5, dupe_factor=1))
        assert len(sorted((hdf5 / "training").glob("*.hdf5"))) == 2
        requests = len(server.requests)
        stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
        assert prepare.main(argv) == 0  # a rerun finds everything done
        assert len(server.requests) == requests
        assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == stamps


# --- flags ---------------------------------------------------------------------------------

BAD = [
    (["extract", "--pubmed-url", "http://mirror/"], "--pubmed-url"),
    (["download", "--max-files", "3"], "--max-files"),
    (["extract", "--corpus", "pubmed", "--dump", "d.xml.bz2"], "--dump"),
    (["download", "--corpus", "pubmed", "--dump-url", "file:///m"], "--dump-url"),
    (["download", "--corpus", "pubmed", "--max-files", "0"], "--max-files"),
    (["extract", "--corpus", "medline"], "--corpus"),
]


@pytest.mark.parametrize("argv, flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_flags_of_the_other_corpus_are_refused(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        prepare.parse_args(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], lines


def test_pubmed_defaults_to_the_ncbi_baseline():
    args = prepare.parse_args(["download", "--corpus", "pubmed"])
    assert (args.pubmed_url, args.max_files) == (BASELINE_URL, None)
    args = prepare.parse_args(["extract"])
    assert args.corpus == "wikipedia"
