"""Throughput and latency measurement, and the ways benchmark results are reported.

    meter = ThroughputMeter(warmup_steps=10, device=env.device)
    for batch in loader:
        meter.start()                      # optional: excludes time spent between steps
        train_step(batch)
        meter.update(batch_tokens)         # syncs CUDA, then records the step
    print(meter.throughput)                # tokens/s over the steps after warm-up

    rec = LatencyRecorder(warmup=5, device=env.device)
    for batch in data:
        with rec.measure():
            model(batch)
    results = rec.summary(items_per_call=batch_size)   # seconds; throughput in items/s
    write_json("results/bench.json", results)
    log_results(logger, results)

CUDA kernels run asynchronously, so with a cuda device both classes call
`torch.cuda.synchronize` before reading the clock; otherwise a step would be timed
when its kernels were queued, not when they finished. The clock is a parameter so
tests can drive it.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write
from common.logging import Logger

Clock = Callable[[], float]


def _cuda_device(device: torch.device | str | None) -> torch.device | None:
    if device is None:
        return None
    device = torch.device(device)
    return device if device.type == "cuda" else None


class ThroughputMeter:
    """Items (tokens, sequences) per second over timed steps, warm-up steps excluded.

    A step lasts from `start()`, or else from the previous `update()` (for the first
    step: from construction or `reset()`), to `update()`. The first `warmup_steps`
    steps are not counted: they include compilation, cuDNN autotuning and allocator
    growth, which later steps do not pay.
    """

    def __init__(
        self,
        warmup_steps: int = 0,
        device: torch.device | str | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self._cuda = _cuda_device(device)
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget all steps; the next `warmup_steps` steps are warm-up again."""
        self._seen = 0  # steps including warm-up
        self._steps = 0
        self._items = 0.0
        self._elapsed = 0.0
        self._mark = self._now()

    def start(self) -> None:
        """Mark the beginning of a step."""
        self._mark = self._now()

    def update(self, n_items: float) -> None:
        """End a step that processed `n_items` items."""
        now = self._now()
        self._seen += 1
        if self._seen > self.warmup_steps:
            self._steps += 1
            self._items += n_items
            self._elapsed += now - self._mark
        self._mark = now

    @property
    def throughput(self) -> float:
        """Items per second over the timed steps (0.0 before any)."""
        return self._items / self._elapsed if self._elapsed > 0 else 0.0

    @property
    def elapsed(self) -> float:
        """Seconds spent in timed steps."""
        return self._elapsed

    @property
    def items(self) -> float:
        return self._items

    @property
    def steps(self) -> int:
        """Timed steps (warm-up excluded)."""
        return self._steps

    def _now(self) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return self._clock()


class LatencyRecorder:
    """Per-call latencies in seconds; the first `warmup` calls are not kept."""

    def __init__(
        self,
        warmup: int = 0,
        device: torch.device | str | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup = warmup
        self._cuda = _cuda_device(device)
        self._clock = clock
        self._calls = 0
        self._latencies: list[float] = []

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Time the `with` block; a block that raises is not recorded."""
        start = self._now()
        yield
        self.add(self._now() - start)

    def add(self, seconds: float) -> None:
        """Record one call's latency (counted against warm-up like measured ones)."""
        self._calls += 1
        if self._calls > self.warmup:
            self._latencies.append(float(seconds))

    @property
    def latencies(self) -> list[float]:
        """Recorded latencies after warm-up, in call order (a copy)."""
        return list(self._latencies)

    def summary(self, items_per_call: float | None = None) -> dict[str, float]:
        """{"count", "avg", "p50", "p90", "p95", "p99", "p100"} in seconds, plus
        "throughput" (items/s: all items over all recorded time) given `items_per_call`."""
        if not self._latencies:
            raise ValueError(f"no latencies recorded after {self.warmup} warm-up calls")
        total = math.fsum(self._latencies)
        result: dict[str, float] = {
            "count": len(self._latencies),
            "avg": total / len(self._latencies),
            **percentiles(self._latencies),
        }
        if items_per_call is not None:
            result["throughput"] = items_per_call * len(self._latencies) / total
        return result

    def _now(self) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return self._clock()


def percentiles(
    values: Iterable[float], ps: Sequence[float] = (50, 90, 95, 99, 100)
) -> dict[str, float]:
    """Percentiles of `values` as {"p50": ..., "p99.9": ...}, by linear interpolation
    between the sorted values (numpy.percentile's default, "linear"):

        x = sorted(values), r = p / 100 * (n - 1), i = floor(r)
        p-th percentile = x[i] + (x[i + 1] - x[i]) * (r - i)

    so p0 is the minimum, p100 the maximum and p50 the median.
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("percentiles of no values")
    result = {}
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside [0, 100]")
        rank = p / 100 * (len(xs) - 1)
        lo = math.floor(rank)
        hi = min(lo + 1, len(xs) - 1)
        t, gap = rank - lo, xs[hi] - xs[lo]
        # Interpolate from the nearer neighbour, as numpy does: results match its bits.
        result[f"p{p:g}"] = xs[lo] + gap * t if t < 0.5 else xs[hi] - gap * (1 - t)
    return result


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        return format(value, floatfmt)
    return str(value).replace("|", r"\|")  # a bare "|" would split the cell


def _is_numeric(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def markdown_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = ".2f"
) -> str:
    """A GitHub markdown table of `rows` (columns default to the first row's keys).

    Floats use `floatfmt`, missing values are empty cells, and columns whose values
    are all numbers are right-aligned. Cells are padded so the text reads as a table.
    """
    if columns is None:
        if not rows:
            raise ValueError("markdown_table needs rows or columns")
        columns = list(rows[0])
    body = [[_cell(row.get(col), floatfmt) for col in columns] for row in rows]
    numeric = []
    for col in columns:
        values = [row[col] for row in rows if row.get(col) is not None]
        numeric.append(bool(values) and all(map(_is_numeric, values)))
    widths = [max([3, len(col), *(len(r[i]) for r in body)]) for i, col in enumerate(columns)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w - 1) + (":" if right else "-") for w, right in zip(widths, numeric, strict=True)
    ]
    return "\n".join([line(columns), line(rule), *(line(r) for r in body)]) + "\n"


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def to_milliseconds(row: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """A result row for a table: keys starting with one of `prefixes` hold seconds and
    become "<rest> (ms)" in milliseconds; other keys are kept."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        else:
            out[f"{key[len(prefix) :]} (ms)"] = value * 1e3
    return out


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically: a temporary file in the same folder,
    fsync, then rename over `path`, so readers never see a half-written file."""
    # Serialise first: an object JSON cannot write fails before any file is touched.
    text = json.dumps(obj, indent=2) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


# Units of the keys that summary() and the recipes' benchmarks report.
_SECONDS = re.compile(r"(^|_)(avg|p\d+(\.\d+)?|latency|elapsed|time)$")


def _metadata_for(key: str) -> dict[str, str] | None:
    if _SECONDS.search(key):
        return {"unit": "s", "format": ":.6f"}  # microseconds show
    if key == "throughput":
        return {"unit": "items/s", "format": ":.1f"}
    if key.endswith("/s"):  # "tokens/s", "sequences/s": the key names its unit
        return {"unit": key, "format": ":.1f"}
    return None


def log_results(logger: Logger, results: dict[str, Any], step: Any = ()) -> None:
    """Write `results` as one DLLogger LOG line (step () marks a final summary, as in
    DLLogger), preceded by METADATA lines giving the units of the keys known here."""
    for key in results:
        meta = _metadata_for(key)
        if meta is not None:
            logger.metadata(key, meta)
    logger.log(step, results)
