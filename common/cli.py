"""Command-line parts every entry point shares: one-line flag errors and a checked --device.

    p = cli.ArgumentParser(description=...)
    p.add_argument("--device", type=cli.device_arg, choices=None, default=None)

A bad flag ends the run before any work with one line that names the flag, such as
`train.py: error: argument --device: 'cuda': no CUDA device is visible (...)`, and
exit status 2, as argparse does; the full usage stays behind --help.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import torch

from common.distributed import DeviceError, resolve_device
from common.precision import PRECISIONS, check_supported


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage of a recipe is dozens of lines)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)


def device_arg(value: str) -> str:
    """argparse type for --device: a device this machine has ("cpu", "cuda", "cuda:1")."""
    try:
        resolve_device(value)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    return value


def precisions_arg(value: str) -> list[str]:
    """argparse type for comma-separated precisions ("fp32,bf16")."""
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in PRECISIONS]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected comma-separated precisions from {', '.join(PRECISIONS)}"
        )
    return modes


def device_for_precisions(name: str | None, modes: list[str], flag: str = "--math") -> torch.device:
    """The device for `--device NAME`, after checking that it runs every one of `modes`
    (a benchmark's list): `PrecisionError` before the first one is measured."""
    device = resolve_device(name)
    for mode in modes:
        check_supported(mode, device, flag)
    return device
