"""Plot loss, learning rate and throughput from a DLLogger log.

    python scripts/plot_log.py results/run/log.json --out-dir plots/

Writes <out-dir>/loss.png, lr.png and throughput.png, each only when the log has
such values, and prints their paths. Keys are grouped by name:
    throughput   ends in "/s" or "/sec", or contains "throughput" or "per_sec", or ends
                 in "tok_s", "seq_s", "samples_s" and the like
    lr           "lr" as a word of the key ("lr", "encoder_lr", "train/lr"), or
                 containing "learning_rate"
    loss         containing "loss" (but not "loss_scale": fp16's scale is no loss)

Records used: LOG lines at a position in training, i.e. an int step or a tuple of
numbers (not "PARAMETER", not the () summary), with at least one numeric value.
When the steps go backwards the run was resumed from a checkpoint: the resumed
run's records replace the earlier ones from that step on. Steps compare as tuples,
so (epoch, iteration-in-epoch) steps count as going forward across epochs.

The x axis (--x step): an int step, or the last element of a tuple step when those
never decrease (the global step of (epoch, global_step)). When they do, e.g. for
(epoch, iteration-in-epoch), records are plotted against their order of appearance,
as with --x record.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if __package__ in (None, ""):  # run as `python scripts/plot_log.py`: find common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cli
from common.atomic import atomic_write  # noqa: E402
from common.logging import read_dllogger  # noqa: E402

_THROUGHPUT = re.compile(
    r"/s$|/sec$|throughput|per_sec|(tok|tokens|seq|seqs|sequences|samples|sentences|items)_s$"
)
_LR = re.compile(r"(^|[^a-z])lr($|[^a-z])|learning_rate")
# (file stem, y-axis label) of each figure, in the order they are written.
GROUPS = {"loss": "loss", "lr": "learning rate", "throughput": "throughput"}

Series = dict[str, tuple[list[float], list[float]]]


def group_of(key: str) -> str | None:
    """The figure a logged key belongs to ("loss", "lr", "throughput"), or None."""
    key = key.lower()
    if _THROUGHPUT.search(key):
        return "throughput"
    if _LR.search(key):
        return "lr"
    if "loss" in key and "loss_scale" not in key:
        return "loss"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step_key(step: Any) -> tuple[float, ...] | None:
    """A step as a tuple of numbers, or None when it is no position in training."""
    if _is_number(step):
        return (step,)
    if isinstance(step, list) and step and all(map(_is_number, step)):
        return tuple(step)
    return None


def training_records(records: list[dict[str, Any]]) -> list[tuple[tuple, dict[str, float]]]:
    """(step, numeric values) of the LOG records at a training position, with the
    records that a resumed run repeated taken from the resumed run."""
    kept: list[tuple[tuple, dict[str, float]]] = []
    for record in records:
        step = _step_key(record.get("step"))
        data = record.get("data")
        if record.get("type") != "LOG" or step is None or not isinstance(data, dict):
            continue
        values = {k: float(v) for k, v in data.items() if _is_number(v)}
        if not values:
            continue
        if kept and step < kept[-1][0]:  # resumed from an earlier checkpoint
            kept = [r for r in kept if r[0] < step]
        kept.append((step, values))
    return kept


def series(records: list[dict[str, Any]], x: str = "step") -> tuple[str, dict[str, Series]]:
    """The x-axis label ("step" or "record") and, per group, key -> (xs, ys)."""
    points = training_records(records)
    xlabel, xs = "step", [step[-1] for step, _ in points]
    if x == "record" or any(b < a for a, b in itertools.pairwise(xs)):
        xlabel, xs = "record", list(range(len(points)))
    groups: dict[str, Series] = {}
    for x_value, (_, values) in zip(xs, points, strict=True):
        for key, y in values.items():
            group = group_of(key)
            if group is not None:
                line = groups.setdefault(group, {}).setdefault(key, ([], []))
                line[0].append(x_value)
                line[1].append(y)
    return xlabel, groups


def save_figure(fig: Figure, path: Path) -> None:
    """Save as PNG atomically: a reader never sees a half-written image."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def plot(groups: dict[str, Series], xlabel: str, out_dir: Path, title: str) -> list[Path]:
    """One PNG per group that has data, in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, ylabel in GROUPS.items():
        if name not in groups:
            continue
        # A Figure with its own Agg canvas: no pyplot, no global backend to switch.
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key, (xs, ys) in groups[name].items():
            ax.plot(xs, ys, marker=".", markersize=3, label=key)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("log_file", type=Path, help="DLLogger log (DLLL lines)")
    p.add_argument(
        "--out-dir", type=Path, default=None, help="folder for the PNGs (default: the log's folder)"
    )
    p.add_argument(
        "--x",
        choices=("step", "record"),
        default="step",
        help="x axis: the logged step, or the records' order of appearance (default: step)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        xlabel, groups = series(read_dllogger(args.log_file), args.x)
    except OSError as exc:
        return _fail(f"{args.log_file}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _fail(f"{args.log_file}: not a text log ({exc.reason})")
    except ValueError as exc:  # names the file and line already
        return _fail(str(exc))
    if not groups:
        return _fail(
            f"{args.log_file}: no LOG records with numeric loss, learning-rate or throughput values"
        )
    out_dir = args.out_dir if args.out_dir is not None else args.log_file.parent
    try:
        paths = plot(groups, xlabel, out_dir, args.log_file.name)
    except OSError as exc:
        return _fail(f"{out_dir}: cannot write plots: {exc.strerror or exc}")
    for path in paths:
        print(path)
    return 0


def _fail(message: str) -> int:
    print(f"plot_log: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
