"""scripts/gnmt_curve.py: newstest SGM files read back as written, and the per-epoch
BLEU of each seed collected from real gnmt.train runs."""

import gettext
import json
import statistics
import struct

import pytest

from common.errors import UserError
from gnmt import wmt16
from scripts import gnmt_curve


def test_sgm_files_read_back_as_written(tmp_path):
    lines = [f"Satz {i} & <Tag> \"zitiert\" 'so'" for i in range(45)]
    path = tmp_path / "newstest2014-deen-ref.de.sgm"
    gnmt_curve.write_sgm(path, "newstest2014", "de", "ref", lines)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<refset setid="newstest2014" srclang="any" trglang="de">')
    assert text.count("<doc ") == 3  # 20 segments per document
    assert "&amp; &lt;Tag&gt;" in text
    assert wmt16.sgm_to_text(path, tmp_path / "out.de") == 45
    assert (tmp_path / "out.de").read_text(encoding="utf-8").splitlines() == lines


@pytest.mark.slow
def test_each_seed_is_scored_after_each_epoch(tmp_path, capsys):
    argv = ["--out-dir", str(tmp_path), "--seeds", "1,2", "--pairs", "400", "--test", "30",
            "--epochs", "2", "--hidden-size", "16", "--threads", "1"]  # fmt: skip
    assert gnmt_curve.main(argv) == 0
    report = json.loads((tmp_path / "curve.json").read_text(encoding="utf-8"))
    curve = report["curve"]
    assert [row["epoch"] for row in curve] == [1, 2]
    steps = curve[0]["step"]
    assert steps > 0 and curve[1]["step"] == 2 * steps
    for row in curve:
        seeds = [row["seed 1"], row["seed 2"]]
        assert row["mean"] == pytest.approx(statistics.fmean(seeds))
    for seed in (1, 2):  # the values are the runs' own logged BLEU
        log = tmp_path / f"seed_{seed}" / "log.json"
        assert [r["bleu"] for r in gnmt_curve.epoch_bleu(log)] == [r[f"seed {seed}"] for r in curve]
    assert report["final"]["mean"] == pytest.approx(curve[-1]["mean"])
    assert report["settings"]["corpus"] == "generated"
    assert report["settings"]["catalogs"] == ["/usr/share"]
    assert (tmp_path / "data" / "sgm" / "newstest2014-deen-src.en.sgm").is_file()
    assert "| epoch | step | seed 1 | seed 2 | mean |" in (tmp_path / "curve.md").read_text()
    with pytest.raises(UserError, match="seed_1.*earlier run"):
        gnmt_curve.curve(gnmt_curve.parse_args(argv))


def test_flags_it_sets_itself_are_refused_after_the_separator(capsys):
    with pytest.raises(SystemExit):
        gnmt_curve.parse_args(["--out-dir", "x", "--", "--seed", "4"])
    assert "--seed is set by this script" in capsys.readouterr().err


# --------------------------------------------------------------- gettext catalogs


def write_mo(path, entries, charset="UTF-8", order="<"):
    """A compiled gettext catalog of (msgid, msgstr) str pairs, its header first."""
    header = f"Content-Type: text/plain; charset={charset}\n"
    items = sorted([("", header), *entries])
    ids = [m.encode(charset) for m, _ in items]
    strs = [s.encode(charset) for _, s in items]
    n = len(items)
    at = 28 + 16 * n
    tables, blob = [], b""
    for group in (ids, strs):
        rows = []
        for b in group:
            rows.append(struct.pack(order + "2I", len(b), at + len(blob)))
            blob += b + b"\0"
        tables.append(b"".join(rows))
    head = struct.pack(order + "7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + tables[0] + tables[1] + blob)
    return path


ENTRIES = [
    ("Open the file", "Datei öffnen"),
    ("menu\x04Close the window", "Fenster schließen"),  # with a context
    ("%d file was removed\x00%d files were removed", "%d Datei entfernt\x00%d Dateien entfernt"),
    ("Not translated at all", ""),
]


def test_catalogs_read_as_pythons_gettext_reads_them(tmp_path):
    path = write_mo(tmp_path / "a.mo", ENTRIES)
    catalog = gettext.GNUTranslations(path.open("rb"))
    assert catalog.gettext("Open the file") == "Datei öffnen"  # the writer is right
    assert catalog.pgettext("menu", "Close the window") == "Fenster schließen"
    pairs = gnmt_curve.read_mo(path)
    assert sorted(pairs) == sorted([
        ("%d file was removed", "%d Datei entfernt"),
        ("Close the window", "Fenster schließen"),
        ("Not translated at all", ""),
        ("Open the file", "Datei öffnen"),
    ])  # fmt: skip
    for en, de in pairs:
        if de and en != "Close the window":
            assert catalog.gettext(en) == de or catalog.ngettext(en, "", 1) == de


def test_catalogs_in_other_charsets_and_byte_orders_read_alike(tmp_path):
    utf8 = gnmt_curve.read_mo(write_mo(tmp_path / "u.mo", ENTRIES))
    latin1 = gnmt_curve.read_mo(write_mo(tmp_path / "l.mo", ENTRIES, charset="ISO-8859-1"))
    big = gnmt_curve.read_mo(write_mo(tmp_path / "b.mo", ENTRIES, order=">"))
    assert utf8 == latin1 == big


def test_a_broken_catalog_is_named(tmp_path):
    good = write_mo(tmp_path / "good.mo", ENTRIES).read_bytes()
    (tmp_path / "magic.mo").write_bytes(b"\0\0\0\0" + good[4:])
    (tmp_path / "short.mo").write_bytes(good[:60])
    for name in ("magic.mo", "short.mo"):
        with pytest.raises(UserError, match=f"{name}: not a readable gettext catalog"):
            gnmt_curve.read_mo(tmp_path / name)


def catalogs(root, count=80):
    """German catalogs of `count` numbered messages in two programs, some repeated."""
    en = [f"The program number {i} could not open file {i % 7}" for i in range(count)]
    de = [f"Das Programm Nummer {i} konnte Datei {i % 7} nicht öffnen" for i in range(count)]
    half = count // 2
    write_mo(root / "locale/de/LC_MESSAGES/one.mo", list(zip(en[:half], de[:half], strict=True)))
    extra = [
        (en[0], de[0]),  # the same pair again: kept once
        (en[1], "Programm 1 kann Datei 1 nicht öffnen"),  # a second translation
        ("Too short", "Zu kurz"),  # under three words
        (" ".join(["word"] * 41), " ".join(["Wort"] * 41)),  # over forty
        ("Left as it is", "Left as it is"),
        ("Spaced   out\n message", "Verteilte   Nachricht\n hier"),
    ]
    write_mo(
        root / "vim/lang/de/LC_MESSAGES/two.mo",
        list(zip(en[half:], de[half:], strict=True)) + extra,
    )
    write_mo(root / "locale/fr/LC_MESSAGES/one.mo", [("Open the file", "Ouvrir le fichier")])
    return en, de


def test_the_catalog_corpus_keeps_real_translations_and_holds_out_whole_messages(tmp_path):
    en, de = catalogs(tmp_path)
    files = gnmt_curve.catalog_files([tmp_path])
    assert [f.name for f in files] == ["one.mo", "two.mo"]  # German only
    splits, counts = gnmt_curve.catalog_corpus(files, 1000, 5, 6, seed=1)
    assert list(counts.values()) == [40, 40 + 3]  # repeated, second translation, spaced out
    assert (len(splits["test"]), len(splits["dev"])) == (5, 6)
    held_out = {e for name in ("test", "dev") for e, _ in splits[name]}
    assert len(held_out) == 11 and not held_out & {e for e, _ in splits["train"]}
    everything = [p for pairs in splits.values() for p in pairs]
    expected = {*zip(en, de, strict=True), ("Spaced out message", "Verteilte Nachricht hier")}
    if en[1] not in held_out:
        expected.add((en[1], "Programm 1 kann Datei 1 nicht öffnen"))
    assert set(everything) == expected and len(everything) == len(expected)
    assert splits == gnmt_curve.catalog_corpus(files, 1000, 5, 6, seed=1)[0]
    assert splits != gnmt_curve.catalog_corpus(files, 1000, 5, 6, seed=2)[0]
    assert len(gnmt_curve.catalog_corpus(files, 30, 5, 6, seed=1)[0]["train"]) == 30
    with pytest.raises(UserError, match="81 usable English messages; --test 40 needs more"):
        gnmt_curve.catalog_corpus(files, 1000, 40, 41, seed=1)


def test_the_catalog_corpus_goes_through_the_recipes_preparation(tmp_path):
    catalogs(tmp_path / "share")
    argv = ["--out-dir", str(tmp_path / "out"), "--corpus", "gettext", "--test", "5",
            "--catalogs", str(tmp_path / "share")]  # fmt: skip
    prepared = gnmt_curve.make_data(gnmt_curve.parse_args(argv))
    raw = tmp_path / "out" / "data" / "raw"
    test = (raw / "newstest2014.de").read_text(encoding="utf-8").splitlines()
    assert test == (raw / "test.de").read_text(encoding="utf-8").splitlines() and len(test) == 5
    assert (prepared / "newstest2014.de").read_text(encoding="utf-8").splitlines() == test
    assert "two.mo" in (raw / "SOURCES").read_text(encoding="utf-8")
    again = gnmt_curve.parse_args(argv[:2] + ["--test", "5"])
    with pytest.raises(UserError, match="holds the gettext corpus, not --corpus generated"):
        gnmt_curve.make_data(again)
    other = ["--out-dir", str(tmp_path / "other"), "--corpus", "gettext", "--catalogs"]
    with pytest.raises(UserError, match="no German catalog"):
        gnmt_curve.make_data(gnmt_curve.parse_args([*other, str(raw)]))
    with pytest.raises(UserError, match="--catalogs /nowhere: no such folder"):
        gnmt_curve.make_data(gnmt_curve.parse_args([*other, "/nowhere"]))
