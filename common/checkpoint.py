"""Checkpoints that survive crashes, and exact resume of a training run.

A checkpoint is a dict written with `torch.save` holding only tensors and plain
Python data, so it loads with `torch.load(weights_only=True)`:

    format, version          marks the file as ours (anything else is "foreign")
    model                    state dict without `module.` / `_orig_mod.` prefixes
    optimizer, scheduler, precision
    rng                      per-rank RNG states (python, numpy, torch, cuda)
    data_position            whatever the caller needs to continue its data stream
    step, extra              the caller's bookkeeping

Files in a folder, for prefix "checkpoint" and suffix ".pt":
    checkpoint_step00001000.pt ...   the last `keep_last` saves
    checkpoint_last.pt               the newest save
    checkpoint_best.pt               the save marked best
Every file appears by an atomic rename after fsync, so a kill at any moment leaves
the previous files intact. `_last` and `_best` are hard links to a step file when the
filesystem allows (no second write of a large file), copies otherwise.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import distributed
from common.atomic import atomic_write, replace_durably, temp_path
from common.errors import UserError

FORMAT = "lm-recipes-checkpoint"
VERSION = 1
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, truncated, foreign or does not fit the model."""


class ForeignCheckpointError(CheckpointError):
    """A readable torch file that is not a checkpoint of this project (a published model,
    say), which some callers load another way."""


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    try:
        with atomic_write(path) as f:
            torch.save(obj, f)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; "
            "earlier checkpoints are untouched"
        ) from exc
    return path


def _link_atomic(src: Path, dst: Path) -> None:
    """Make `dst` name the same content as `src` (hard link, else copy), atomically."""
    tmp = temp_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        replace_durably(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {dst}: {exc.strerror or exc}") from exc


def _unpickling_reason(exc: Exception) -> str:
    """The one useful sentence of torch's long weights_only error."""
    match = re.search(r"WeightsUnpickler error: (.*?\.)(?: |$)", str(exc), re.MULTILINE)
    return match.group(1) if match else str(exc).strip().splitlines()[-1]


def read_torch_file(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    safe_globals: Sequence[Any] = (),
    kind: str = "checkpoint of this project",
    allowed: str = "tensors and plain data",
    require_archive: bool = True,
) -> Any:
    """`torch.load(weights_only=True)` of a file, with `safe_globals` allowed; a
    CheckpointError naming the file for a missing, empty, truncated, corrupt or
    foreign one. `require_archive=False` also accepts torch's legacy (non-zip) format,
    as older published checkpoints use."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if require_archive and not zipped:
        raise ForeignCheckpointError(f"{path} is not a {kind} (not a torch.save archive)")
    if zipped and not zipfile.is_zipfile(path):  # the zip directory sits at the end
        raise CheckpointError(f"checkpoint {path} is truncated (its archive directory is missing)")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            # Memory-mapped: a rank that reads only its own part of a large checkpoint
            # (per_rank) does not load the other ranks' parts.
            return torch.load(path, map_location=map_location, weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        raise ForeignCheckpointError(
            f"{path} is not a {kind} (it holds objects beyond {allowed}): {_unpickling_reason(exc)}"
        ) from exc
    except Exception as exc:  # torch raises many types for damaged or foreign files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch checkpoint "
            f"({type(exc).__name__}: {detail})"
        ) from exc


def read_torch_dict(path: str | os.PathLike, map_location: Any = "cpu", **kwargs: Any) -> dict:
    """`read_torch_file` for files that must hold a dict at the top (ours and the
    published checkpoints the models load); a CheckpointError names the file otherwise."""
    state = read_torch_file(path, map_location, **kwargs)
    if not isinstance(state, dict):
        kind = kwargs.get("kind", "checkpoint of this project")
        raise CheckpointError(f"{path} is not a {kind} (it holds a {type(state).__name__})")
    return state


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load and validate one of our checkpoints; clear errors for anything else."""
    state = read_torch_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ForeignCheckpointError(
            f"{path} is not a checkpoint of this project (top level: {keys})"
        )
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state['version']}, newer than this code ({VERSION})"
        )
    return state


def strip_prefixes(
    state_dict: dict[str, Any], prefixes: tuple[str, ...] = PREFIXES
) -> dict[str, Any]:
    """Remove DDP's `module.` and torch.compile's `_orig_mod.` from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _state_of(obj: Any) -> Any:
    return obj.state_dict() if obj is not None else None


def _on_cpu(obj: Any) -> Any:
    """`obj` with every tensor in it moved to the CPU (lists, tuples and dicts kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def per_rank_state(state: dict[str, Any], rank: int | None = None) -> dict[str, Any] | None:
    """This rank's part of a checkpoint (`per_rank` of `capture_training_state`), or None
    when the checkpoint has none or was written by another number of processes."""
    parts = state.get("per_rank")
    if not parts or len(parts) != distributed.get_world_size():
        return None
    return parts[distributed.get_rank() if rank is None else rank]


def capture_training_state(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    precision: Any = None,
    step: int = 0,
    data_position: Any = None,
    extra: dict[str, Any] | None = None,
    per_rank: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to continue a run exactly. Collective: call on every rank.

    `per_rank` is state that differs between ranks (Transformer-XL's memories): each
    rank's, moved to the CPU, is gathered on rank 0 (the rank that writes) into the same
    file, so it is committed atomically with the rest (`per_rank_state` reads it back).
    """
    rngs = distributed.all_gather_object(rng_state())
    parts = distributed.gather_object(_on_cpu(per_rank)) if per_rank is not None else None
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": strip_prefixes(distributed.unwrap(model).state_dict()),
        "optimizer": _state_of(optimizer),
        "scheduler": _state_of(scheduler),
        "precision": _state_of(precision),
        "rng": rngs,
        "step": step,
        "data_position": data_position,
        "extra": extra or {},
        "per_rank": parts,
    }


def restore_training_state(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    precision: Any = None,
    strict: bool = True,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """Load `state` into the given objects and this rank's RNG; returns the state."""
    target = distributed.unwrap(model)
    weights = strip_prefixes(state["model"])
    try:
        target.load_state_dict(weights, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit the model: {exc}") from exc
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None:
            if state.get(name) is None:
                raise CheckpointError(f"{source} holds no {name} state to resume from")
            obj.load_state_dict(state[name])
    if precision is not None and state.get("precision"):
        precision.load_state_dict(state["precision"])
    rngs = state.get("rng") or []
    rank = distributed.get_rank()
    if len(rngs) == distributed.get_world_size():
        set_rng_state(rngs[rank])
    elif rngs:
        # Another world size: data order stays exact, dropout noise cannot be.
        set_rng_state(rngs[rank % len(rngs)])
    return state


class Checkpointer:
    """Numbered saves with `_last`, `_best` and keep-last-N in one folder."""

    def __init__(
        self,
        directory: str | os.PathLike,
        prefix: str = "checkpoint",
        suffix: str = ".pt",
        keep_last: int = 3,
        is_main: bool | None = None,
    ) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.directory = Path(directory)
        self.prefix = prefix
        self.suffix = suffix
        self.keep_last = keep_last
        self.is_main = distributed.is_main() if is_main is None else is_main

    @property
    def last_path(self) -> Path:
        return self.directory / f"{self.prefix}_last{self.suffix}"

    @property
    def best_path(self) -> Path:
        return self.directory / f"{self.prefix}_best{self.suffix}"

    def step_path(self, step: int) -> Path:
        return self.directory / f"{self.prefix}_step{step:08d}{self.suffix}"

    def step_files(self) -> list[Path]:
        pattern = re.compile(rf"{re.escape(self.prefix)}_step(\d+){re.escape(self.suffix)}")
        found = []
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = pattern.fullmatch(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def save(self, state: dict[str, Any], step: int, *, is_best: bool = False) -> Path | None:
        """Write `state` as step `step`, point `_last` (and `_best`) at it, prune old saves.

        Only the main rank writes; the others return None.
        """
        if not self.is_main:
            return None
        path = save_atomic(state, self.step_path(step))
        _link_atomic(path, self.last_path)
        if is_best:
            _link_atomic(path, self.best_path)
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        """The file to resume from: `_last`, else the newest step file, else None."""
        if self.last_path.is_file():
            return self.last_path
        steps = self.step_files()
        return steps[-1] if steps else None

    def resume(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        precision: Any = None,
        path: str | os.PathLike | None = None,
        map_location: str | torch.device = "cpu",
    ) -> dict[str, Any] | None:
        """Restore the run from `path` (default: `latest()`); None when there is nothing."""
        path = Path(path) if path is not None else self.latest()
        if path is None:
            return None
        state = read_checkpoint(path, map_location=map_location)
        return restore_training_state(
            state,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            precision=precision,
            source=f"checkpoint {path}",
        )
