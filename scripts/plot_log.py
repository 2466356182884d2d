"""Plot training curves from DLLogger logs against the optimizer step.

    python scripts/plot_log.py results/gnmt/log.json --out-dir plots/
    python scripts/plot_log.py runs/a/log.json runs/b/log.json --out-dir plots/  # compare

Writes into --out-dir (default: the log's folder; needed for several logs), each only
when some log has such values, and prints the paths:
    loss.png         training loss ("loss", "mlm_loss", "nll/tok", ...) per log interval
    lr.png           the learning rate "lr"
    throughput.png   items per second per log interval ("tokens/s", "sequences/s",
                     "samples/s"); in a second panel, averages over an epoch (GNMT's
                     "tok/s", "sent/s") or over the whole run (the final summary)
    validation.png   one panel per metric: BLEU, "valid_loss"/"valid_ppl", "val_loss",
                     F1, exact match, accuracy, ... whether logged during training,
                     at the end of an epoch or in the final summary
Several logs give one line per run (and per metric), named in the legend. Each title
names the run (its log's folder, or --title) and its settings from the PARAMETER
records: precision, global batch, world size, lr (a value that changed, as between
BERT's two phases, reads "a→b").

The x axis is the optimizer step: an int step, or the last element of a tuple step
(the recipes log (epoch, global step)). Records at an (epoch,) step are epoch
summaries: their values sit at the last step logged before them, where the epoch
ended. The () final summary sits at the run's last logged step.

A resumed run appends to the log: a new PARAMETER record, then steps the earlier run
may have logged already. The resumed run's values win: points after the step resumed
from ("resumed_from_step" when logged, else the first step logged after the new
PARAMETER record; also wherever the step goes back) are dropped from the earlier run,
and a step logged twice keeps its later value. A line the run did not finish writing
(a crash) is skipped with a warning naming the file and line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python scripts/plot_log.py`: find common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cli  # noqa: E402
from common.atomic import atomic_write  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.logging import PREFIX  # noqa: E402

# Panels, in drawing order. Each figure (file stem) holds one or more of them.
FIGURES = {
    "loss": ["loss"],
    "lr": ["lr"],
    "throughput": ["throughput", "average_throughput"],
    "validation": ["validation"],
}
YLABELS = {
    "loss": "training loss",
    "lr": "learning rate",
    "throughput": "per log interval (items/s)",
    "average_throughput": "epoch or run average (items/s)",
}

_THROUGHPUT = re.compile(
    r"/s$|/sec$|throughput|per_sec|(tok|tokens|seq|seqs|sequences|samples|sentences|items)_s$"
)
_LR = re.compile(r"(^|[^a-z])lr($|[^a-z])|learning_rate")
# Words that mark a held-out score (split on anything but letters and digits).
_VALIDATION_WORDS = {"val", "valid", "validation", "eval", "dev", "test", "bleu", "f1"}
_VALIDATION_WORDS |= {"exact", "accuracy", "acc", "mcc", "pearson", "spearman"}
# Words of bookkeeping values that are no metric, e.g. SQuAD's "best_f1_thresh".
_NOT_A_METRIC = {"thresh", "total", "time", "latency", "inference", "steps", "step"}


class LogError(UserError):
    """A log that cannot be plotted: missing, empty, not DLLogger, nothing to plot."""


def group_of(key: str) -> str | None:
    """What a logged value is: "throughput", "lr", "validation", "loss", or None."""
    key = key.lower()
    words = set(re.split(r"[^a-z0-9]+", key))
    if words & _NOT_A_METRIC or "loss_scale" in key:
        return None
    if _THROUGHPUT.search(key):
        return "throughput"
    if _LR.search(key):
        return "lr"
    if words & _VALIDATION_WORDS:
        return "validation"
    if "loss" in key or "nll" in words:
        return "loss"
    return None


# --------------------------------------------------------------------------- reading


def read_records(path: Path, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """The DLLogger records of `path`, in order. Lines without the "DLLL " prefix are
    skipped; a malformed or half-written record too, with a warning. Raises LogError
    for a file that cannot be read or holds no DLLogger record."""
    records, prefixed = [], 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.startswith(PREFIX):
                    continue
                prefixed += 1
                record, problem = _parse_line(line)
                if problem:
                    warn(f"{path}:{lineno}: {problem}")
                if record is not None:
                    records.append(record)
    except FileNotFoundError:
        raise LogError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LogError(f"{path}: is a folder, not a log file") from None
    except OSError as exc:
        raise LogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LogError(f"{path}: not a DLLogger log (not UTF-8 text: {exc.reason})") from None
    if not records:
        if prefixed:
            raise LogError(f"{path}: no complete DLLogger record")
        empty = path.stat().st_size == 0
        raise LogError(
            f"{path}: empty file"
            if empty
            else f"{path}: not a DLLogger log (no line starts with {PREFIX.strip()!r})"
        )
    return records


def _parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(record or None, warning or None) for a line that starts with the prefix.

    A crash mid-write leaves a line without its newline; a resumed run then appends its
    first record to that same line, so a broken line may still end in a whole record."""
    record = _json_object(line[len(PREFIX) :])
    if record is not None:
        return record, None
    if not line.endswith("\n"):
        return None, "half-written last line skipped"
    cut = line.rfind(PREFIX, 1)
    record = _json_object(line[cut + len(PREFIX) :]) if cut > 0 else None
    if record is not None:
        return record, "half-written record skipped (the record after it on the line is kept)"
    return None, "malformed DLLogger record skipped"


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------- records -> series


@dataclass
class Run:
    """One log, normalised: per panel, label -> (steps, values) sorted by step."""

    name: str
    settings: list[dict[str, Any]] = field(default_factory=list)  # merged PARAMETER records
    resumed_at: list[float] = field(default_factory=list)
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = field(default_factory=dict)

    def settings_text(self) -> str:
        """The settings line, e.g. "precision fp16 · global batch 1024 · world size 8 · lr 0.002"."""
        parts = []
        for name, pick in SETTINGS:
            values = []
            for params in self.settings:
                value = pick(params)
                if value is not None and value not in values:
                    values.append(value)
            if values:
                parts.append(f"{name} " + "→".join(map(_format_value, values)))
        if self.resumed_at:
            parts.append("resumed at step " + ", ".join(map(_format_value, self.resumed_at)))
        return " · ".join(parts)


@dataclass
class _Point:
    x: float
    panel: str
    label: str
    y: float
    kind: str  # of the record: "interval", "epoch" or "summary"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind_and_step(step: Any) -> tuple[str, float | None]:
    """("interval", global step), ("epoch", None), ("summary", None), or ("other", None)."""
    if _is_number(step):
        return "interval", step
    if isinstance(step, list) and step and all(map(_is_number, step)):
        return ("epoch", None) if len(step) == 1 else ("interval", step[-1])
    if step == []:
        return "summary", None
    return "other", None  # "PARAMETER", TXL eval's ("valid",), ...


def _panel(key: str, kind: str) -> str | None:
    """The panel of a value: summaries give averages and scores, not curves."""
    group = group_of(key)
    if kind == "interval":
        return group
    if group == "throughput":
        return "average_throughput"
    if group == "validation" or (kind == "summary" and group == "loss" and key != "final_loss"):
        return "validation"  # a summary's "masked_lm_loss" is an evaluation's
    return None


def _label(key: str, kind: str, panel: str) -> str:
    if panel == "average_throughput":
        return f"{key} (epoch average)" if kind == "epoch" else f"{key} (run average)"
    return key


def normalise(
    records: Iterable[dict[str, Any]], name: str, warn: Callable[[str], None] | None = None
) -> Run:
    """The run's settings and per-metric series against the optimizer step, with a
    resumed run's values replacing the earlier run's (module docstring)."""
    reader = _Normaliser(name, warn or (lambda message: None))
    for record in records:
        data = record.get("data")
        if record.get("type") == "LOG" and isinstance(data, dict):
            reader.add(record.get("step"), data)
    return reader.finish()


class _Normaliser:
    """Walks a log's LOG records in order, keeping what a resume changes."""

    def __init__(self, name: str, warn: Callable[[str], None]) -> None:
        self.run = Run(name)
        self.warn = warn
        self.points: list[_Point] = []
        self.last_step: float | None = None  # step of the latest training line
        self.new_settings = True  # the next PARAMETER record starts a new settings block
        self.restarted = False  # a PARAMETER record came after training lines
        self.step_keys: set[str] = set()  # names logged at steps or epoch ends

    def add(self, step: Any, data: dict[str, Any]) -> None:
        if step == "PARAMETER":
            self.parameter(data)
            return
        self.new_settings = True
        kind, x = _kind_and_step(step)
        if kind == "interval":
            self.training_line(x)
        elif kind == "epoch":
            if self.last_step is None:
                self.warn(f"epoch {step[0]} summary before any logged step: not plotted")
                return
            x = self.last_step  # where the epoch ended
        elif kind == "summary":
            x = self.last_step or 0  # no step logged: an evaluation-only run
        else:
            return
        if kind != "summary":
            self.step_keys.update(data)
        self.points += _points(x, kind, data)

    def parameter(self, data: dict[str, Any]) -> None:
        """Settings; after training lines, the start of a resumed run (or a new phase)."""
        if self.new_settings:
            self.run.settings.append({})
            self.new_settings = False
        self.run.settings[-1].update(data)
        self.restarted = self.last_step is not None
        resumed = data.get("resumed_from_step")
        if _is_number(resumed):  # the earlier run's points after it are redone
            self.points = [p for p in self.points if p.x <= resumed]
            self.last_step = resumed
            self.run.resumed_at.append(resumed)
            self.restarted = False

    def training_line(self, x: float) -> None:
        """A line at step x: the first after a restart, or one going back, drops the
        earlier run's points from x on (a new phase going on forward drops none)."""
        last = self.last_step
        if self.restarted or (last is not None and x < last):
            if last is not None and x <= last and x not in self.run.resumed_at:
                self.run.resumed_at.append(x)
            self.points = [p for p in self.points if p.x < x]
            self.restarted = False
        self.last_step = x

    def finish(self) -> Run:
        # TXL's summary "valid_loss" is the best of the curve: no point of its own.
        kept = [p for p in self.points if p.kind != "summary" or p.label not in self.step_keys]
        self.run.curves = _curves(kept)
        return self.run


def _points(x: float, kind: str, data: dict[str, Any]) -> list[_Point]:
    points = []
    for key, value in data.items():
        panel = _panel(key, kind) if _is_number(value) else None
        if panel is not None:
            points.append(_Point(x, panel, _label(key, kind, panel), float(value), kind))
    return points


def _curves(points: list[_Point]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Per panel, label -> (xs, ys) sorted by x; a step given twice keeps its last value."""
    by_step: dict[str, dict[str, dict[float, float]]] = {}
    for p in points:
        by_step.setdefault(p.panel, {}).setdefault(p.label, {})[p.x] = p.y
    return {
        panel: {
            label: ([x for x, _ in sorted(ys.items())], [y for _, y in sorted(ys.items())])
            for label, ys in labels.items()
        }
        for panel, labels in by_step.items()
    }


# The settings a title shows, each picked from the merged PARAMETER records of a start.
def _precision(p: dict[str, Any]) -> Any:
    return p.get("precision") or p.get("math")


def _global_batch(p: dict[str, Any]) -> Any:
    """Sequences (or sentences, streams, samples) per optimizer step, all processes."""
    for key in ("global_batch_size", "global_batch", "train_global_batch_size"):
        if _is_number(p.get(key)):
            return p[key]  # BERT pre-training, BERT fine-tuning, GNMT when given
    world = p.get("world_size") if _is_number(p.get("world_size")) else 1
    if _is_number(p.get("batch_size")):
        if "tgt_len" in p:
            return p["batch_size"]  # Transformer-XL: --batch_size is the global batch
        if _is_number(p.get("accumulation")):  # toolkit_check: per process, micro-batch
            return p["batch_size"] * p["accumulation"] * world
    if _is_number(p.get("train_batch_size")):
        return p["train_batch_size"] * world  # GNMT's default: one micro-batch per process
    return None


def _lr(p: dict[str, Any]) -> Any:
    return next((p[k] for k in ("lr", "learning_rate") if _is_number(p.get(k))), None)


SETTINGS = [
    ("precision", _precision),
    ("global batch", _global_batch),
    ("world size", lambda p: p.get("world_size")),
    ("lr", _lr),
    ("phase", lambda p: p.get("phase")),
]


def run_names(paths: list[Path]) -> list[str]:
    """Each log's folder name; where two logs share one, their paths."""
    names = [path.resolve().parent.name or str(path) for path in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def figure_title(runs: list[Run], title: str | None = None) -> str:
    """The run's name (or `title`) and its settings; for several runs, a line for each."""
    if len(runs) == 1:
        lines = [title or runs[0].name, runs[0].settings_text()]
    else:
        lines = [title or " vs ".join(r.name for r in runs)]
        lines += [f"{r.name}: {r.settings_text()}" for r in runs]
    return "\n".join(line for line in lines if line)


def load_run(path: Path, name: str, warn: Callable[[str], None]) -> Run:
    """Read and normalise one log; LogError when it holds nothing to plot."""
    run = normalise(read_records(path, warn), name, lambda m: warn(f"{path}: {m}"))
    if not run.curves:
        raise LogError(
            f"{path}: no loss, learning rate, throughput or validation values at a training "
            "step or in a summary"
        )
    return run


# ---------------------------------------------------------------------------- drawing


def plot(runs: list[Run], out_dir: Path, title: str | None = None) -> list[Path]:
    """One PNG per figure that some run has data for, in `out_dir`; returns the paths."""
    # Imported here: reading and normalising a log needs no matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    for stem, panels in FIGURES.items():
        axes_specs = _axes_specs(runs, panels)
        if not axes_specs:
            continue
        cols = 2 if len(axes_specs) > 2 else 1
        rows = -(-len(axes_specs) // cols)
        fig = Figure(figsize=(8 * cols, 1.2 + 3.6 * rows), dpi=100)
        FigureCanvasAgg(fig)  # its own Agg canvas: no pyplot, no global backend to switch
        for i, (ylabel, lines) in enumerate(axes_specs):
            _draw_axes(fig.add_subplot(rows, cols, i + 1), ylabel, lines, runs)
        fig.suptitle(figure_title(runs, title), fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def _axes_specs(runs: list[Run], panels: list[str]) -> list[tuple[str, list[tuple]]]:
    """(y label, [(run index, label, xs, ys)]) of each axes to draw; the validation
    panel gets one axes per metric, its scales differ (BLEU, perplexity, accuracy)."""
    specs = []
    for panel in panels:
        lines = [
            (i, label, xs, ys)
            for i, run in enumerate(runs)
            for label, (xs, ys) in run.curves.get(panel, {}).items()
        ]
        if panel != "validation":
            if lines:
                specs.append((YLABELS[panel], lines))
            continue
        for label in dict.fromkeys(line[1] for line in lines):
            specs.append((label, [line for line in lines if line[1] == label]))
    return specs


def _draw_axes(ax, ylabel: str, lines: list[tuple], runs: list[Run]) -> None:
    """One line per (run, label): colour by run when comparing runs, else by label."""
    styles = ["-", "--", ":", "-."]
    labels = list(dict.fromkeys(line[1] for line in lines))
    for n, (i, label, xs, ys) in enumerate(lines):
        if len(runs) > 1:
            color, style = f"C{i % 10}", styles[labels.index(label) % len(styles)]
            name = runs[i].name if label == ylabel else f"{runs[i].name}: {label}"
        else:
            color, style, name = f"C{n % 10}", "-", label
        size = 3 if len(xs) > 1 else 6  # a lone point (a final score) must show
        ax.plot(xs, ys, style, color=color, marker="o", markersize=size, label=name)
    ax.set(xlabel="optimizer step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path: Path) -> None:
    """Save as PNG atomically: a reader never sees a half-written image."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


# ------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python scripts/plot_log.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="DLLogger log (DLLL lines)")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder for the PNGs (default: the log's folder; needed for several logs)",
    )
    p.add_argument("--title", default=None, help="figure title (default: the log's folder name)")
    args = p.parse_args(argv)
    if args.out_dir is None and len(args.logs) > 1:
        p.error("--out-dir is needed to compare several logs")
    return args


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: plot_logs(parse_args(argv)))


def plot_logs(args: argparse.Namespace) -> int:
    names = run_names(args.logs)
    runs = [load_run(path, name, _warn) for path, name in zip(args.logs, names, strict=True)]
    out_dir = args.out_dir if args.out_dir is not None else args.logs[0].parent
    for path in plot(runs, out_dir, args.title):
        print(path)
    return 0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
