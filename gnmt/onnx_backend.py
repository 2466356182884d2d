"""GNMT on onnxruntime: the folder `python -m gnmt.export` writes, read back as a stand-in
for the model, so that gnmt.beam_search runs unchanged on either backend.

The folder holds two graphs (B = sentences x beams, S = source length, L = layers,
H = hidden size, V = vocabulary size; B and S are dynamic):

    encoder.onnx       src [B, S] int64, src_lengths [B] int64
                       -> keys [B, S, H], projected_keys [B, S, H], mask [B, S] bool
                          (+ hidden, cell [L, B, H] when the decoder starts from the
                          encoder's final states; otherwise the decoder starts at zeros)
    decoder_step.onnx  tokens [B, 1] int64, hidden [L, B, H], cell [L, B, H],
                       keys, projected_keys, mask (as the encoder gives them)
                       -> log_probs [B, V], attention [B, S], next_hidden, next_cell

plus tokenizer.json (the checkpoint's tokenizer state) and export.json (names, opset,
versions, the parity measured at export).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from common.errors import UserError
from common.onnxrt import cpu_session
from gnmt.model import EncodedSource, State
from gnmt.tokenizer import Tokenizer, TokenizerError

FORMAT = "gnmt-onnx/1"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_step.onnx"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "export.json"

ENCODER_INPUTS = ["src", "src_lengths"]
ENCODER_OUTPUTS = ["keys", "projected_keys", "mask"]
ENCODER_STATE_OUTPUTS = ["hidden", "cell"]  # only with init_decoder_from_encoder
DECODER_INPUTS = ["tokens", "hidden", "cell", "keys", "projected_keys", "mask"]
DECODER_OUTPUTS = ["log_probs", "attention", "next_hidden", "next_cell"]


class OnnxFolderError(UserError, ValueError):
    """An ONNX folder is missing, incomplete or not written by gnmt.export."""


def stack_state(state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer (h, c), each [1, B, H] -> (hidden, cell), each [L, B, H]."""
    return torch.cat([h for h, _ in state]), torch.cat([c for _, c in state])


def unstack_state(hidden: torch.Tensor, cell: torch.Tensor) -> State:
    """(hidden, cell), each [L, B, H] -> per-layer (h, c), each [1, B, H]."""
    return list(zip(hidden.split(1), cell.split(1), strict=True))


def create_session(path: Path, threads: int) -> Any:
    return cpu_session(path, threads)


def _numpy(t: torch.Tensor) -> Any:
    return t.detach().contiguous().numpy()


class OnnxGNMT:
    """The two calls gnmt.beam_search makes on a GNMT, answered by onnxruntime sessions:
    `encode(src, src_lengths)` and `decode(tokens, source, state)` for one step. Tensors
    come in and go out as torch CPU tensors."""

    def __init__(self, encoder: Any, decoder_step: Any, num_layers: int, hidden_size: int):
        self.encoder = encoder
        self.decoder_step = decoder_step
        self.num_layers = num_layers
        self.hidden_size = hidden_size

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncodedSource:
        """src [B, S], src_lengths [B] -> the source as GNMT.encode gives it."""
        outputs = self.encoder.run(None, {"src": _numpy(src), "src_lengths": _numpy(src_lengths)})
        keys, projected, mask, *final = (torch.from_numpy(o) for o in outputs)
        return EncodedSource(keys, projected, mask, unstack_state(*final) if final else None)

    def decode(
        self, tgt: torch.Tensor, source: EncodedSource, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: tgt [B, 1] -> log-probabilities [B, 1, V], attention [B, 1, S], the
        next state. GNMT.decode returns logits there; the search takes their log-softmax,
        which leaves log-probabilities as they are (up to rounding)."""
        if tgt.size(1) != 1:
            raise ValueError(f"the ONNX decoder runs one step at a time, got {tgt.size(1)}")
        state = state or source.state
        if state is None:  # the decoder's first step starts from zeros, as in GNMT
            hidden = cell = torch.zeros(self.num_layers, tgt.size(0), self.hidden_size)
        else:
            hidden, cell = stack_state(state)
        feed = {
            "tokens": tgt,
            "hidden": hidden,
            "cell": cell,
            "keys": source.keys,
            "projected_keys": source.projected_keys,
            "mask": source.mask,
        }
        outputs = self.decoder_step.run(None, {k: _numpy(v) for k, v in feed.items()})
        log_probs, attention, hidden, cell = (torch.from_numpy(o) for o in outputs)
        return log_probs.unsqueeze(1), attention.unsqueeze(1), unstack_state(hidden, cell)


def open_graphs(folder: Path, num_layers: int, hidden_size: int, threads: int = 1) -> OnnxGNMT:
    """Sessions on the folder's encoder.onnx and decoder_step.onnx, as a model stand-in."""
    encoder = create_session(folder / ENCODER_FILE, threads)
    decoder_step = create_session(folder / DECODER_FILE, threads)
    return OnnxGNMT(encoder, decoder_step, num_layers, hidden_size)


def read_metadata(folder: Path) -> dict[str, Any]:
    """export.json of an ONNX folder, checked to come from gnmt.export."""
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise OnnxFolderError(f"ONNX folder {folder} does not exist (python -m gnmt.export)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OnnxFolderError(
            f"{folder} has no {METADATA_FILE}: not a gnmt.export folder"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OnnxFolderError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OnnxFolderError(f"{path} is not a GNMT export (format {FORMAT} expected)")
    return meta


def load_onnx_folder(folder: str | os.PathLike, threads: int = 1) -> tuple[OnnxGNMT, Tokenizer]:
    """(model stand-in, tokenizer) from a folder written by gnmt.export."""
    folder = Path(folder)
    meta = read_metadata(folder)
    for name in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            raise OnnxFolderError(f"{folder} lacks {name}: export it again")
    try:
        state = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_state_dict(state)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise OnnxFolderError(f"{folder / TOKENIZER_FILE}: malformed tokenizer ({exc!r})") from None
    except TokenizerError as exc:
        raise OnnxFolderError(f"{folder / TOKENIZER_FILE}: {exc}") from None
    config = meta["model_config"]
    return open_graphs(folder, config["num_layers"], config["hidden_size"], threads), tokenizer
