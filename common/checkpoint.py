"""Checkpoints that survive crashes, and exact resume of a training run.

A checkpoint is a dict written with `torch.save` holding only tensors and plain
Python data, so it loads with `torch.load(weights_only=True)`:

    format, version          marks the file as ours (anything else is "foreign")
    step                     the optimizer steps done
    rng                      per-rank RNG states (python, numpy, torch, cuda)
    <part>                   the `state_dict()` of each part saved: model (without
                             `module.` / `_orig_mod.` prefixes), optimizer, scheduler,
                             precision, data_position, vocabulary, ...
    per_rank                 one dict per rank of the parts that differ between ranks
    extra                    plain values: best metric, model config

A run names its parts once and hands the same dict to `Checkpointer.save(step, states)`
and `Checkpointer.restore(states)`; each part has `state_dict`/`load_state_dict`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from common import distributed
from common.atomic import atomic_write, replace_durably, temp_path
from common.errors import UserError

FORMAT = "lm-recipes-checkpoint"
VERSION = 2  # 2: parts by name at the top level, per-rank parts in `per_rank`
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, truncated, foreign or does not fit the model."""


class RunFolderError(CheckpointError):
    """A new run was pointed at a folder that holds another run."""


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


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def folder_hint(folder: Path) -> str:
    """ ": the checkpoints in it are a.pt, b.pt" for a folder given where a checkpoint file
    was expected (the `_last` and `_best` ones first), or "" when it holds none."""
    found = sorted(
        (p.name for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()),
        key=lambda name: ("_last" not in name and "_best" not in name, name),
    )
    if not found:
        return " (it holds no .pt/.pth/.bin file)"
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return f"; the checkpoints in it: {', '.join(found[:5])}{more}"


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
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{folder_hint(path)}")
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


class Stateful(Protocol):
    """A part of a run that a checkpoint saves and restores."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class PerRank:
    """Marks a part whose state differs between ranks (Transformer-XL's memories): each
    rank's state, moved to the CPU, is gathered on the writing rank into the same file, so
    it is committed atomically with the rest; on restore each rank gets its own back."""

    def __init__(self, part: Stateful) -> None:
        self.part = part


@dataclass
class DataPosition:
    """Where a data stream continues: the epoch and the next batch within it."""

    epoch: int = 0
    batch: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


class RunSettings:
    """Settings an exact resume depends on (batch sizes, epochs, data size): a checkpoint
    part whose restore refuses a run that changed any of them, naming each change."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        changed = [
            f"{name} {state.get(name)!r} -> {value!r}"
            for name, value in self.settings.items()
            if name in state and state[name] != value
        ]
        if changed:
            raise CheckpointError(
                f"{'; '.join(changed)}: changed since the checkpoint was written, so the run "
                "would not continue exactly; resume with the same settings, or start a new "
                "run in another folder"
            )


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
    """This rank's parts of a checkpoint (the `PerRank` parts), or None when the checkpoint
    has none or was written by another number of processes."""
    parts = state.get("per_rank")
    if not parts or len(parts) != distributed.get_world_size():
        return None
    return parts[distributed.get_rank() if rank is None else rank]


def capture_state(
    step: int, states: dict[str, Any], *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint of `states` (name -> part with `state_dict`, `PerRank(part)`, or None)
    at `step`. Collective: call on every rank. A module is saved without the prefixes of
    its wrappers; `extra` holds plain values (best metric, model config)."""
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "rng": distributed.all_gather_object(rng_state()),
        "extra": extra or {},
        "per_rank": None,
    }
    mine: dict[str, Any] = {}
    for name, part in states.items():
        if isinstance(part, PerRank):
            mine[name] = _on_cpu(part.part.state_dict())
        elif isinstance(part, torch.nn.Module):
            checkpoint[name] = strip_prefixes(distributed.unwrap(part).state_dict())
        else:
            checkpoint[name] = part.state_dict() if part is not None else None
    if mine:
        checkpoint["per_rank"] = distributed.gather_object(mine)
    return checkpoint


def restore_state(
    checkpoint: dict[str, Any],
    states: dict[str, Any],
    *,
    strict: bool = True,
    source: str = "checkpoint",
) -> list[str]:
    """Load each part of `states` from `checkpoint` in the order given (parts that check
    the run, such as a vocabulary, go first), then this rank's RNG. Returns the names
    of the `PerRank` parts the checkpoint has nothing for on this rank (another number of
    processes, an earlier version): the caller decides how those start.

    A part the top level lacks is looked for in `extra`, where version 1 kept the
    vocabulary and the plateau scheduler (and, as plain values, a run's settings); a part
    missing there too, or saved as None, is an error (leave out of `states` what a run
    may lack)."""
    mine = per_rank_state(checkpoint) or {}
    extra = checkpoint.get("extra") or {}
    missing = []
    for name, part in states.items():
        if part is None:
            continue
        if isinstance(part, PerRank):
            if name in mine:
                _load_part(part.part, mine[name], f"{source}: {name}")
            else:
                missing.append(name)
            continue
        saved = checkpoint[name] if name in checkpoint else extra.get(name, _ABSENT)
        if saved is _ABSENT and isinstance(part, RunSettings):
            saved = extra  # version 1 kept a run's settings among the plain values
        if saved is _ABSENT or saved is None:
            raise CheckpointError(f"{source} holds no {name} state to resume from")
        if isinstance(part, torch.nn.Module):
            load_model_weights(part, saved, strict=strict, source=source, checkpoint=checkpoint)
        else:
            _load_part(part, saved, f"{source}: {name}")
    rngs = checkpoint.get("rng") or []
    rank = distributed.get_rank()
    if len(rngs) == distributed.get_world_size():
        set_rng_state(rngs[rank])
    elif rngs:
        # Another world size: data order stays exact, dropout noise cannot be.
        set_rng_state(rngs[rank % len(rngs)])
    return missing


_ABSENT = object()


def checkpoint_kind(checkpoint: dict[str, Any]) -> str | None:
    """Which recipe wrote one of our checkpoints (GNMT, Transformer-XL, BERT, BERT
    fine-tuning), from the parts and values it holds; None when it cannot tell."""
    if checkpoint.get("format") != FORMAT:
        return None
    extra = checkpoint.get("extra") or {}
    config = extra.get("model_config") or {}
    if "tokenizer" in checkpoint or "tokenizer" in extra:
        return "GNMT"
    if "n_layer" in config or "mems" in (per_rank_state(checkpoint) or {}):
        return "Transformer-XL"
    if "phase" in checkpoint or "bert_config" in extra:
        return "BERT pre-training"
    if "settings" in checkpoint and "features" in checkpoint["settings"]:
        return "BERT fine-tuning"
    return None


def other_model(checkpoint: dict[str, Any]) -> str:
    """ "a GNMT checkpoint", or "a checkpoint of another model" when the kind is unknown."""
    kind = checkpoint_kind(checkpoint)
    return f"a {kind} checkpoint" if kind else "a checkpoint of another model"


def _examples(keys: Any, n: int = 2) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_model_weights(
    model: torch.nn.Module,
    weights: dict[str, Any],
    *,
    strict: bool = True,
    source: str = "checkpoint",
    checkpoint: dict[str, Any] | None = None,
) -> None:
    """Load a state dict into `model` (its wrappers' prefixes stripped on both sides); a
    misfit is one line: how many weights are missing, unexpected or of another shape,
    with examples, and which model the checkpoint is when `checkpoint` tells."""
    target = distributed.unwrap(model)
    weights = strip_prefixes(weights)
    own = target.state_dict()
    missing = own.keys() - weights.keys() if strict else set()
    unexpected = weights.keys() - own.keys() if strict else set()
    reshaped = {
        k
        for k in own.keys() & weights.keys()
        if hasattr(weights[k], "shape") and tuple(weights[k].shape) != tuple(own[k].shape)
    }
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if reshaped:
        k = sorted(reshaped)[0]
        shapes = f"{k}: {list(weights[k].shape)} saved, {list(own[k].shape)} here"
        problems.append(f"{len(reshaped)} of another shape ({shapes})")
    if problems:
        kind = checkpoint_kind(checkpoint) if checkpoint is not None else None
        what = f" (it is a {kind} checkpoint)" if kind else ""
        raise CheckpointError(f"{source} does not fit the model{what}: {'; '.join(problems)}")
    try:
        target.load_state_dict(weights, strict=strict)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source} does not fit the model: {detail}") from exc


def _load_part(part: Stateful, saved: Any, where: str) -> None:
    """`part.load_state_dict(saved)`, with a part's refusal (another vocabulary) or a
    malformed state reported as a CheckpointError naming the file and the part."""
    try:
        part.load_state_dict(saved)
    except UserError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{where}: malformed state ({exc!r})") from exc


def capture_training_state(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    precision: Any = None,
    step: int = 0,
    data_position: Any = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`capture_state` of the usual parts, by keyword (`data_position` plain data)."""
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state = capture_state(step, {**states, "precision": precision}, extra=extra)
    state["data_position"] = data_position
    return state


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
    """`restore_state` of the usual parts, by keyword; returns `state`."""
    if precision is not None and not state.get("precision"):
        precision = None  # a checkpoint of a run without loss scaling
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    restore_state(state, {**states, "precision": precision}, strict=strict, source=source)
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

    def save(
        self,
        step: int,
        states: dict[str, Any] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        is_best: bool = False,
        checkpoint: dict[str, Any] | None = None,
    ) -> Path | None:
        """Save the parts `states` (see `capture_state`) as step `step`, point `_last`
        (and `_best`) at the file and prune old saves. Collective: every rank calls it,
        only the main rank writes (the others return None). `checkpoint` writes a dict
        made already instead."""
        if checkpoint is None:
            checkpoint = capture_state(step, states or {}, extra=extra)
        if not self.is_main:
            return None
        path = save_atomic(checkpoint, self.step_path(step))
        _link_atomic(path, self.last_path)
        if is_best:
            _link_atomic(path, self.best_path)
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def run_files(self) -> list[Path]:
        """This checkpointer's files in its folder: numbered saves, `_last`, `_best`."""
        ends = [path for path in (self.last_path, self.best_path) if path.is_file()]
        return self.step_files() + ends

    def claim(
        self,
        *,
        resume: bool,
        overwrite: bool,
        outputs: Sequence[str | os.PathLike] = (),
        resume_flag: str = "--resume",
        folder: str | os.PathLike | None = None,
    ) -> None:
        """Make sure a new run does not mix with another one in the same folder: a folder
        holding a run (checkpoints, or any of `outputs`: logs, exports) is refused unless
        it is resumed, or, with `overwrite`, cleared first (checkpoints and `outputs`).
        `folder` is the run's folder as the user named it (default: the checkpoints').
        Collective: call on every rank, before anything is written."""
        if resume:
            return
        found = self.run_files() + [Path(o) for o in outputs if Path(o).exists()]
        distributed.barrier()  # every rank has looked before the main rank writes a log
        if not found:
            return
        if not overwrite:
            names = ", ".join(sorted({path.name for path in found})[:4])
            raise RunFolderError(
                f"{folder or self.directory} holds another run ({names}): continue it with "
                f"{resume_flag}, pass a new folder, or add --overwrite to start over "
                "(deletes its checkpoints and logs)"
            )
        if self.is_main:
            for path in found:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        distributed.barrier()

    def latest(self) -> Path | None:
        """The file to resume from: `_last`, else the newest step file, else None."""
        if self.last_path.is_file():
            return self.last_path
        steps = self.step_files()
        return steps[-1] if steps else None

    def restore(
        self,
        states: dict[str, Any],
        path: str | os.PathLike | None = None,
        map_location: str | torch.device = "cpu",
    ) -> dict[str, Any] | None:
        """Restore the parts `states` from `path` (default: `latest()`); returns the
        checkpoint read, None when there is nothing to resume. `PerRank` parts the file
        has nothing for are listed under the returned checkpoint's "missing"."""
        path = Path(path) if path is not None else self.latest()
        if path is None:
            return None
        checkpoint = read_checkpoint(path, map_location=map_location)
        checkpoint["missing"] = restore_state(checkpoint, states, source=f"checkpoint {path}")
        return checkpoint

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
        """`restore` of the usual parts, by keyword."""
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
