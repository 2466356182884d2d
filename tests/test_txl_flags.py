"""Transformer-XL entry points refuse bad flags before any work: a bad number, a flag
combination that cannot work, or a bad value in a YAML --config_file ends the parse with
exit status 2 and one line naming the flag as typed; --help shows each option once."""

import argparse
from pathlib import Path

import pytest
import yaml

from common import cli
from common.config import REPOSITORY, ConfigError, load_named_config
from transformer_xl import benchmark, data, getdata, toy_data, train
from transformer_xl import eval as txl_eval

MODULES = {
    "train": train,
    "eval": txl_eval,
    "benchmark": benchmark,
    "getdata": getdata,
    "toy_data": toy_data,
}
CONFIGS = sorted((Path(train.__file__).parent / "configs").glob("*.yaml"))
NO_CONFIG = ["--config_file", ""]  # train and eval: the built-in defaults only
WORK = "/tmp/txl-flags-work"

# (module, argv, text the one error line must hold)
BAD = [
    ("train", ["--batch_size", "0"], "argument --batch_size: must be a positive integer, got '0'"),
    ("train", ["--eval_interval", "0"], "argument --eval_interval: must be a positive integer"),
    ("train", ["--log_interval", "0"], "argument --log_interval: must be a positive integer"),
    ("train", ["--d_head", "0"], "argument --d_head: must be a positive integer"),
    ("train", ["--n_layer", "-2"], "argument --n_layer: must be a positive integer, got '-2'"),
    ("train", ["--batch_chunk", "0"], "argument --batch_chunk: must be a positive integer"),
    ("train", ["--tgt_len", "x"], "argument --tgt_len: must be a positive integer, got 'x'"),
    ("train", ["--lr", "0"], "argument --lr: must be a number > 0, got '0'"),
    ("train", ["--lr", "-1"], "argument --lr: must be a number > 0, got '-1'"),
    ("train", ["--lr", "nan"], "argument --lr: must be a number > 0"),
    ("train", ["--dropout", "1.5"], "argument --dropout: must be a number in [0, 1), got '1.5'"),
    ("train", ["--dropatt", "1"], "argument --dropatt: must be a number in [0, 1)"),
    ("train", ["--max_step", "0"], "argument --max_step: must be a positive integer"),
    ("train", ["--mem_len", "-1"], "argument --mem_len: must be an integer >= 0, got '-1'"),
    ("train", ["--clamp_len", "-2"], "argument --clamp_len: must be an integer >= -1, got '-2'"),
    ("train", ["--d_embed", "0"], "argument --d_embed: must be a positive integer or -1"),
    ("train", ["--eval_max_steps", "0"], "argument --eval_max_steps: must be a positive integer"),
    ("train", ["--attn_type", "1"], "argument --attn_type: invalid choice: 1"),
    ("train", ["--clip", "-0.1"], "argument --clip: must be a number >= 0"),
    ("train", ["--threads", "0"], "argument --threads: must be a positive integer"),
    ("train", ["--no_eval", "--target_perplexity", "30"],
     "--no_eval conflicts with --target_perplexity"),
    ("train", ["--resume", "--restart", "old/checkpoint_last.pt"],
     "--resume conflicts with --restart"),
    ("train", ["--resume", "--overwrite"], "--resume conflicts with --overwrite"),
    ("train", ["--work_dir", WORK, "--restart", f"{WORK}/checkpoint_last.pt", "--overwrite"],
     f"--restart {WORK}/checkpoint_last.pt continues the run in --work_dir {WORK}"),
    ("train", ["--batch_size", "6", "--batch_chunk", "4"],
     "--batch_size 6 must be a multiple of --batch_chunk 4"),
    ("train", ["--local_batch_size", "3", "--batch_chunk", "2"],
     "--local_batch_size 3 must be a multiple of --batch_chunk 2"),
    ("train", ["--max_step", "100", "--warmup_step", "100"],
     "the cosine schedule needs --max_step (100) above --warmup_step (100)"),
    ("train", ["--eval_tgt_len", "400"],
     "--eval_tgt_len 400 is longer than --tgt_len 192 + --mem_len 192"),
    ("train", ["--dataset", "lm1b", "--varlen"], "--roll and --varlen apply to ordered corpora"),
    ("eval", ["--batch_size", "0"], "argument --batch_size: must be a positive integer"),
    ("eval", ["--tgt_len", "0"], "argument --tgt_len: must be a positive integer"),
    ("eval", ["--mem_len", "-5"], "argument --mem_len: must be an integer >= 0"),
    ("eval", ["--repeat", "0"], "argument --repeat: must be a positive integer"),
    ("eval", ["--max_size", "0"], "argument --max_size: must be a positive integer"),
    ("eval", ["--log_interval", "-1"], "argument --log_interval: must be an integer >= 0"),
    ("eval", ["--percentiles", "50", "101"],
     "argument --percentiles: must be a number in [0, 100], got '101'"),
    ("eval", ["--load_torchscript", "m.pt"], "--load_torchscript needs --type torchscript"),
    ("eval", ["--manual", "a", "b", "--target_perplexity", "9"],
     "--manual conflicts with --target_perplexity"),
    ("benchmark", ["--batch_size", "0"], "argument --batch_size: must be a positive integer"),
    ("benchmark", ["--tgt_len", "0"], "argument --tgt_len: must be a positive integer"),
    ("benchmark", ["--eval_batch_size", "0"], "argument --eval_batch_size: must be a positive"),
    ("benchmark", ["--eval_tgt_len", "0"], "argument --eval_tgt_len: must be a positive integer"),
    ("benchmark", ["--steps", "0"], "argument --steps: must be a positive integer"),
    ("benchmark", ["--infer_steps", "0"], "argument --infer_steps: must be a positive integer"),
    ("benchmark", ["--vocab_size", "0"], "argument --vocab_size: must be a positive integer"),
    ("benchmark", ["--warmup", "-1"], "argument --warmup: must be an integer >= 0"),
    ("benchmark", ["--mode", "trian"], "argument --mode: expected comma-separated names"),
    ("benchmark", ["--types", "pytorch,jit"], "argument --types: expected comma-separated names"),
    ("benchmark", ["--types", "torchscript", "--eval_mem_len", "0"],
     "--types torchscript traces the model with a full memory"),
    ("getdata", ["--heldout-size", "0"], "argument --heldout-size: must be a positive integer"),
    ("getdata", ["--retries", "-1"], "argument --retries: must be an integer >= 0, got '-1'"),
    ("getdata", ["--datasets", "wt103", "--base-url-override", "enwik8=http://mirror/x"],
     "--base-url-override enwik8=...: enwik8 is not in --datasets (wt103)"),
    ("getdata", ["--base-url-override", "text8=http://a", "--base-url-override", "text8=http://b"],
     "--base-url-override gives text8 more than one URL"),
    ("toy_data", ["--articles", "0"], "argument --articles: must be a positive integer, got '0'"),
    ("toy_data", ["--articles", "-3"], "argument --articles: must be a positive integer"),
    ("toy_data", ["--articles", "2"], "--articles 2 is too few"),
    ("toy_data", ["--seed", "-1"], "argument --seed: must be an integer >= 0"),
]  # fmt: skip


def refused(capsys, module: str, argv: list[str]) -> str:
    """The one stderr line of a parse that must end with exit status 2."""
    with pytest.raises(SystemExit) as exc:
        MODULES[module].parse_args(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"python -m transformer_xl.{module}: error: ")
    return lines[0]


def with_defaults(module: str, argv: list[str]) -> list[str]:
    return [*NO_CONFIG, *argv] if module in ("train", "eval") else argv


@pytest.mark.parametrize(
    "module, argv, expected", BAD, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD]
)
def test_bad_flags_end_the_parse_naming_the_flag(capsys, module, argv, expected):
    assert expected in refused(capsys, module, with_defaults(module, argv))


def write_config(tmp_path: Path, **sections) -> str:
    path = tmp_path / "setup.yaml"
    path.write_text(yaml.safe_dump({**sections, "configs": {"default": {}, "other": {}}}))
    return str(path)


@pytest.mark.parametrize(
    "module, section, expected",
    [
        ("train", {"batch_size": 0}, "argument --batch_size: must be a positive integer, got '0'"),
        ("train", {"dropout": 1.5}, "argument --dropout: must be a number in [0, 1)"),
        ("train", {"n_layer": 2.5}, "argument --n_layer: must be a positive integer, got '2.5'"),
        ("train", {"lr": "fast"}, "argument --lr: must be a number > 0, got 'fast'"),
        ("train", {"optim": "adamw"}, "argument --optim: invalid choice: 'adamw'"),
        ("train", {"no_eval": True, "target_perplexity": 20},
         "--no_eval conflicts with --target_perplexity"),
        ("eval", {"mem_len": -5}, "argument --mem_len: must be an integer >= 0, got '-5'"),
        ("eval", {"percentiles": [50, 120]},
         "argument --percentiles: must be a number in [0, 100], got '120'"),
    ],
)  # fmt: skip
def test_bad_value_in_a_config_file_names_the_flag(capsys, tmp_path, module, section, expected):
    config = write_config(tmp_path, **{module: section})
    line = refused(capsys, module, ["--config_file", config, "--config", "other"])
    assert expected in line
    if "argument" in expected and section != {"lr": "fast"}:  # argparse converts strings
        assert f"set by config 'other' of {config}" in line


def test_the_command_line_overrides_a_bad_config_value(tmp_path):
    config = write_config(tmp_path, train={"batch_size": 0, "lr": 1})
    args = train.parse_args(["--config_file", config, "--batch_size", "4"])
    assert args.batch_size == 4
    assert args.lr == 1.0 and isinstance(args.lr, float)  # through --lr's type


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_setup_still_parses(config_file):
    doc = yaml.safe_load(config_file.read_text())
    for name in doc["configs"]:
        argv = ["--config_file", str(config_file), "--config", name]
        for module, section in ((train, "train"), (txl_eval, "eval")):
            if section not in doc:
                continue
            args = module.parse_args(argv)
            for key, value in load_named_config(config_file, name, section).items():
                got = getattr(args, key)
                if isinstance(got, Path):  # a set-up's paths are the repository's
                    value = REPOSITORY / value
                assert got == value, (name, key)


def test_small_valid_values_still_parse(tmp_path):
    args = train.parse_args([
        *NO_CONFIG, "--batch_size", "1", "--tgt_len", "1", "--mem_len", "0", "--ext_len", "0",
        "--eval_tgt_len", "1", "--dropout", "0", "--lr", "1e-9", "--clamp_len", "0",
        "--d_embed", "-1", "--eval_max_steps", "1", "--max_step", "2", "--warmup_step", "1",
        "--threads", "1", "--restart", str(tmp_path / "elsewhere.pt"), "--overwrite",
    ])  # fmt: skip
    assert (args.batch_size, args.tgt_len, args.mem_len, args.clamp_len) == (1, 1, 0, 0)
    assert (args.lr, args.d_embed, args.threads, args.overwrite) == (1e-9, -1, 1, True)
    defaults = train.parse_args(NO_CONFIG)
    assert (defaults.clamp_len, defaults.eval_max_steps, defaults.lr) == (-1, -1, 0.00025)
    args = txl_eval.parse_args([*NO_CONFIG, "--log_interval", "0", "--percentiles", "0", "100"])
    assert args.log_interval == 0 and args.percentiles == [0.0, 100.0]
    args = txl_eval.parse_args([*NO_CONFIG, "--type", "torchscript", "--load_torchscript", "m"])
    assert args.load_torchscript == Path("m")
    args = benchmark.parse_args(["--mode", "infer", "--types", "torchscript", "--warmup", "0"])
    assert (args.mode, args.types, args.warmup) == ("infer", "torchscript", 0)
    args = getdata.parse_args(["--datasets", "text8", "--base-url-override", "text8=http://a"])
    assert args.base_url_override == [("text8", "http://a")] and args.retries == 5
    assert toy_data.parse_args(["--articles", "3", "--seed", "0"]).articles == 3


def test_toy_data_refuses_instead_of_writing_empty_files(capsys, tmp_path):
    out = tmp_path / "toy"
    for count in ("0", "-1", "2"):
        with pytest.raises(SystemExit) as exc:
            toy_data.main(["--out-dir", str(out), "--articles", count])
        assert exc.value.code == 2
        assert not out.exists()
    assert toy_data.main(["--out-dir", str(out), "--articles", "3"]) == 0
    assert all((out / f"{split}.txt").stat().st_size > 0 for split in ("train", "valid", "test"))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_help_names_the_module_and_every_option(capsys, monkeypatch, module):
    parsers = []
    parse = cli.ArgumentParser.parse_known_args

    def spy(self, *args, **kwargs):
        parsers.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(cli.ArgumentParser, "parse_known_args", spy)
    with pytest.raises(SystemExit) as exc:
        MODULES[module].parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m transformer_xl.{module} ")
    for action in parsers[0]._actions:
        assert action.help and action.help.strip(), action.option_strings
        assert "default:" not in action.help, action.option_strings
    if module == "train":
        assert "turn off evaluation, which by default scores" in " ".join(out.split())


# --- check_eval_split: after the corpus loads, before training --------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    toy_data.generate(root, articles=40, seed=3)
    return data.Corpus.load(root, "wt103", cache=False)


def eval_args(*extra: str) -> argparse.Namespace:
    return train.parse_args([*NO_CONFIG, "--data", "toy", "--tgt_len", "8", *extra])


def test_an_eval_split_shorter_than_one_segment_names_the_flags(corpus):
    args = eval_args("--eval_batch_size", "16", "--eval_tgt_len", "200", "--mem_len", "200")
    with pytest.raises(ConfigError) as exc:
        train.check_eval_split(corpus, args)
    message = str(exc.value)
    assert f"--data toy: the valid split ({corpus.valid.numel()} tokens) cannot fill" in message
    assert "--eval_batch_size 16 x --eval_tgt_len 200" in message


def test_an_eval_split_that_holds_a_segment_passes(corpus):
    train.check_eval_split(corpus, eval_args("--eval_batch_size", "2", "--eval_tgt_len", "8"))
    big = eval_args("--eval_batch_size", "16", "--eval_tgt_len", "200", "--mem_len", "200")
    big.no_eval = True  # nothing is evaluated: nothing to check
    train.check_eval_split(corpus, big)


def test_an_eval_batch_must_divide_among_the_processes(corpus):
    args = eval_args("--eval_batch_size", "4", "--eval_tgt_len", "8")
    with pytest.raises(ConfigError, match="--eval_batch_size 4 must be a multiple of the 3"):
        train.check_eval_split(corpus, args, world_size=3)
    train.check_eval_split(corpus, args, world_size=2)
