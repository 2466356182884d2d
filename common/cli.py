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
from collections.abc import Callable
from typing import Any, NoReturn

import torch

from common import distributed
from common.distributed import DeviceError, resolve_device
from common.errors import UserError
from common.precision import PRECISIONS, Precision, check_supported, full_precision_mode


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


class _Mode(argparse.Action):
    """--math MODE / --precision MODE, or an fp16 shorthand (nargs=0): the precision and
    the flag as typed; two flags that disagree are an error, not a silent choice."""

    def __call__(self, parser, namespace, values, option_string=None):
        mode = self.const if self.nargs == 0 else values
        typed = option_string if self.nargs == 0 else f"{option_string} {mode}"
        before = getattr(namespace, "math_flag", None)
        if before is not None and namespace.math != mode:
            parser.error(f"{typed} conflicts with {before}: give one of them")
        namespace.math, namespace.math_flag = mode, typed


def add_precision_flags(
    parser: argparse.ArgumentParser,
    default_help: str,
    shorthands: tuple[str, ...] = ("--fp16", "--amp"),
) -> None:
    """--math (alias --precision, as in NVIDIA's scripts) and fp16 shorthands, all into
    `args.math`; `args.math_flag` keeps the flag as typed for error messages."""
    parser.add_argument(
        "--math", "--precision", dest="math", choices=PRECISIONS, default=None,
        action=_Mode, help=f"numeric precision; when not given: {default_help}",
    )  # fmt: skip
    for flag in shorthands:
        parser.add_argument(
            flag,
            dest="math",
            nargs=0,
            const="fp16",
            action=_Mode,
            default=argparse.SUPPRESS,
            help="same as --math fp16",
        )
    parser.set_defaults(math_flag=None)


def default_precision(device: torch.device, gpu: str = "tf32") -> str:
    """The precision without --math: `gpu` ("tf32" or "fp16") on a GPU, with tf32 only from
    Ampere on (fp32 before), and fp32 on the CPU."""
    if device.type != "cuda":
        return "fp32"
    return gpu if gpu != "tf32" else full_precision_mode(device)


def create_precision(
    args: argparse.Namespace, device: torch.device, gpu: str = "tf32", **scaler_kwargs: Any
) -> Precision:
    """The run's `Precision` from the flags of `add_precision_flags`; errors name the flag
    as the user typed it."""
    mode = args.math or default_precision(device, gpu)
    return Precision.create(mode, device, "--math", args.math_flag, **scaler_kwargs)


def run_main(work: Callable[[], int | None]) -> int:
    """An entry point's exit status for `work()`: a user mistake (`UserError`) or an OS
    error (a full disk, an unreadable file) is printed as one line `error: ...` and gives
    1; a bug keeps its traceback. On any error the process group is released without
    waiting for the other ranks, which may be elsewhere."""
    try:
        code = work()
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        distributed.abort()
        return 1
    except BaseException:
        distributed.abort()
        raise
    return 0 if code is None else code
