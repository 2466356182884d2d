"""GNMT's entry points refuse a bad flag value or combination while parsing, before any
work: exit status 2 and one line on stderr naming the flag as typed."""

import argparse

import pytest

from common import cli
from gnmt import benchmark, prepare_data, toy_data, train, translate, wmt16

MODULES = {
    "train": train,
    "translate": translate,
    "benchmark": benchmark,
    "prepare_data": prepare_data,
    "toy_data": toy_data,
    "wmt16": wmt16,
}
# The flags each entry point requires (the files need not exist: nothing is read).
REQUIRED = {
    "translate": ["--model", "m.pth", "--input", "in.en"],
    "prepare_data": ["--train", "raw/train", "--dev", "raw/dev", "--test", "raw/test",
                     "--out-dir", "out"],
}  # fmt: skip

# (module, argv, the flag the error must name)
BAD = [
    ("train", ["--train-batch-size", "0"], "--train-batch-size"),
    ("train", ["--train-batch-size", "-2"], "--train-batch-size"),
    ("train", ["--train-batch-size", "1.5"], "--train-batch-size"),
    ("train", ["--train-global-batch-size", "0"], "--train-global-batch-size"),
    ("train", ["--train-global-batch-size", "100", "--train-batch-size", "64"],
     "--train-global-batch-size"),
    ("train", ["--max-steps", "0"], "--max-steps"),
    ("train", ["--epochs", "0"], "--epochs"),
    ("train", ["--beam-size", "0"], "--beam-size"),
    ("train", ["--test-batch-size", "0"], "--test-batch-size"),
    ("train", ["--lr", "0"], "--lr"),
    ("train", ["--lr", "-1"], "--lr"),
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--dropout", "1.5"], "--dropout"),
    ("train", ["--dropout", "1"], "--dropout"),
    ("train", ["--smoothing", "-0.1"], "--smoothing"),
    ("train", ["--grad-clip", "-1"], "--grad-clip"),
    ("train", ["--warmup-steps", "-1"], "--warmup-steps"),
    ("train", ["--warmup-steps", "2.5"], "--warmup-steps"),
    ("train", ["--remain-steps", "inf"], "--remain-steps"),
    ("train", ["--decay-interval", "0"], "--decay-interval"),
    ("train", ["--decay-steps", "0"], "--decay-steps"),
    ("train", ["--decay-factor", "0"], "--decay-factor"),
    ("train", ["--hidden-size", "0"], "--hidden-size"),
    ("train", ["--num-layers", "1"], "--num-layers"),
    ("train", ["--num-buckets", "0"], "--num-buckets"),
    ("train", ["--train-min-length", "60", "--train-max-length", "50"], "--train-min-length"),
    ("train", ["--max-length-test", "0"], "--max-length-test"),
    ("train", ["--save-freq", "-1"], "--save-freq"),
    ("train", ["--keep-checkpoints", "0"], "--keep-checkpoints"),
    ("train", ["--print-freq", "0"], "--print-freq"),
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--threads", "0"], "--threads"),
    ("train", ["--target-bleu", "-5"], "--target-bleu"),
    ("train", ["--no-eval", "--target-bleu", "24.4"], "--no-eval"),
    ("train", ["--target-bleu", "24.4", "--no-eval"], "--target-bleu"),
    ("train", ["--resume", "--overwrite"], "--overwrite"),
    ("train", ["--fp16", "--math", "bf16"], "--fp16"),
    ("translate", ["--beam-size", "0"], "--beam-size"),
    ("translate", ["--beam-size", "1,0,5"], "--beam-size"),
    ("translate", ["--batch-size", "0"], "--batch-size"),
    ("translate", ["--batch-size", "-4"], "--batch-size"),
    ("translate", ["--max-length", "0"], "--max-length"),
    ("translate", ["--max-input-length", "2"], "--max-input-length"),
    ("translate", ["--warmup", "-1"], "--warmup"),
    ("translate", ["--len-norm-factor", "-0.5"], "--len-norm-factor"),
    ("translate", ["--output", "in.en"], "--output"),
    ("benchmark", ["--batch-size", "0"], "--batch-size"),
    ("benchmark", ["--infer-batch-size", "0"], "--infer-batch-size"),
    ("benchmark", ["--infer-batch-size", "1,0"], "--infer-batch-size"),
    ("benchmark", ["--beam-size", "0"], "--beam-size"),
    ("benchmark", ["--hidden-size", "0"], "--hidden-size"),
    ("benchmark", ["--num-layers", "1"], "--num-layers"),
    ("benchmark", ["--vocab-size", "0"], "--vocab-size"),
    ("benchmark", ["--vocab-size", "3"], "--vocab-size"),
    ("benchmark", ["--steps", "0"], "--steps"),
    ("benchmark", ["--warmup", "-1"], "--warmup"),
    ("benchmark", ["--decode-len", "0"], "--decode-len"),
    ("benchmark", ["--infer-batches", "0"], "--infer-batches"),
    ("benchmark", ["--min-len", "1"], "--min-len"),
    ("benchmark", ["--min-len", "20", "--max-len", "10"], "--max-len"),
    ("benchmark", ["--threads", "0"], "--threads"),
    ("benchmark", ["--mode", "training"], "--mode"),
    ("prepare_data", ["--merges", "0"], "--merges"),
    ("prepare_data", ["--workers", "0"], "--workers"),
    ("prepare_data", ["--min-len", "-1"], "--min-len"),
    ("prepare_data", ["--max-len", "0"], "--max-len"),
    ("prepare_data", ["--min-len", "5", "--max-len", "3"], "--max-len"),
    ("prepare_data", ["--max-ratio", "0"], "--max-ratio"),
    ("prepare_data", ["--dev-name", "train"], "--dev-name"),
    ("prepare_data", ["--src", "en", "--tgt", "en"], "--tgt"),
    ("toy_data", ["--train", "0"], "--train"),
    ("toy_data", ["--train", "-5"], "--train"),
    ("toy_data", ["--dev", "0"], "--dev"),
    ("toy_data", ["--test", "-1"], "--test"),
    ("toy_data", ["--seed", "-1"], "--seed"),
    ("wmt16", ["--merges", "0"], "--merges"),
    ("wmt16", ["--workers", "0"], "--workers"),
    ("wmt16", ["--workers", "-1"], "--workers"),
    ("wmt16", ["--base-url", "mirror.example.org"], "--base-url"),
]  # fmt: skip


def parse(module: str, argv: list[str]) -> argparse.Namespace:
    return MODULES[module].parse_args([*REQUIRED.get(module, []), *argv])


@pytest.mark.parametrize("module, argv, flag", BAD, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD])
def test_bad_flag_is_one_line_naming_it(module, argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse(module, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert flag in lines[0] and f"python -m gnmt.{module}: error:" in lines[0]


def test_small_valid_values_still_parse():
    args = parse(
        "train",
        ["--train-batch-size", "1", "--max-steps", "1", "--lr", "1e-6", "--dropout", "0",
         "--smoothing", "0.99", "--warmup-steps", "0", "--remain-steps", "0.5",
         "--decay-interval", "3", "--save-freq", "0", "--grad-clip", "0", "--target-bleu", "0",
         "--num-layers", "2", "--resume", "--threads", "1"],
    )  # fmt: skip
    assert (args.train_batch_size, args.max_steps, args.lr) == (1, 1, 1e-6)
    assert (args.warmup_steps, args.remain_steps, args.decay_interval) == (0, 0.5, 3)
    assert train.as_steps(args.decay_interval) == 3 and args.save_freq == 0
    assert args.resume and not args.overwrite and args.eval and args.target_bleu == 0
    assert parse("train", ["--no-eval", "--no-share-embedding"]).eval is False
    args = parse("translate", ["--batch-size", "1,32", "--beam-size", "1", "--warmup", "0"])
    assert (args.batch_size, args.beam_size, args.warmup) == ([1, 32], [1], 0)
    args = parse("benchmark", ["--min-len", "2", "--max-len", "2", "--infer-batch-size", "1,3"])
    assert (args.min_len, args.max_len, args.infer_batch_size) == (2, 2, "1,3")
    args = parse("prepare_data", ["--merges", "1", "--min-len", "0", "--workers", "1"])
    assert (args.merges, args.min_len, args.workers) == (1, 0, 1)
    args = parse("toy_data", ["--train", "1", "--dev", "1", "--test", "1", "--seed", "0"])
    assert (args.train, args.dev, args.test, args.seed) == (1, 1, 1, 0)
    args = parse("wmt16", ["--merges", "1", "--workers", "1", "--base-url", "file:///m"])
    assert (args.merges, args.workers) == (1, 1)


def test_defaults_are_the_recipe_values():
    args = parse("train", [])
    assert (args.train_batch_size, args.lr, args.dropout, args.epochs) == (128, 2e-3, 0.2, 6)
    assert (args.warmup_steps, args.remain_steps, args.decay_interval) == (200, 0.666, None)
    assert args.eval and args.share_embedding and args.max_steps is None
    assert (args.save_freq, args.beam_size, args.test_batch_size) == (2000, 5, 128)
    args = parse("translate", [])
    assert (args.batch_size, args.beam_size) == ([128], [5])


def test_toy_data_writes_nothing_for_a_zero_count(tmp_path, capsys):
    out = tmp_path / "toy"
    with pytest.raises(SystemExit) as info:
        toy_data.main(["--out-dir", str(out), "--test", "0"])
    assert info.value.code == 2 and not out.exists()
    assert "--test" in capsys.readouterr().err


def _parser(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser an entry point builds, caught as it starts parsing."""
    seen = []

    def catch(self, argv=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        parse(module, [])
    return seen[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_help_names_the_module_and_runs(module, capsys):
    with pytest.raises(SystemExit) as info:
        MODULES[module].parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m gnmt.{module} ")
    assert "(default: True)" not in out  # a --no-* flag must not read as on


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_option_has_help_with_its_default_once(module, monkeypatch):
    parser = _parser(module, monkeypatch)
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help, action.option_strings
        text = formatter._expand_help(action)
        assert text.count("(default:") <= 1, (action.option_strings, text)


def test_no_eval_reads_as_turning_evaluation_off(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "--no-eval evaluation (test BLEU after each epoch) is on by default; this turns it off"
        in out
    )
