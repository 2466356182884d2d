"""Command-line parts every entry point shares: one-line flag errors and a checked --device.

    p = cli.ArgumentParser(description=...)
    p.add_argument("--device", type=cli.device_arg, choices=None, default=None)

A bad flag ends the run before any work with one line that names the flag, such as
`train.py: error: argument --device: 'cuda': no CUDA device is visible (...)`, and
exit status 2, as argparse does; the full usage stays behind --help.
"""

from __future__ import annotations

import argparse
import os
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


# --- checked numbers: argparse types ----------------------------------------------------
# A bad value ends the run before any work: `error: argument --train_batch_size: must be a
# positive integer, got '-2'`. Each type's name says what it accepts.


def _number(value: str, kind: type, what: str, ok: Callable[[Any], bool]) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}") from None
    if kind is float and number != number:  # nan
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
    if not ok(number):
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
    return number


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (sizes, counts, intervals)."""
    return _number(value, int, "a positive integer", lambda n: n >= 1)


def nonnegative_int(value: str) -> int:
    """argparse type: an integer >= 0 (0 usually means "off" or "none")."""
    return _number(value, int, "an integer >= 0", lambda n: n >= 0)


def positive_float(value: str) -> float:
    """argparse type: a finite number > 0 (learning rates, epsilons)."""
    return _number(value, float, "a number > 0", lambda x: 0 < x < float("inf"))


def nonnegative_float(value: str) -> float:
    """argparse type: a finite number >= 0 (weight decay, clipping norms, 0: off)."""
    return _number(value, float, "a number >= 0", lambda x: 0 <= x < float("inf"))


def probability(value: str) -> float:
    """argparse type: a number in [0, 1) (dropout, label smoothing, masking rates)."""
    return _number(value, float, "a number in [0, 1)", lambda x: 0 <= x < 1)


def fraction(value: str) -> float:
    """argparse type: a number in [0, 1] (warm-up proportions, shares of a dataset)."""
    return _number(value, float, "a number in [0, 1]", lambda x: 0 <= x <= 1)


def any_float(value: str) -> float:
    """argparse type: a finite number (a target that may be negative)."""
    return _number(value, float, "a finite number", lambda x: abs(x) < float("inf"))


def check_args(parser: argparse.ArgumentParser, *problems: str | None) -> None:
    """End the run with the first problem found among flag combinations (each a message
    naming the flags as typed, or None when fine), as argparse does for one flag."""
    for problem in problems:
        if problem:
            parser.error(problem)


def conflict(args: argparse.Namespace, a: str, b: str, why: str = "") -> str | None:
    """A message when both flags `a` and `b` (names as typed) are set, else None."""
    set_a, set_b = (_is_set(args, flag) for flag in (a, b))
    if set_a and set_b:
        return f"{a} conflicts with {b}{': ' + why if why else ''}: give one of them"
    return None


def _is_set(args: argparse.Namespace, flag: str) -> bool:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    return value is not None and value is not False


# --- run folders and threads -------------------------------------------------------------


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """--overwrite: start over in a folder that holds a run (see `claim_run_folder`)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a folder that holds one: its checkpoints and logs are "
        "deleted first (without it such a folder is refused unless resumed)",
    )


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """--threads: CPU threads of each process (see `set_threads`)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads per process; when not given: the CPU cores this process may "
        "use, divided among the processes of this node",
    )


def set_threads(threads: int | None, local_processes: int = 1) -> int:
    """Set torch's intra-op threads: `threads`, or the cores this process may use shared
    among `local_processes` (at least 1). Returns the number set."""
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        threads = max(cores // max(local_processes, 1), 1)
    torch.set_num_threads(threads)
    return threads


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
    1; a second Ctrl-C gives 130 without a traceback; a bug keeps its traceback. On any
    error the process group is released without waiting for the other ranks, which may
    be elsewhere."""
    try:
        code = work()
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        distributed.abort()
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: out at once, no traceback
        print("interrupted: the last checkpoint saved is kept", file=sys.stderr, flush=True)
        distributed.abort()
        return 130
    except BaseException:
        distributed.abort()
        raise
    return 0 if code is None else code
