"""Named YAML configurations as argparse defaults."""

import argparse
from pathlib import Path

import pytest

from common.config import ConfigError, load_named_config, parse_with_config

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
