"""BERT checkpoints in and out of the models: Hugging Face directories (config.json with
model.safetensors or pytorch_model.bin, as transformers writes them), NVIDIA's .pt
files, and ours. The models' `from_pretrained` and `save_pretrained` are the public
entry points; the reading, renaming and checking live here.

Loading (`from_pretrained`) reads a Hugging Face directory (config.json + model.safetensors
or pytorch_model.bin), our `save_pretrained` output (the same format), or a single
checkpoint file such as NVIDIA's BERT `.pt` ({"model": state dict}, its config given as
`config=` or as bert_config.json / config.json beside the file). It accepts `module.` and
`_orig_mod.` prefixes, `bert.` present or absent, LayerNorm `gamma`/`beta`, NVIDIA's
`dense_act` names, HF's `position_ids` buffers and a missing (tied) decoder weight, and
keeps the checkpoint's vocabulary size (NVIDIA pads it to a multiple of 8). What the
checkpoint holds beyond the model, and what it lacks, is handled so:
  - a task head or pooler the model has and the checkpoint lacks (or holds with another
    shape, e.g. another number of labels) is initialised afresh and reported
    (`model.load_report.newly_initialized`, logged as a warning);
  - a head or pooler the checkpoint has and the model lacks is dropped and reported
    (`model.load_report.unused`, logged at info level);
  - anything else missing, unknown or misshapen is a `CheckpointError` naming the keys.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bert.model import (
    CONFIG_NAMES,
    DECODER_WEIGHT,
    HEAD_PREFIXES,
    SAFETENSORS_NAME,
    WEIGHTS_NAMES,
    WORD_EMBEDDINGS,
    BertConfig,
    BertPreTrainedModel,
    LoadReport,
    Model,
    _read_json_object,
    check_vocab,
)
from common.atomic import atomic_write, current_umask, replace_durably, temp_path
from common.checkpoint import (
    CheckpointError,
    checkpoint_kind,
    other_model,
    read_torch_file,
    strip_prefixes,
)

logger = logging.getLogger(__name__)


def from_pretrained(
    cls: type[Model],
    path: str | os.PathLike,
    config: BertConfig | str | os.PathLike | None,
    weights_only: bool,
    kwargs: dict[str, Any],
) -> Model:
    """`cls.from_pretrained(path, config, weights_only=..., **kwargs)`: see there."""
    path = Path(path)
    weights_file, config_file, vocab_file = _locate(path)
    if isinstance(config, BertConfig):
        raw_config = config.to_dict()
    elif config is not None:
        raw_config = _read_json_object(Path(config))
    elif config_file is not None:
        raw_config = _read_json_object(config_file)
    else:
        raise CheckpointError(
            f"{path}: no config.json or bert_config.json beside it; pass config= "
            "(a BertConfig or the JSON file the checkpoint was trained with)"
        )
    state = _with_bert_prefix(_rename_keys(_read_state_dict(weights_file, weights_only)))
    if WORD_EMBEDDINGS not in state:
        raise CheckpointError(f"{weights_file} holds no BERT word embeddings ({WORD_EMBEDDINGS})")
    vocab_size = state[WORD_EMBEDDINGS].shape[0]
    if raw_config.get("vocab_size") != vocab_size:
        logger.info(
            "%s: %d word embeddings where the config says vocab_size=%s (NVIDIA pads the "
            "vocabulary to a multiple of 8); keeping the checkpoint's size",
            weights_file,
            vocab_size,
            raw_config.get("vocab_size"),
        )
    bert_config = BertConfig.from_dict({**raw_config, "vocab_size": vocab_size})
    model = cls(bert_config, **cls._init_kwargs(state, raw_config, kwargs))
    model.load_report = load_state(model, state, weights_file)
    model.name_or_path = str(path)
    if vocab_file is not None:
        check_vocab(model, vocab_file)
    return model.eval()


def load_state(
    model: BertPreTrainedModel, state: dict[str, torch.Tensor], source: Path
) -> LoadReport:
    """Copy `state` (keys with the `bert.` prefix) into this model; see the docstring."""
    state = dict(state)
    decoder = state.pop(DECODER_WEIGHT, None)
    if decoder is not None and not torch.equal(decoder, state[WORD_EMBEDDINGS]):
        raise CheckpointError(
            f"{source}: {DECODER_WEIGHT} differs from the word embeddings; this model ties them"
        )
    decoder_bias = state.pop("cls.predictions.decoder.bias", None)  # HF ties it to .bias
    if decoder_bias is not None:
        state.setdefault("cls.predictions.bias", decoder_bias)
    # Compare in the checkpoint's namespace, where the encoder lives under "bert.".
    own = {
        model._checkpoint_key(k): v for k, v in model.state_dict().items() if k != DECODER_WEIGHT
    }
    report = LoadReport()
    errors = []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            continue
        if key in own and _is_head(key):  # e.g. a classifier for another number of labels
            report.newly_initialized.append(key)
        elif key in own:
            errors.append(
                f"{key} has shape {list(value.shape)} in the checkpoint, "
                f"{list(own[key].shape)} in the model"
            )
        elif _is_head(key):
            report.unused.append(key)
        else:
            errors.append(f"unknown key {key}")
    for key in own.keys() - state.keys():
        if _is_head(key):
            report.newly_initialized.append(key)
        else:
            errors.append(f"missing key {key}")
    if errors:
        shown = "; ".join(sorted(errors)[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {shown}{more}")
    skip = set(report.newly_initialized) | set(report.unused)
    model.load_state_dict(
        {model._model_key(k): v for k, v in state.items() if k not in skip}, strict=False
    )
    report.newly_initialized = sorted(map(model._model_key, report.newly_initialized))
    report.unused.sort()
    if report.newly_initialized:
        logger.warning(
            "%s: newly initialised (absent from %s; train before use): %s",
            type(model).__name__,
            source,
            ", ".join(report.newly_initialized),
        )
    if report.unused:
        logger.info("%s: not used from %s: %s", type(model).__name__, source, report.unused)
    return report


def save_pretrained(
    model: BertPreTrainedModel, out_dir: str | os.PathLike, vocab_file: str | os.PathLike | None
) -> Path:
    """`model.save_pretrained(out_dir, vocab_file)`: see there."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if k != DECODER_WEIGHT
    }
    target = out / SAFETENSORS_NAME
    tmp = temp_path(target)
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors writes 0600: as other outputs
        replace_durably(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    hf_config = {
        **model.config.to_dict(),
        "model_type": "bert",
        "architectures": [type(model).__name__],
        "tie_word_embeddings": True,
        **model._hf_config_extras(),
    }
    with atomic_write(out / CONFIG_NAMES[0], "w", encoding="utf-8") as f:
        f.write(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if vocab_file is not None:
        with open(vocab_file, "rb") as src, atomic_write(out / "vocab.txt") as dst:
            shutil.copyfileobj(src, dst)
    return out


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def _locate(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(weights file, config file or None, vocab file or None) for a directory or a file."""
    if path.is_dir():
        weights = next((path / n for n in WEIGHTS_NAMES if (path / n).is_file()), None)
        if weights is None:
            present = sorted(p.name for p in path.iterdir())[:10]
            raise CheckpointError(
                f"{path} holds neither {' nor '.join(WEIGHTS_NAMES)} (found: {present})"
            )
        vocab = path / "vocab.txt"
        folder, vocab_file = path, (vocab if vocab.is_file() else None)
    elif path.is_file():
        weights, folder, vocab_file = path, path.parent, None
    else:
        raise CheckpointError(f"checkpoint {path} does not exist")
    config = next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)
    return weights, config, vocab_file


def _read_state_dict(path: Path, weights_only: bool) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors file or a torch.save file (a state dict, or a
    dict holding one under "model" as NVIDIA's and our training checkpoints do)."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type for damaged files
            raise CheckpointError(f"{path} is truncated or not a safetensors file: {exc}") from exc
    if weights_only:
        # Files without the zip header may be torch's legacy format, as older HF ones.
        state = read_torch_file(
            path,
            kind="BERT checkpoint to load safely",
            allowed="tensors and plain data; if you trust the file, load it with "
            "weights_only=False",
            require_archive=False,
        )
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
    kind = checkpoint_kind(state) if isinstance(state, dict) else None
    if kind is not None and not kind.startswith("BERT"):
        raise CheckpointError(f"{path} is {other_model(state)}, not a BERT one")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no state dict (top level: {type(state).__name__})")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a BERT state dict (non-tensor entries {not_tensors[:5]})"
        )
    return state


def _rename_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names for the variants: prefixes, gamma/beta, NVIDIA's dense_act; HF's
    position_ids buffers dropped."""
    out = {}
    for key, value in strip_prefixes(state).items():
        if key.endswith("position_ids"):
            continue
        key = key.replace(".dense_act.", ".dense.")
        if key.endswith("LayerNorm.gamma"):
            key = key.removesuffix("gamma") + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key.removesuffix("beta") + "bias"
        out[key] = value
    return out


def _with_bert_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a bare encoder checkpoint (`embeddings.`, `encoder.`, `pooler.`) under `bert.`."""
    bare = ("embeddings.", "encoder.", "pooler.")
    return {("bert." + k if k.startswith(bare) else k): v for k, v in state.items()}
