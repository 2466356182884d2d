"""Named YAML configurations as argparse defaults."""

import argparse
from pathlib import Path

import pytest

from common.config import REPOSITORY, ConfigError, load_named_config, parse_with_config

CONFIG = """
train: {lr: 0.01, batch_size: 256, precision: fp32}
train_multinode: {lr: 0.02, batch_size: 512, precision: fp32}
eval: {tgt_len: 64}
configs:
  default: {}
  one_gpu_fp16:
    train: {precision: fp16, batch_chunk: 8}
    eval: {tgt_len: 128}
  multinode:
    base: {train: train_multinode}
    train: {batch_chunk: 2}
  typo:
    train: {batch_chnk: 2}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(CONFIG)
    return path


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--batch_chunk", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    return p


def test_named_config_overrides_its_base_section(config_file):
    assert load_named_config(config_file, "one_gpu_fp16", "train") == {
        "lr": 0.01,
        "batch_size": 256,
        "precision": "fp16",
        "batch_chunk": 8,
    }
    assert load_named_config(config_file, "one_gpu_fp16", "eval") == {"tgt_len": 128}
    assert load_named_config(config_file, "default", "eval") == {"tgt_len": 64}


def test_a_config_can_start_from_another_base(config_file):
    values = load_named_config(config_file, "multinode", "train")
    assert values == {"lr": 0.02, "batch_size": 512, "precision": "fp32", "batch_chunk": 2}


def test_flags_win_over_the_config(config_file):
    args = parse_with_config(
        parser(), ["--config", "one_gpu_fp16", "--batch_chunk", "4"], config_file, "train"
    )
    assert (args.lr, args.batch_size, args.precision, args.batch_chunk) == (0.01, 256, "fp16", 4)


def test_no_config_file_keeps_the_parser_defaults():
    args = parse_with_config(parser(), ["--config_file", ""], None, "train")
    assert (args.lr, args.batch_size) == (1.0, 1)


def test_unknown_name_key_or_file_is_an_error(config_file):
    with pytest.raises(ConfigError, match="no config named 'dgx9'.*known: default"):
        load_named_config(config_file, "dgx9", "train")
    with pytest.raises(ConfigError, match="unknown options: batch_chnk"):
        parse_with_config(parser(), ["--config", "typo"], config_file, "train")
    with pytest.raises(ConfigError, match="does not exist"):
        load_named_config(Path("nowhere.yaml"), "default", "train")


@pytest.mark.parametrize("name", ["wt103_base", "wt103_large"])
def test_shipped_transformer_xl_configs_load(name):
    path = Path(__file__).parent.parent / "transformer_xl" / "configs" / f"{name}.yaml"
    for config in ("default", "dgxa100_1gpu_fp16", "dgx1_8gpu_fp32", "trainbench"):
        train = load_named_config(path, config, "train")
        assert train["dataset"] == "wt103" and train["max_step"] > 0
    assert load_named_config(path, "dgxa100_1gpu_tf32", "eval")["math"] == "tf32"


def test_paths_in_a_setup_are_found_from_any_folder(tmp_path, monkeypatch):
    setups = tmp_path / "setups.yaml"
    setups.write_text(
        "train: {model_config: bert/configs/bert_tiny_config.json, name: run}\n"
        "configs: {default: {}, abs: {train: {model_config: /data/x.json}}}\n"
    )

    def parse(argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--model_config", type=Path, default=None)
        parser.add_argument("--name", default=None)
        return parse_with_config(parser, argv, str(setups), "train")

    monkeypatch.chdir(tmp_path)  # not the repository
    args = parse([])
    assert args.model_config == REPOSITORY / "bert" / "configs" / "bert_tiny_config.json"
    assert args.model_config.is_file() and args.name == "run"  # not a path option: kept
    assert parse(["--config", "abs"]).model_config == Path("/data/x.json")
    typed = parse(["--model_config", "mine.json"])
    assert typed.model_config == Path("mine.json")  # the command line stays the user's


def test_help_shows_the_setups_values_as_defaults(tmp_path, capsys):
    setups = tmp_path / "setups.yaml"
    setups.write_text("train: {lr: 0.5}\nconfigs: {default: {}, fast: {train: {lr: 2.0}}}\n")

    def help_of(argv, required=False):
        parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
        parser.add_argument("--task", required=required, help="picks the section")
        with pytest.raises(SystemExit) as done:
            parse_with_config(parser, [*argv, "--help"], str(setups), "train")
        assert done.value.code == 0
        return " ".join(capsys.readouterr().out.split())

    assert "learning rate (default: 0.5)" in help_of([])
    assert "learning rate (default: 2.0)" in help_of(["--config", "fast"])
    # what picks the section is missing: the help still shows, with the code's defaults
    assert "learning rate (default: 0.1)" in help_of([], required=True)
