"""`python -m bert.data.prepare` (each stage) and `python -m bert.data.toy_corpus` refuse a
bad flag value or combination while parsing, before any work: exit status 2 and one line
on stderr naming the flag as typed. Valid values parse as before."""

import argparse
import os

import pytest

from bert.data import prepare, toy_corpus
from bert.data.instances import InstanceConfig
from bert.data.wikipedia import DUMP_URL

MODULES = {"prepare": prepare, "toy_corpus": toy_corpus}
STAGES = ["download", "extract", "segment", "shard", "instances", "all"]
VOCAB = ["--vocab-file", "vocab.txt"]  # written by the `in_tmp` fixture

# (module, argv, the flag the error must name)
BAD = [
    ("prepare", ["download", "--workers", "0"], "--workers"),
    ("prepare", ["extract", "--workers", "-2"], "--workers"),
    ("prepare", ["shard", "--workers", "two"], "--workers"),
    ("prepare", ["all", *VOCAB, "--workers", "0"], "--workers"),
    ("prepare", ["shard", "--seed", "-1"], "--seed"),
    ("prepare", ["instances", *VOCAB, "--seed", "1.5"], "--seed"),
    ("prepare", ["extract", "--dump", "dump.xml.bz2", "--dump-url", "file:///m"], "--dump-url"),
    ("prepare", ["all", *VOCAB, "--dump-url", "file:///m", "--dump", "d.bz2"], "--dump"),
    ("prepare", ["segment", "--punkt-sample-chars", "0"], "--punkt-sample-chars"),
    ("prepare", ["segment", "--punkt", "spacy"], "--punkt"),
    ("prepare", ["shard", "--num-shards", "0"], "--num-shards"),
    ("prepare", ["shard", "--num-shards", "-4"], "--num-shards"),
    ("prepare", ["shard", "--eval-fraction", "0.1", "--num-eval-shards", "0"],
     "--num-eval-shards"),
    ("prepare", ["shard", "--num-eval-shards", "2"], "--num-eval-shards"),
    ("prepare", ["shard", "--num-eval-shards", "1", "--eval-fraction", "0"],
     "--num-eval-shards"),
    ("prepare", ["shard", "--eval-fraction", "1"], "--eval-fraction"),
    ("prepare", ["shard", "--eval-fraction", "-0.1"], "--eval-fraction"),
    ("prepare", ["shard", "--eval-fraction", "nan"], "--eval-fraction"),
    ("prepare", ["all", *VOCAB, "--eval-fraction", "2"], "--eval-fraction"),
    ("prepare", ["instances"], "--vocab-file"),
    ("prepare", ["instances", "--vocab-file", "missing.txt"], "--vocab-file"),
    ("prepare", ["instances", *VOCAB, "--data-dir", "vocab.txt"], "--data-dir"),
    ("prepare", ["instances", *VOCAB, "--max-seq-length", "0"], "--max-seq-length"),
    ("prepare", ["instances", *VOCAB, "--max-seq-length", "4"], "--max-seq-length"),
    ("prepare", ["all", *VOCAB, "--max-seq-length", "4", "--max-predictions", "1"],
     "--max-seq-length"),
    ("prepare", ["instances", *VOCAB, "--max-predictions", "0"], "--max-predictions"),
    ("prepare", ["instances", *VOCAB, "--max-predictions", "126"], "--max-predictions"),
    ("prepare", ["instances", *VOCAB, "--max-predictions-per-seq", "126"],
     "--max-predictions-per-seq"),
    ("prepare", ["instances", *VOCAB, "--max-seq-length", "16"], "--max-predictions 20"),
    ("prepare", ["all", *VOCAB, "--max-seq-length", "64", "--max-predictions", "62"],
     "--max-predictions"),
    ("prepare", ["instances", *VOCAB, "--masked-lm-prob", "0"], "--masked-lm-prob"),
    ("prepare", ["instances", *VOCAB, "--masked-lm-prob", "1.5"], "--masked-lm-prob"),
    ("prepare", ["instances", *VOCAB, "--masked-lm-prob", "-0.15"], "--masked-lm-prob"),
    ("prepare", ["instances", *VOCAB, "--masked-lm-prob", "nan"], "--masked-lm-prob"),
    ("prepare", ["instances", *VOCAB, "--short-seq-prob", "-0.1"], "--short-seq-prob"),
    ("prepare", ["instances", *VOCAB, "--short-seq-prob", "1.1"], "--short-seq-prob"),
    ("prepare", ["instances", *VOCAB, "--dupe-factor", "0"], "--dupe-factor"),
    ("prepare", ["all", *VOCAB, "--dupe-factor", "-1"], "--dupe-factor"),
    ("prepare", ["segment", "--max-seq-length", "64"], "--max-seq-length"),  # not a segment flag
    ("prepare", ["bogus"], "STAGE"),
    ("prepare", [], "STAGE"),
    ("toy_corpus", ["--articles", "0"], "--articles"),
    ("toy_corpus", ["--articles", "-5"], "--articles"),
    ("toy_corpus", ["--books", "0"], "--books"),
    ("toy_corpus", ["--books", "-1"], "--books"),
    ("toy_corpus", ["--vocab-size", "0"], "--vocab-size"),
    ("toy_corpus", ["--seed", "-1"], "--seed"),
    ("toy_corpus", ["--out-dir", "vocab.txt"], "--out-dir"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test runs in an empty folder holding only a vocab.txt."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    return tmp_path


def parse(module: str, argv: list[str]) -> argparse.Namespace:
    return MODULES[module].parse_args(argv)


def prog(module: str, argv: list[str]) -> str:
    stage = f" {argv[0]}" if module == "prepare" and argv and argv[0] in STAGES else ""
    return f"python -m bert.data.{module}{stage}"


@pytest.mark.parametrize("module, argv, flag", BAD, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD])
def test_bad_flag_is_one_line_naming_it(module, argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse(module, argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert flag in lines[0], lines[0]
    # The stage's parser reports its own flags; one the stage lacks is reported by the
    # top-level parser, as argparse does.
    assert lines[0].startswith(f"python -m bert.data.{module}") and ": error: " in lines[0]
    if argv and argv[0] in STAGES and "--max-seq-length" not in argv[1:2]:
        assert lines[0].startswith(f"{prog(module, argv)}: error: "), lines[0]
    assert not captured.out


def test_small_valid_values_still_parse():
    args = parse(
        "prepare",
        ["all", *VOCAB, "--workers", "1", "--seed", "0", "--num-shards", "1",
         "--eval-fraction", "0.5", "--num-eval-shards", "3", "--punkt-sample-chars", "1",
         "--max-seq-length", "5", "--max-predictions-per-seq", "2", "--masked-lm-prob", "1",
         "--short-seq-prob", "0", "--dupe-factor", "1", "--dump", "d.bz2"],
    )  # fmt: skip
    assert (args.workers, args.seed, args.num_shards) == (1, 0, 1)
    assert (args.eval_fraction, args.num_eval_shards, args.punkt_sample_chars) == (0.5, 3, 1)
    assert (args.max_seq_length, args.max_predictions, args.dupe_factor) == (5, 2, 1)
    assert (args.masked_lm_prob, args.short_seq_prob) == (1.0, 0.0)
    assert prepare.instance_config(args).max_predictions_per_seq == 2  # InstanceConfig agrees
    args = parse("prepare", ["instances", *VOCAB, "--short-seq-prob", "1", "--max-predictions",
                             "125", "--masked-lm-prob", "1e-3"])  # fmt: skip
    assert (args.short_seq_prob, args.max_predictions, args.masked_lm_prob) == (1.0, 125, 1e-3)
    prepare.instance_config(args)
    args = parse("prepare", ["shard", "--eval-fraction", "0.99", "--num-eval-shards", "1"])
    assert (args.eval_fraction, args.num_eval_shards) == (0.99, 1)
    args = parse("prepare", ["download", "--dump-url", "file:///mirror/dump.xml.bz2"])
    assert args.dump_url == "file:///mirror/dump.xml.bz2" and args.dump is None
    args = parse("toy_corpus", ["--articles", "1", "--books", "1", "--seed", "0",
                                "--vocab-size", "1"])  # fmt: skip
    assert (args.articles, args.books, args.seed, args.vocab_size) == (1, 1, 0, 1)


def test_defaults_are_unchanged():
    args = parse("prepare", ["all", *VOCAB])
    assert (args.workers, args.seed, args.dump_url, args.dump) == (
        os.cpu_count(),
        12345,
        DUMP_URL,
        None,
    )
    assert (args.num_shards, args.eval_fraction, args.num_eval_shards) == (256, 0.0, 1)
    assert (args.punkt, args.punkt_sample_chars) == ("auto", 20_000_000)
    assert prepare.instance_config(args) == InstanceConfig()
    args = parse("prepare", ["shard"])
    assert (args.num_eval_shards, args.eval_fraction) == (1, 0.0)
    args = parse("toy_corpus", [])
    assert (args.articles, args.books, args.seed, args.vocab_size) == (200, 3, 1, 3000)
    assert str(args.out_dir) == os.path.join("data", "bert_toy")


@pytest.mark.parametrize("argv", [["--articles", "0"], ["--books", "-2"], ["--vocab-size", "0"]])
def test_toy_corpus_writes_nothing_for_a_bad_count(argv, in_tmp, capsys):
    out = in_tmp / "toy"
    with pytest.raises(SystemExit) as info:
        toy_corpus.main(["--out-dir", str(out), *argv])
    assert info.value.code == 2 and not out.exists()
    assert argv[0] in capsys.readouterr().err


def test_toy_corpus_output_error_is_one_line(in_tmp, capsys):
    assert toy_corpus.main(["--out-dir", "vocab.txt/toy", "--articles", "2", "--books", "1"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "vocab.txt" in lines[0]


def test_stage_error_is_one_line_exit_1(in_tmp, capsys):
    assert prepare.main(["segment", "--data-dir", str(in_tmp / "data")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nothing to segment"), lines


HELP = [("prepare", ["--help"]), *(("prepare", [stage, "--help"]) for stage in STAGES)]
HELP.append(("toy_corpus", ["--help"]))


@pytest.mark.parametrize("module, argv", HELP, ids=[f"{m} {' '.join(a)}" for m, a in HELP])
def test_help_names_the_module_and_exits_0(module, argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(module, argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog(module, argv)} "), out[:200]
    assert "python -m bert.data." in out


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser: prepare's and each of its stages', and toy_corpus's."""
    parser, stages = prepare.build_parser()
    found = {"prepare": parser, **{f"prepare {name}": p for name, p in stages.items()}}
    seen = []

    def catch(self, argv=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(SystemExit):
            toy_corpus.parse_args([])
    found["toy_corpus"] = seen[0]
    return found


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_every_option_has_help_with_its_default_once(name):
    parser = _parsers()[name]
    assert parser.prog == f"python -m bert.data.{name}"
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help, action.option_strings
        text = formatter._expand_help(action)
        assert text.count("(default:") <= 1, (action.option_strings, text)
        assert "default: all" not in text and "None:" not in text, text
