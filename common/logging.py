"""Run logs in NVIDIA DLLogger's JSON stream format, plus console lines, tqdm and TensorBoard.

    logger = Logger("results/run/log.json", tensorboard_dir="results/run/tb")
    logger.log("PARAMETER", {"lr": 6e-3, "batch_size": 64})    # run parameters
    logger.metadata("tokens/s", {"unit": "tokens/s", "format": ":.1f"})
    logger.log(step, {"loss": loss, "lr": lr, "tokens/s": tps})  # one line per call
    logger.log((), {"final_loss": loss})                         # () marks a final summary
    logger.close()

Each call appends one line to the log file, exactly as DLLogger's JSONStreamBackend
writes it, so NVIDIA's log tooling reads our logs and `read_dllogger` reads theirs:

    DLLL {"timestamp": "1795428000.123456", "datetime": "2026-11-23 10:00:00.123456",
          "elapsedtime": "12.5", "type": "LOG", "step": [1, 20], "data": {"loss": 2.3}}

METADATA lines carry `metric` and `metadata` in place of `step` and `data`. Steps are
an int, a tuple (written as a JSON list, e.g. [epoch, iteration]) or a string such
as "PARAMETER". Tensors and numpy scalars become Python numbers; anything JSON does
not know becomes its `str`. Non-finite floats are written as NaN/Infinity, as
Python's json module (and DLLogger) does, so a diverged loss is still logged.

Only rank 0 writes (file, stdout, TensorBoard) unless `all_ranks=True`; then rank N
writes to `log.rankN.json` (rank 0 keeps `log.json`), TensorBoard events of rank N go
to `<tensorboard_dir>/rankN`, and console lines start with `[rank N]`.

TensorBoard gets the numeric values of LOG lines whose step is a position in
training: an int step as it is; for a tuple step its last element, which is the
global step under the recipes' `(epoch, global_step)` convention. "PARAMETER", the
empty summary step and other string steps are not plotted.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from common import distributed

PREFIX = "DLLL "

# The missing-TensorBoard warning is printed once per process, not once per Logger.
_warned_no_tensorboard = False


def _default_rank() -> int:
    if distributed.is_initialized():
        return distributed.get_rank()
    # Before init_process_group (or without one) the launcher's variables say the rank.
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _holds_one_value(value: Any) -> bool:
    """One-element tensors and arrays and numpy scalars: `.item()` gives their value."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    if isinstance(value, np.ndarray):
        return value.size == 1
    return isinstance(value, np.generic)


def jsonable(value: Any) -> Any:
    """`value` as JSON-ready Python data: one-element tensors/arrays and numpy scalars
    become numbers, tuples become lists, unknown objects their `str`."""
    if _holds_one_value(value):
        return jsonable(value.item())
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format_number(value: Any) -> str:
    """Ints as ints. Floats: 4 significant digits in scientific notation where fixed
    point would hide them (below 0.01, e.g. learning rates) or run long (1e9 and up);
    one decimal from 1000 up (throughputs: more digits would be noise); else 4 decimals."""
    if not isinstance(value, float):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e9):
        return f"{value:.3e}"
    if abs(value) >= 1e3:
        return f"{value:.1f}"
    return f"{value:.4f}"


def _format_step(step: Any) -> str:
    """DLLogger's step conventions in words: (epoch,), (epoch, iteration), () for a
    final summary, strings such as "PARAMETER" as they are."""
    if isinstance(step, list):
        if not step:
            return "summary"
        if len(step) == 1:
            return f"epoch {step[0]}"
        if len(step) == 2:
            return f"epoch {step[0]} iter {step[1]}"
        return "step " + "/".join(map(str, step))
    if isinstance(step, str):
        return step
    return f"step {step}"


def _rank_path(path: Path, rank: int) -> Path:
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _open_tensorboard(directory: Path) -> Any:
    """A SummaryWriter for `directory`, or None (with a warning) without TensorBoard."""
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        if not _warned_no_tensorboard:
            print(f"warning: TensorBoard logging is off: {exc}", file=sys.stderr)
            _warned_no_tensorboard = True
        return None
    return SummaryWriter(log_dir=str(directory))


class Logger:
    """Writes DLLogger lines, console lines and TensorBoard scalars (module docstring)."""

    def __init__(
        self,
        log_file: str | os.PathLike | None = None,
        *,
        rank: int | None = None,
        all_ranks: bool = False,
        stdout: bool = True,
        tensorboard_dir: str | os.PathLike | None = None,
        append: bool = True,
    ) -> None:
        self.rank = _default_rank() if rank is None else rank
        self.enabled = all_ranks or self.rank == 0  # whether this process writes anything
        self.path: Path | None = None
        self._prefix = f"[rank {self.rank}] " if all_ranks else ""
        self._stdout = stdout and self.enabled
        self._metadata: dict[str, dict[str, Any]] = {}
        self._start = time.perf_counter()
        self._file = None
        self._writer = None
        self._closed = False
        if not self.enabled:
            return
        if log_file is not None:
            self.path = _rank_path(Path(log_file), self.rank)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: each record reaches the OS as it is written, so a crash
            # loses nothing already logged. Append, so a resumed run continues its log.
            self._file = open(  # noqa: SIM115 (kept open until close())
                self.path, "a" if append else "w", buffering=1, encoding="utf-8"
            )
        if tensorboard_dir is not None:
            tb_dir = Path(tensorboard_dir)
            self._writer = _open_tensorboard(
                tb_dir if self.rank == 0 else tb_dir / f"rank{self.rank}"
            )

    def log(self, step: int | tuple | list | str, data: dict[str, Any]) -> None:
        """One LOG record: `step` is an int, a tuple such as (epoch, iteration), or a
        string such as "PARAMETER"; `data` maps names to numbers, strings, tensors..."""
        self._check_open()
        if not self.enabled:
            return  # also spares other ranks the GPU syncs of tensor.item()
        step = jsonable(step)
        data = {str(k): jsonable(v) for k, v in data.items()}
        self._write_record("LOG", step=step, data=data)
        if self._stdout:
            # tqdm.write prints above any active progress bar instead of through it.
            tqdm.write(self._prefix + self._human_line(step, data), file=sys.stdout)
            sys.stdout.flush()  # under SLURM stdout is a block-buffered file
        if self._writer is not None:
            self._add_scalars(step, data)

    def metadata(self, metric: str, meta: dict[str, Any]) -> None:
        """Describe `metric`, e.g. {"unit": "tokens/s", "format": ":.1f"}; the console
        lines use "format" and "unit" from then on. Written to the file, not printed."""
        self._check_open()
        self._metadata[metric] = dict(meta)
        if self.enabled:
            self._write_record("METADATA", metric=metric, metadata=jsonable(meta))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the file and TensorBoard writer; closing twice is harmless."""
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
        self._file = self._writer = None
        self._closed = True

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("log call on a closed Logger")

    def _write_record(self, kind: str, **fields: Any) -> None:
        if self._file is None:
            return
        now = datetime.datetime.now()
        record = {
            "timestamp": str(now.timestamp()),
            "datetime": str(now),
            "elapsedtime": str(time.perf_counter() - self._start),
            "type": kind,
            **fields,
        }
        self._file.write(PREFIX + json.dumps(record) + "\n")

    def _human_line(self, step: Any, data: dict[str, Any]) -> str:
        parts = [_format_step(step)]
        parts += [f"{key} {self._format_value(key, value)}" for key, value in data.items()]
        return " | ".join(parts)

    def _format_value(self, key: str, value: Any) -> str:
        meta = self._metadata.get(key, {})
        fmt = meta.get("format")
        try:  # DLLogger's formats are written for "{" + fmt + "}", e.g. ":.1f"
            text = format(value, str(fmt).removeprefix(":")) if fmt else _format_number(value)
        except (TypeError, ValueError):  # a format that does not fit this value
            text = _format_number(value)
        unit = meta.get("unit")
        if unit and not key.endswith(unit):  # "tokens/s" needs no " tokens/s" after it
            text += f" {unit}"
        return text

    def _add_scalars(self, step: Any, data: dict[str, Any]) -> None:
        if _is_number(step):
            global_step = step
        elif isinstance(step, list) and step and _is_number(step[-1]):
            global_step = step[-1]
        else:
            return
        for key, value in data.items():
            if _is_number(value):
                self._writer.add_scalar(key, value, global_step)


class _NoBar:
    """Stands in for a tqdm bar where none is shown, so callers need no `if`."""

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass


class _LineProgress(_NoBar):
    """Progress for a log file: every `interval` seconds, and at the end of work that
    took that long, one line `desc: done/total (pct) | rate unit/s | time left` on
    stderr; no bar redraws."""

    def __init__(
        self, iterable: Iterable | None, total: float | None, desc: str | None,
        unit: str = "it", interval: float = 30.0, initial: float = 0, **_: Any,
    ) -> None:  # fmt: skip
        self.iterable, self.desc, self.unit = iterable, desc or "progress", unit.strip()
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.interval = total, initial, interval
        self._start = self._last = time.monotonic()
        self._initial = initial
        self._said_at: float | None = None

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._say(now)

    def close(self) -> None:
        """The last line, when the work was long enough to have a line at all."""
        now = time.monotonic()
        long_enough = self._said_at is not None or now - self._start >= self.interval
        if long_enough and self._said_at != self.n:
            self._say(now)

    def _say(self, now: float) -> None:
        self._said_at = self.n
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._initial) / elapsed
        done = f"{self.n:g}"
        left = ""
        if self.total:
            done += f"/{self.total:g} ({100 * self.n / self.total:.1f}%)"
            if rate > 0 and self.n < self.total:
                left = f" | {datetime.timedelta(seconds=round((self.total - self.n) / rate))} left"
        print(f"{self.desc}: {done} | {rate:.1f} {self.unit}/s{left}", file=sys.stderr, flush=True)


PROGRESS_INTERVAL_ENV = "LM_RECIPES_PROGRESS_SECONDS"  # seconds between log-file lines


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    enabled: bool = True,
    **kwargs: Any,
) -> Any:
    """Progress of long work on rank 0: a tqdm bar over `iterable` (or a manual one of
    `total`) when stderr is a terminal; otherwise, as in a batch job's log file, a line
    with the rate, done/total and the time left every 30 s ($LM_RECIPES_PROGRESS_SECONDS)
    and at the end. With `enabled=False`, or on other ranks: `iterable` itself, or an
    object whose update(), set_postfix() and close() do nothing."""
    if not enabled or _default_rank() != 0:
        return iterable if iterable is not None else _NoBar()
    if getattr(sys.stderr, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, **kwargs)
    interval = float(os.environ.get(PROGRESS_INTERVAL_ENV, "30"))
    return _LineProgress(iterable, total, desc, interval=interval, **kwargs)


def read_dllogger(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a DLLogger JSON stream file, in order; lines without the "DLLL "
    prefix are skipped. Malformed JSON after the prefix raises ValueError naming the
    file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.startswith(PREFIX):
                continue
            try:
                record = json.loads(line[len(PREFIX) :])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: malformed DLLogger record: {exc}") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: DLLogger record is not a JSON object")
            records.append(record)
    return records
