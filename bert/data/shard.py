"""Sharding: segmented corpora -> N training (+ held-out eval) shards, documents never split.

Input and output share one format: one sentence per line, a blank line after each
document. Assignment is deterministic for a seed: the documents of all inputs are put in
a seeded random order; the first `round(eval_fraction * documents)` of that order are
held out for evaluation; each group is dealt out greedily, every document going to the
shard with the fewest bytes so far (ties: lowest index), so shards differ in size by at
most about one document. Within a shard, documents keep their input order.

    OUT/training/shard_00000.txt ...   num_shards files
    OUT/eval/shard_00000.txt ...       num_eval_shards files (when eval_fraction > 0)
    OUT/plan.json                      the inputs and settings the shards were made from

Each shard is written atomically and skipped when present, so deleting one and rerunning
rebuilds just that one, byte for byte. `plan.json` guards this: a rerun with other
inputs or settings is refused rather than mixed with shards of the earlier plan.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bert.data import DataError
from common.atomic import atomic_write
from common.parallel import map_chunks

log = logging.getLogger(__name__)

PLAN = "plan.json"


@dataclass
class Documents:
    """Where each document lies: input file index, byte offset and byte length, [D] each."""

    file: np.ndarray
    offset: np.ndarray
    length: np.ndarray


def scan_documents(paths: list[Path]) -> Documents:
    """Find the documents (runs of non-blank lines) of segmented files."""
    files, offsets, lengths = [], [], []
    for index, path in enumerate(paths):
        with open(path, "rb") as f:
            pos = 0
            start = None
            for line in f:
                if line.strip():
                    if start is None:
                        start = pos
                elif start is not None:
                    files.append(index)
                    offsets.append(start)
                    lengths.append(pos - start)
                    start = None
                pos += len(line)
            if start is not None:
                files.append(index)
                offsets.append(start)
                lengths.append(pos - start)
    return Documents(
        np.asarray(files, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(lengths, dtype=np.int64),
    )


def balance(docs: np.ndarray, sizes: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Deal `docs` (indices, in the order given) to `num_shards` groups, each document to
    the group with the fewest bytes so far; every group comes back sorted."""
    heap = [(0, shard) for shard in range(num_shards)]
    groups: list[list[int]] = [[] for _ in range(num_shards)]
    for doc in docs.tolist():
        size, shard = heapq.heappop(heap)
        groups[shard].append(doc)
        heapq.heappush(heap, (size + int(sizes[doc]), shard))
    return [np.sort(np.asarray(g, dtype=np.int64)) for g in groups]


def plan_shards(
    sizes: np.ndarray, num_shards: int, eval_fraction: float, num_eval_shards: int, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Document indices of each training shard and each eval shard (module docstring)."""
    order = np.random.default_rng(seed).permutation(len(sizes))
    n_eval = round(eval_fraction * len(sizes))
    return balance(order[n_eval:], sizes, num_shards), balance(
        order[:n_eval], sizes, num_eval_shards if n_eval else 0
    )


def _write_shard(task: tuple[str, list[str], np.ndarray]) -> str:
    """Copy the documents at `spans` ([K, 3]: file, offset, length) into one shard."""
    output, inputs, spans = task
    with contextlib.ExitStack() as stack:
        handles: dict[int, BinaryIO] = {}
        out = stack.enter_context(atomic_write(output, "wb"))
        for file, offset, length in spans.tolist():
            if file not in handles:
                handles[file] = stack.enter_context(open(inputs[file], "rb"))
            handles[file].seek(offset)
            text = handles[file].read(length)
            out.write(text if text.endswith(b"\n") else text + b"\n")
            out.write(b"\n")
    return output


def _make_writer() -> Callable[[list], list[str]]:
    return lambda tasks: [_write_shard(t) for t in tasks]


def shard_paths(out_dir: Path, split: str, count: int) -> list[Path]:
    return [out_dir / split / f"shard_{i:05d}.txt" for i in range(count)]


def _check_plan(out_dir: Path, plan: dict) -> None:
    """Record `plan`, or refuse when `out_dir` holds shards of another plan."""
    path = out_dir / PLAN
    if path.exists():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier != plan:
            raise DataError(
                f"{out_dir} holds shards made from other inputs or settings ({path}: "
                f"{earlier}, now: {plan}); delete the folder to shard again"
            )
        return
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=2, sort_keys=True)
        f.write("\n")


def shard_corpus(
    inputs: list[Path],
    out_dir: str | os.PathLike,
    num_shards: int,
    eval_fraction: float = 0.0,
    num_eval_shards: int = 1,
    seed: int = 12345,
    workers: int = 1,
) -> tuple[list[Path], list[Path]]:
    """Shard the segmented `inputs` into `out_dir`; returns (training shards, eval shards)."""
    if num_shards < 1 or num_eval_shards < 1:
        raise ValueError(f"need at least one shard, got {num_shards} and {num_eval_shards}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    out_dir = Path(out_dir)
    for path in inputs:
        if not path.is_file():
            raise DataError(f"segmented corpus {path} does not exist")
    plan = {
        "inputs": [{"name": p.name, "bytes": p.stat().st_size} for p in inputs],
        "num_shards": num_shards,
        "eval_fraction": eval_fraction,
        "num_eval_shards": num_eval_shards if eval_fraction else 0,
        "seed": seed,
    }
    _check_plan(out_dir, plan)
    training = shard_paths(out_dir, "training", num_shards)
    evaluation = shard_paths(out_dir, "eval", plan["num_eval_shards"])
    if all(p.exists() for p in training + evaluation):
        log.info("%s: all %d shards present", out_dir, len(training) + len(evaluation))
        return training, evaluation

    docs = scan_documents(inputs)
    train_groups, eval_groups = plan_shards(
        docs.length, num_shards, eval_fraction, plan["num_eval_shards"], seed
    )
    for split, groups in (("training", train_groups), ("eval", eval_groups)):
        if any(len(g) == 0 for g in groups):
            raise DataError(
                f"{len(docs.length)} documents in {', '.join(map(str, inputs))} are too few "
                f"for {len(groups)} {split} shards: ask for fewer shards"
            )
    spans = np.stack([docs.file, docs.offset, docs.length], axis=1)
    tasks = [
        (str(path), [str(p) for p in inputs], spans[group])
        for path, group in zip(training + evaluation, train_groups + eval_groups, strict=True)
        if not path.exists()
    ]
    for path in training + evaluation:
        path.parent.mkdir(parents=True, exist_ok=True)
    for written in map_chunks(_make_writer, tasks, min(workers, len(tasks)), 1):
        log.info("wrote %s", written[0])
    return training, evaluation
