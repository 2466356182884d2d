"""GNMT checkpoints in and out of the model: ours and NVIDIA's PyTorch `model_best.pth`.

NVIDIA's files hold `model_config`, `state_dict` and the pickled `tokenizer` (with its
subword-nmt BPE object); they load under torch's weights-only unpickler with a short
list of allowed classes, without NVIDIA's code, and with one key renamed. Ours hold the
config and the tokenizer's state in `extra`. `gnmt.model.load_checkpoint` is the public
entry point.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import (
    FORMAT,
    CheckpointError,
    folder_hint,
    other_model,
    read_torch_dict,
    strip_prefixes,
)
from gnmt.model import GNMT, GNMTConfig
from gnmt.tokenizer import Tokenizer, TokenizerError


def _defaultdict_as_dict(*_default_factory: Any) -> dict:
    """Stands in for `collections.defaultdict` while unpickling NVIDIA's `tok2idx`:
    torch's weights_only unpickler fills plain dicts only, and the default (UNK) is
    not needed because `Tokenizer` maps unknown pieces to UNK itself."""
    return {}


def _nvidia_safe_globals() -> list[Any]:
    """What NVIDIA's GNMT checkpoints pickle besides tensors and plain data: the
    tokenizer's subword-nmt BPE object (with glossaries it holds a compiled regex),
    `tok2idx` = defaultdict(partial(int, UNK)) and the run's argparse namespace."""
    import argparse
    import functools

    from subword_nmt.apply_bpe import BPE

    return [
        BPE,
        re._compile,
        (_defaultdict_as_dict, "collections.defaultdict"),
        functools.partial,
        int,
        argparse.Namespace,
    ]


def _nvidia_model_config(nv: Any, path: Path) -> dict[str, Any]:
    """Our GNMT arguments from NVIDIA's `model_config` (batch_first only changes the
    layout of activations, not the weights)."""
    try:
        cfg = {k: nv[k] for k in ("vocab_size", "hidden_size", "num_layers", "dropout")}
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model_config lacks {exc} (got {nv!r})") from exc
    cfg["share_embedding"] = nv.get("share_embedding", True)
    return cfg


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[GNMT, Tokenizer]:
    """(model in eval mode, tokenizer) from our checkpoint or NVIDIA's PyTorch GNMT one."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{folder_hint(path)}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = read_torch_dict(
        path,
        map_location,
        safe_globals=_nvidia_safe_globals(),
        kind="GNMT checkpoint",
        allowed="tensors, plain data and NVIDIA's tokenizer",
        require_archive=False,  # older NVIDIA files use torch's legacy format
    )
    if state.get("format") == FORMAT:
        extra = state.get("extra") or {}
        tokenizer_state = state.get("tokenizer") or extra.get("tokenizer")  # version 1: extra
        if "model_config" not in extra or tokenizer_state is None:
            raise CheckpointError(f"{path} is {other_model(state)}, not a GNMT one")
        cfg = dict(extra["model_config"])
        from_state = Tokenizer.from_state_dict
        weights = state["model"]
    elif {"model_config", "state_dict", "tokenizer"} <= set(state):
        cfg = _nvidia_model_config(state["model_config"], path)
        tokenizer_state, from_state = state["tokenizer"], Tokenizer.from_nvidia_state
        weights = {
            k.replace("decoder.classifier.classifier.", "decoder.classifier."): v
            for k, v in strip_prefixes(state["state_dict"]).items()
        }
    else:
        raise CheckpointError(f"{path} is not a GNMT checkpoint (keys: {sorted(state)[:8]})")
    try:
        tokenizer = from_state(tokenizer_state)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed tokenizer state ({exc!r})") from exc
    except TokenizerError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    if tokenizer.vocab_size != cfg["vocab_size"]:
        raise CheckpointError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"{cfg['vocab_size']}: the vocabulary does not match the checkpoint"
        )
    try:
        model = GNMT(GNMTConfig(**cfg))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build GNMT from its config {cfg}: {exc}") from exc
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit GNMT{cfg}: {exc}") from exc
    return model.eval(), tokenizer
