"""Ordered, memory-bounded parallel map over chunks of a stream, for data preparation.

`map_chunks(make_fn, items, workers, chunk_size)` cuts `items` into lists of
`chunk_size` and yields `fn(chunk)` for each, in input order, `fn = make_fn()`. With
`workers > 1` every worker process builds its own `fn` once (a tokenizer or a sentence
splitter is costly to build and to send with each chunk), so `make_fn` must be picklable:
a module-level function or a `functools.partial` of one. At most `2 * workers` chunks are
in flight, so a multi-GB input never piles up in memory, and an exception raised while
reading `items` surfaces in the caller's thread.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_worker_fn: Callable[[list[Any]], Any] | None = None


def _init_worker(make_fn: Callable[[], Callable[[list[Any]], Any]]) -> None:
    global _worker_fn
    _worker_fn = make_fn()


def _call_worker_fn(chunk: list[Any]) -> Any:
    return _worker_fn(chunk)


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` items (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def map_chunks(
    make_fn: Callable[[], Callable[[list[Any]], Any]],
    items: Iterable[Any],
    workers: int,
    chunk_size: int,
) -> Iterator[Any]:
    """`fn(chunk)` for consecutive chunks of `items`, in input order (module docstring)."""
    chunks = chunked(items, chunk_size)
    if workers <= 1:
        yield from map(make_fn(), chunks)
        return
    with multiprocessing.Pool(workers, _init_worker, (make_fn,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_call_worker_fn, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
