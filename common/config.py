"""Named configurations in YAML as argparse defaults: the command line still wins.

A config file holds a base section per job (`train:`, `eval:`, ...) with the published
recipe's values, optional extra bases (for example `train_multinode:`), and `configs:`
naming machine set-ups, each a set of overrides per section:

    train: {n_layer: 16, lr: 0.01, batch_size: 256}
    eval: {tgt_len: 64, mem_len: 640}
    configs:
      default: {}
      dgx1_1gpu_fp16:
        train: {precision: fp16, batch_chunk: 8}
        eval: {precision: fp16}
      8dgx2_16gpu_fp16:
        base: {train: train_multinode}   # start `train` from another base section
        train: {precision: fp16}

    parser = argparse.ArgumentParser(); ...
    args = parse_with_config(parser, argv, "transformer_xl/configs/wt103_base.yaml", "train")

`--config NAME` (default `default`) picks the set-up and `--config_file` the file; keys
must be the parser's destinations, so a typo in a config is an error, not ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError


class ConfigError(UserError, ValueError):
    """An unknown config name, section or key; the message names the file."""


def load_named_config(path: str | os.PathLike, name: str, section: str) -> dict[str, Any]:
    """The values of `section` for set-up `name`: the base section, then the overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    configs = doc.get("configs") or {}
    if name not in configs:
        raise ConfigError(f"{path}: no config named {name!r} (known: {', '.join(configs)})")
    entry = configs[name] or {}
    base_name = (entry.get("base") or {}).get(section, section)
    if base_name not in doc:
        raise ConfigError(f"{path}: config {name!r} needs a section {base_name!r}")
    values = dict(doc[base_name] or {})
    values.update(entry.get(section) or {})
    return values


def parse_with_config(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    default_file: str | os.PathLike | None,
    section: str | Callable[[argparse.Namespace], str],
    *,
    name_flag: str = "--config",
    file_flag: str = "--config_file",
) -> argparse.Namespace:
    """Parse `argv` with the named config's values as defaults (flags override them).

    Adds `name_flag` and `file_flag` (`--config`, `--config_file`) to `parser`; a script
    whose flags already use those names (BERT's `--config_file` is the model's JSON) picks
    others. `section` may be a function of the flags parsed so far (e.g. the phase).
    """
    parser.add_argument(name_flag, default="default", help="named set-up in the config file")
    parser.add_argument(
        file_flag, default=default_file, help="YAML file of named set-ups ('' for none)"
    )
    # The first pass only finds the set-up: --help waits for the second, so that it shows
    # the set-up's values as the defaults.
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    try:
        known = _first_pass(parser, [a for a in argv if a not in ("-h", "--help")], wants_help)
    except _NoSetup:  # --help without what picks the set-up: the code's defaults
        return parser.parse_args(argv)
    name = getattr(known, name_flag.lstrip("-").replace("-", "_"))
    config_file = getattr(known, file_flag.lstrip("-").replace("-", "_"))
    if config_file:
        chosen = section(known) if callable(section) else section
        values = load_named_config(config_file, name, chosen)
        dests = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise ConfigError(
                f"{config_file}: config {name!r} sets unknown options: {', '.join(unknown)}"
            )
        parser.set_defaults(**in_repository(parser, values))
    return parser.parse_args(argv)


class _NoSetup(Exception):
    pass


def _first_pass(
    parser: argparse.ArgumentParser, argv: list[str], quiet: bool
) -> argparse.Namespace:
    """The flags known so far; with `quiet` (--help asked) an error such as a missing
    required flag is no error yet."""
    if not quiet:
        return parser.parse_known_args(argv)[0]

    def no_setup(message: str):
        raise _NoSetup(message)

    error, parser.error = parser.error, no_setup
    try:
        return parser.parse_known_args(argv)[0]
    finally:
        parser.error = error


REPOSITORY = Path(__file__).resolve().parents[1]


def in_repository(parser: argparse.ArgumentParser, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with each relative path of a path option (`type=Path`) made absolute
    against the repository, where the set-ups' paths point (bert/configs/...,
    data/download/...): a run started from another folder finds the same files."""
    path_dests = {action.dest for action in parser._actions if action.type is Path}
    out = dict(values)
    for dest, value in values.items():
        if dest in path_dests and isinstance(value, str) and value and not os.path.isabs(value):
            out[dest] = str(REPOSITORY / value)
    return out
