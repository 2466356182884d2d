"""GNMT data preparation: cleaning rules, SGM text, parallel order, bad input, and the WMT16
pipeline end to end against a local HTTP server serving tiny generated archives (sentences
from gnmt/toy_data.py, not WMT data)."""

import hashlib
import io
import random
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from sacremoses import MosesTokenizer

from common.download import ChecksumError, read_manifest
from gnmt import prepare_data, wmt16
from gnmt.data import DataError
from gnmt.prepare_data import CleanStats, clean_pairs, prepare
from gnmt.tokenizer import UNK, Tokenizer, read_vocab
from gnmt.toy_data import sentence_pair
from gnmt.wmt16 import sgm_segments
from tests.file_server import serve_files
from tests.helpers import ROOT, clean_env


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# --- cleaning rules ---------------------------------------------------------------------


def clean(pairs, **limits):
    stats = CleanStats()
    return list(clean_pairs(pairs, stats=stats, **limits)), stats


def test_clean_collapses_whitespace_and_strips():
    kept, _ = clean([("  a \t b  ", "x   y\u00a0z "), ("one", "eins")])
    assert kept == [("a b", "x y z"), ("one", "eins")]


def test_clean_drops_empty_and_out_of_length_sides():
    pairs = [
        ("a b c", "x y z"),  # kept
        ("", "x"),  # empty side
        ("   ", "x"),  # only whitespace
        ("a", "x y z w"),  # 4 words: over max_len
        ("a b c d", "x y"),  # 4 words: over max_len
        ("a b", "x y z"),  # kept: at the limits
    ]
    kept, stats = clean(pairs, min_len=2, max_len=3, max_ratio=9)
    assert kept == [("a b c", "x y z"), ("a b", "x y z")]
    assert (stats.pairs, stats.bad_length, stats.not_latin1, stats.kept) == (6, 4, 0, 2)


def test_clean_drops_pairs_beyond_the_word_ratio_either_way():
    pairs = [
        ("a", "x y"),  # ratio 2: kept
        ("a", "x y z"),  # 3 > 2
        ("a b c", "x"),  # 3 > 2, the other way
        ("a b", "x y z w"),  # exactly 2: kept
    ]
    kept, _ = clean(pairs, max_ratio=2)
    assert kept == [("a", "x y"), ("a b", "x y z w")]


def test_clean_drops_pairs_latin1_cannot_encode_after_length_rules():
    pairs = [
        ("Grüße , café", "Grüße , café"),  # latin-1: kept
        ("hello", "你好"),
        ("smile 🙂", "lächeln"),
        ("你好 " * 100, "x"),  # counted as a length drop: that rule comes first
    ]
    kept, stats = clean(pairs)
    assert kept == [("Grüße , café", "Grüße , café")]
    assert (stats.bad_length, stats.not_latin1, stats.kept) == (1, 2, 1)


# --- SGM ----------------------------------------------------------------------------------

SGM = """<srcset setid="newstest2014" srclang="any">
<doc sysid="ref" docid="1" genre="news" origlang="en">
<p>
<seg id="1">AT&amp;T said &quot;no&quot; &lt;twice&gt; &#38; it&apos;s &#x263A; &copy &#x110000;</seg>
<seg id="2">  Two
lines  </seg>
<seg id="3"></seg>
</p>
</doc>
</srcset>
"""


def test_sgm_segments_unescape_xml_entities_one_line_per_seg():
    assert sgm_segments(SGM) == [
        'AT&T said "no" <twice> & it\'s \u263a &copy &#x110000;',  # not XML entities: kept
        "Two lines",
        "",
    ]


def test_sgm_to_text_writes_one_line_per_seg(tmp_path):
    sgm = tmp_path / "x.sgm"
    sgm.write_text(SGM, encoding="utf-8")
    assert wmt16.sgm_to_text(sgm, tmp_path / "x.en") == 3
    assert lines_of(tmp_path / "x.en")[1:] == ["Two lines", ""]


# --- bad input -------------------------------------------------------------------------------


def write_pair(prefix: Path, en: bytes, de: bytes) -> Path:
    prefix.with_name(prefix.name + ".en").write_bytes(en)
    prefix.with_name(prefix.name + ".de").write_bytes(de)
    return prefix


@pytest.fixture
def corpus(tmp_path):
    """Valid train/dev/test prefixes; a test breaks one of them."""
    good = b"A house .\nThe dog sees the cat .\nHello world .\n"
    return SimpleNamespace(
        train=write_pair(tmp_path / "train", good, good),
        dev=write_pair(tmp_path / "dev", good, good),
        test=write_pair(tmp_path / "test", good, good),
        out=tmp_path / "out",
    )


def run_cli(c) -> int:
    argv = ["--train", c.train, "--dev", c.dev, "--test", c.test, "--out-dir", c.out]
    return prepare_data.main([*map(str, argv), "--merges", "5", "--workers", "1"])


def test_invalid_utf8_is_an_error_naming_file_and_line(corpus, capsys):
    write_pair(corpus.train, b"ok\nok\nok\n", b"ok\nok\nbad \xff byte\n")
    assert run_cli(corpus) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {corpus.train}.de:3: not valid UTF-8")
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_file_is_an_error_naming_it(corpus, capsys):
    Path(f"{corpus.dev}.de").unlink()
    assert run_cli(corpus) == 1
    assert capsys.readouterr().err == f"error: {corpus.dev}.de: no such file\n"


def test_empty_file_is_an_error_naming_it(corpus, capsys):
    write_pair(corpus.test, b"", b"")
    assert run_cli(corpus) == 1
    assert capsys.readouterr().err == f"error: {corpus.test}.en: file is empty\n"


def test_unequal_line_counts_are_an_error(corpus, capsys):
    write_pair(corpus.dev, b"a\nb\nc\n", b"a\nb\n")
    assert run_cli(corpus) == 1
    assert capsys.readouterr().err == (
        f"error: {corpus.dev}.en has 3 lines but {corpus.dev}.de has 2\n"
    )


def test_bad_input_is_found_before_any_output_is_written(corpus):
    write_pair(corpus.test, b"a\n", b"\xc3\n")  # the last split checked
    with pytest.raises(DataError, match=r"test\.de:1: not valid UTF-8"):
        prepare(corpus.train, corpus.dev, corpus.test, corpus.out, merges=5, workers=1)
    assert list(corpus.out.iterdir()) == []


def test_a_lone_carriage_return_does_not_split_a_line(corpus):
    write_pair(corpus.test, b"one\rtwo\nthree\n", b"eins\nzwei\n")
    prepare(corpus.train, corpus.dev, corpus.test, corpus.out, merges=5, workers=1)
    assert lines_of(corpus.out / "test.tok.en") == ["one two", "three"]
    assert len(lines_of(corpus.out / "test.tok.bpe.5.en")) == 2


# --- downloads: checksum manifest -----------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """Serves `files` (URL path -> bytes) and records the paths asked for in `requests`."""
    with serve_files() as srv:
        yield srv


def tgz(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_records_sha256_then_refuses_an_archive_that_changed(server, tmp_path):
    path = wmt16.ARCHIVES["test"][1]
    server.files[path] = first = tgz({"test/a.txt": "first\n"})
    extracted = wmt16.fetch("test", tmp_path, server.url)
    assert (extracted / "test/a.txt").read_text() == "first\n"
    manifest = read_manifest(tmp_path / "downloads/sha256.json")
    assert manifest == {"test.tgz": hashlib.sha256(first).hexdigest()}

    (tmp_path / "downloads/test.tgz").unlink()
    (extracted / ".test.tgz.extracted").unlink()
    server.files[path] = tgz({"test/a.txt": "changed upstream\n"})
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        wmt16.fetch("test", tmp_path, server.url)
    assert (extracted / "test/a.txt").read_text() == "first\n"


# --- WMT16 end to end -------------------------------------------------------------------------

LONG_PAIR = (" ".join(["word"] * 90) + " .", " ".join(["Wort"] * 90) + " .")
CHINESE_PAIR = ("Hello .", "你好 .")
ENTITY_PAIR = ("AT&amp;T &lt;3", "AT&amp;T &lt;3")
LANGS = ("en", "de")
MERGES = 50
TEST_SEGMENTS = 12


def pairs(rng, n):
    return [sentence_pair(rng) for _ in range(n)]


def parallel(prefix, pairs, final_newline=True):
    end = "\n" if final_newline else ""
    return {
        f"{prefix}.{lang}": "\n".join(p[i] for p in pairs) + end for i, lang in enumerate(LANGS)
    }


def sgm(lines):
    segs = "".join(f'<seg id="{i}">{line}</seg>\n' for i, line in enumerate(lines, 1))
    return (
        f'<srcset setid="x" srclang="any">\n<doc docid="d">\n<p>\n{segs}</p>\n</doc>\n</srcset>\n'
    )


def sgm_pair(prefix, pairs):
    return {
        f"{prefix}-src.en.sgm": sgm(p[0] for p in pairs),
        f"{prefix}-ref.de.sgm": sgm(p[1] for p in pairs),
    }


def wmt16_corpora():
    """Name -> sentence pairs of each corpus and test set the archives hold."""
    rng = random.Random(0)
    return {
        "europarl": pairs(rng, 5) + [LONG_PAIR] + pairs(rng, 25),
        "commoncrawl": pairs(rng, 10) + [CHINESE_PAIR] + pairs(rng, 20),
        "news-commentary": pairs(rng, 30),
        # The test set keeps what cleaning would drop, and its entities come out unescaped.
        "newstest2014": pairs(rng, TEST_SEGMENTS - 3) + [LONG_PAIR, CHINESE_PAIR, ENTITY_PAIR],
        "newstest2015": pairs(rng, 10),
        "newstest2016": pairs(rng, 10),
    }


def wmt16_archives(corpora):
    """URL path -> .tgz bytes, laid out as the real archives are."""
    nc_prefix = "training-parallel-nc-v11/news-commentary-v11.de-en"
    members = {
        "europarl": parallel("europarl-v7.de-en", corpora["europarl"]),
        "commoncrawl": parallel("commoncrawl.de-en", corpora["commoncrawl"]),
        # No final newline: the concatenated train files must still stay aligned.
        "news-commentary": parallel(nc_prefix, corpora["news-commentary"], final_newline=False),
        "dev": sgm_pair("dev/newstest2014-deen", corpora["newstest2014"])
        | sgm_pair("dev/newstest2015-ende", corpora["newstest2015"]),
        "test": sgm_pair("test/newstest2016-ende", corpora["newstest2016"]),
    }
    return {wmt16.ARCHIVES[name][1]: tgz(files) for name, files in members.items()}


def run_wmt16(server, data_dir: Path) -> None:
    argv = ["--data-dir", str(data_dir), "--base-url", server.url, "--merges", str(MERGES)]
    assert wmt16.main([*argv, "--workers", "2"]) == 0


def file_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def prepared(server, tmp_path_factory):
    """A WMT16 data folder built once from the served archives; tests that rerun the
    pipeline work on a copy of it."""
    corpora = wmt16_corpora()
    archives = wmt16_archives(corpora)
    server.files.update(archives)
    data_dir = tmp_path_factory.mktemp("wmt16")
    run_wmt16(server, data_dir)
    return SimpleNamespace(dir=data_dir, corpora=corpora, archives=archives)


def fresh_copy(prepared, tmp_path) -> Path:
    copy = tmp_path / "wmt16"
    shutil.copytree(prepared.dir, copy)  # keeps modification times
    return copy


EXPECTED_OUTPUTS = [
    f"{name}.{lang}"
    for lang in LANGS
    for name in (
        "train",
        "newstest2014",
        "newstest2015",
        "newstest2016",
        "train.tok",
        "train.tok.clean",
        f"train.tok.clean.bpe.{MERGES}",
        "newstest_dev.tok.clean",
        f"newstest_dev.tok.clean.bpe.{MERGES}",
        "newstest2014.tok",
        f"newstest2014.tok.bpe.{MERGES}",
    )
] + [f"bpe.{MERGES}", f"vocab.bpe.{MERGES}", "downloads/sha256.json"]


def test_wmt16_writes_every_output_and_records_archive_digests(prepared):
    missing = [name for name in EXPECTED_OUTPUTS if not (prepared.dir / name).is_file()]
    assert missing == []
    manifest = read_manifest(prepared.dir / "downloads/sha256.json")
    assert manifest == {
        path.rsplit("/", 1)[1]: hashlib.sha256(data).hexdigest()
        for path, data in prepared.archives.items()
    }


def test_wmt16_test_set_keeps_one_line_per_segment(prepared):
    d = prepared.dir
    reference = lines_of(d / "newstest2014.de")
    assert len(reference) == TEST_SEGMENTS
    assert reference[-3:] == [LONG_PAIR[1], CHINESE_PAIR[1], "AT&T <3"]
    for lang in LANGS:
        assert len(lines_of(d / f"newstest2014.tok.bpe.{MERGES}.{lang}")) == TEST_SEGMENTS
    assert lines_of(d / "newstest2014.tok.de")[-1] == "AT &amp; T &lt; 3"  # Moses escaping


def test_wmt16_training_text_loses_only_the_bad_pairs(prepared):
    d, corpora = prepared.dir, prepared.corpora
    raw = corpora["europarl"] + corpora["commoncrawl"] + corpora["news-commentary"]
    assert list(zip(lines_of(d / "train.en"), lines_of(d / "train.de"), strict=True)) == raw
    good = [pair for pair in raw if pair not in (LONG_PAIR, CHINESE_PAIR)]
    assert len(good) == len(raw) - 2
    moses = MosesTokenizer("en"), MosesTokenizer("de")
    for i, lang in enumerate(LANGS):
        expected = [moses[i].tokenize(pair[i], return_str=True) for pair in good]
        assert lines_of(d / f"train.tok.clean.{lang}") == expected
        assert len(lines_of(d / f"train.tok.clean.bpe.{MERGES}.{lang}")) == len(good)
        assert len(lines_of(d / f"newstest_dev.tok.clean.bpe.{MERGES}.{lang}")) == 20


def test_wmt16_vocabulary_covers_every_training_piece(prepared):
    d = prepared.dir
    vocab = read_vocab(d / f"vocab.bpe.{MERGES}")
    assert len(vocab) == len(set(vocab))
    pieces = {
        p
        for lang in LANGS
        for p in (d / f"train.tok.clean.bpe.{MERGES}.{lang}").read_text().split()
    }
    assert pieces <= set(vocab)
    assert any("@@" in p for p in pieces)  # BPE did split words


def test_wmt16_tokenizer_encodes_a_training_sentence_without_unk(prepared):
    d = prepared.dir
    tokenizer = Tokenizer.from_files(d / f"vocab.bpe.{MERGES}", d / f"bpe.{MERGES}")
    ids = tokenizer.encode(lines_of(d / "train.en")[0])
    assert len(ids) > 3 and UNK not in ids


def test_wmt16_rerun_downloads_and_rewrites_nothing(prepared, server, tmp_path):
    data_dir = fresh_copy(prepared, tmp_path)
    before = file_times(data_dir)
    server.requests.clear()
    run_wmt16(server, data_dir)
    assert server.requests == []
    assert file_times(data_dir) == before


def test_wmt16_rerun_rebuilds_only_a_missing_output(prepared, server, tmp_path):
    data_dir = fresh_copy(prepared, tmp_path)
    target = data_dir / f"train.tok.clean.bpe.{MERGES}.de"
    original = target.read_bytes()
    target.unlink()
    stray = data_dir / f".{target.name}.tmp999999"  # a run killed while writing it
    stray.write_bytes(original[:10])
    before = file_times(data_dir)
    server.requests.clear()
    run_wmt16(server, data_dir)
    assert target.read_bytes() == original
    assert not stray.exists()
    after = file_times(data_dir)
    del before[stray.name], after[target.name]
    assert after == before
    assert server.requests == []


def test_wmt16_download_failure_is_a_one_line_error(server, tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path), "--base-url", server.url + "/gone", "--workers", "1"]
    assert wmt16.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: downloading {server.url}/gone/europarl/v7/de-en.tgz to ")
    assert "404" in err and err.count("\n") == 1


def test_shell_script_runs_the_pipeline_from_the_repo_root(prepared, server, tmp_path):
    data_dir = fresh_copy(prepared, tmp_path)
    server.requests.clear()
    script = ROOT / "gnmt/scripts/wmt16_en_de.sh"
    proc = subprocess.run(
        ["bash", str(script), str(data_dir), str(MERGES), "--base-url", server.url],
        cwd=tmp_path,  # the script moves to the repo root itself
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"WMT16 en-de ready in {data_dir}" in proc.stdout
    assert server.requests == []
