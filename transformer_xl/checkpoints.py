"""Transformer-XL checkpoints in and out of the model: ours and NVIDIA's PyTorch ones.

NVIDIA's `checkpoint_best.pt` / `checkpoint_last.pt` hold `model_config`, `model_state`
and `vocab` (a pickled `utils.vocabulary.Vocab`); they load without NVIDIA's code, in
both of its state-dict layouts. Ours hold the config and the vocabulary's symbols in
`extra`. `transformer_xl.model.load_checkpoint` is the public entry point.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    other_model,
    read_torch_dict,
    strip_prefixes,
)
from transformer_xl.model import MemTransformerLM


class NvidiaVocab:
    """Stands in for NVIDIA's `utils.vocabulary.Vocab` while unpickling its checkpoints:
    the attributes (`idx2sym`, `sym2idx`, `counter`, ...) are kept, the code is not."""


_VOCAB_NAMES = ("utils.vocabulary.Vocab", "vocabulary.Vocab", "data_utils.Vocab")


def _nvidia_safe_globals() -> list[Any]:
    """What NVIDIA's checkpoints pickle besides tensors and plain data: the vocabulary
    (with a Counter of word counts) and the run's argparse namespace."""
    return [
        *((NvidiaVocab, name) for name in _VOCAB_NAMES),
        collections.Counter,
        argparse.Namespace,
    ]


def _from_nvidia_layout(weights: dict[str, Any], model: MemTransformerLM) -> dict[str, Any]:
    """NVIDIA's state dict in our names. Later releases store the softmax as
    `crit.out_layers_weights.i` / `crit.out_layers_biases.i`, keep a second copy of the
    embedding projections as `crit.shared_out_projs.i` and leave tied tensors out;
    a tied tensor is filled in from the tensor it is tied to."""
    renamed = {}
    for key, value in weights.items():
        match = re.fullmatch(r"crit\.out_layers_(weights|biases)\.(\d+)", key)
        if match:
            key = f"crit.out_layers.{match[2]}.{'weight' if match[1] == 'weights' else 'bias'}"
        elif key.startswith("crit.shared_out_projs."):
            continue
        renamed[key] = value
    tied: dict[int, list[str]] = collections.defaultdict(list)
    for name, tensor in model.state_dict(keep_vars=True).items():
        tied[id(tensor)].append(name)
    for names in tied.values():
        present = [name for name in names if name in renamed]
        for name in names:
            if present:
                renamed.setdefault(name, renamed[present[0]])
    return renamed


def _config_and_weights(state: dict[str, Any], path: Path) -> tuple[dict, dict, Any]:
    """(constructor kwargs, state dict in our names, vocabulary object) of either format."""
    if state.get("format") == FORMAT:
        if state.get("version", 0) > VERSION:
            raise CheckpointError(
                f"{path} has checkpoint version {state['version']}, newer than this code"
            )
        extra = state.get("extra") or {}
        config = extra.get("model_config")
        if not isinstance(config, dict) or "n_layer" not in config or "d_head" not in config:
            raise CheckpointError(f"{path} is {other_model(state)}, not a Transformer-XL one")
        vocab = state.get("vocab")  # {"symbols": [...]}; version 1 kept the list in extra
        symbols = vocab.get("symbols") if isinstance(vocab, dict) else extra.get("vocab")
        return dict(config), strip_prefixes(state["model"]), symbols
    if {"model_config", "model_state"} <= set(state):
        return dict(state["model_config"]), strip_prefixes(state["model_state"]), state.get("vocab")
    raise CheckpointError(
        f"{path} is not a Transformer-XL checkpoint (top level: {sorted(map(str, state))[:8]})"
    )


def _vocab_symbols(vocab: Any, n_token: int, path: Path) -> list[str] | None:
    if vocab is None:
        return None
    symbols = vocab.__dict__.get("idx2sym") if isinstance(vocab, NvidiaVocab) else vocab
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise CheckpointError(f"{path}: the vocabulary is malformed (no list of symbols)")
    if len(symbols) != n_token:
        raise CheckpointError(
            f"{path}: the vocabulary has {len(symbols)} symbols but the model {n_token} "
            "tokens: the vocabulary does not match the checkpoint"
        )
    return list(symbols)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[MemTransformerLM, list[str] | None]:
    """(model in eval mode on `map_location`, vocabulary id -> symbol or None) from our
    checkpoint (`extra["model_config"]`, `vocab`) or NVIDIA's
    `checkpoint_{best,last}.pt` (`model_config`, `model_state`, `vocab`). The model keeps
    the checkpoint's tgt/ext/mem_len, same_length and clamp_len."""
    path = Path(path)
    state = read_torch_dict(
        path,
        map_location,
        safe_globals=_nvidia_safe_globals(),
        kind="Transformer-XL checkpoint",
        allowed="tensors, plain data and NVIDIA's vocabulary",
        require_archive=False,
    )
    config, weights, vocab = _config_and_weights(state, path)
    try:
        model = MemTransformerLM(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build the model from its config: {exc}") from exc
    symbols = _vocab_symbols(vocab, model.n_token, path)
    if state.get("format") != FORMAT:
        weights = _from_nvidia_layout(weights, model)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model config: {exc}") from exc
    return model.to(map_location).eval(), symbols
