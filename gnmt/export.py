"""Export a GNMT checkpoint to ONNX: the encoder and one decoder step, for onnxruntime.

    python -m gnmt.export --model results/gnmt/model_best.pth --out-dir results/gnmt/onnx
    python -m gnmt.translate --backend onnxruntime --onnx-dir results/gnmt/onnx --input test.en

The folder (graphs and names: gnmt/onnx_backend.py) is self-contained for translation:
encoder.onnx, decoder_step.onnx, tokenizer.json and export.json. Both graphs are traced
from the model's own `encode` and `decode` by torch's TorchScript-based exporter, which
turns the packed bidirectional layer into ONNX LSTMs with `sequence_lens` (torch.export
cannot trace the packing). Before anything is written the graphs pass onnx.checker and
onnxruntime must match PyTorch within 1e-4 on padded batches of several shapes; else
the run ends with one line and the out folder is left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common import cli
from common.errors import UserError
from common.onnxrt import require, versions
from gnmt import onnx_backend as ob
from gnmt.data import pad
from gnmt.model import GNMT, EncodedSource, State, load_checkpoint
from gnmt.tokenizer import BOS, EOS, PAD, Tokenizer

OPSET = 17
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| accepted on any output
# (sentences, longest source) of the parity batches; every batch but the first is padded
PARITY_SHAPES = [(1, 4), (3, 9), (7, 23), (16, 50)]


class ExportError(UserError, RuntimeError):
    """The exported graphs cannot be trusted (checker or parity) or cannot be written."""


class _EncoderGraph(nn.Module):
    """GNMT.encode with plain tensors out: keys, projected keys, mask (+ stacked state)."""

    def __init__(self, model: GNMT) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        source = self.model.encode(src, src_lengths)
        state = () if source.state is None else ob.stack_state(source.state)
        return (source.keys, source.projected_keys, source.mask, *state)


class _DecoderStepGraph(nn.Module):
    """One GNMT.decode step with stacked states in and out, log-probabilities out."""

    def __init__(self, model: GNMT) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        tokens: torch.Tensor,
        hidden: torch.Tensor,
        cell: torch.Tensor,
        keys: torch.Tensor,
        projected_keys: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        source = EncodedSource(keys, projected_keys, mask, None)
        state = ob.unstack_state(hidden, cell)
        logits, attention, state = self.model.decode(tokens, source, state)
        log_probs = F.log_softmax(logits[:, 0], dim=-1)
        return (log_probs, attention[:, 0], *ob.stack_state(state))


def sample_batch(
    vocab_size: int, batch: int, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sources as the translator builds them: BOS ... EOS, padded; the first is
    `length` long, the others 3 (BOS, a token, EOS) to `length`. -> src [B, S], lengths [B]."""
    lengths = torch.randint(3, length + 1, (batch,), generator=generator)
    lengths[0] = length
    sources = []
    for n in lengths.tolist():
        words = torch.randint(EOS + 1, vocab_size, (n - 2,), generator=generator)
        sources.append(torch.cat((torch.tensor([BOS]), words, torch.tensor([EOS]))))
    return pad(sources)


def _encoder_inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Distinct sizes (3 sentences, 7 positions) so that no traced size is mistaken for
    # another; the shorter rows make the packing real.
    src, lengths = pad([torch.full((n,), EOS + 1) for n in (7, 4, 3)])
    return src.clamp(max=vocab_size - 1), lengths


@torch.no_grad()
def export_graphs(model: GNMT, folder: Path) -> dict[str, Any]:
    """Write encoder.onnx and decoder_step.onnx into `folder`; returns their names and
    dynamic axes as export.json records them."""
    cfg = model.config
    src, lengths = _encoder_inputs(cfg.vocab_size)
    # Running the model once also settles run_lstm's cached CPU check, a call the tracer
    # could not record; its outputs are the decoder step's example inputs.
    source = model.encode(src, lengths)
    zeros = torch.zeros(cfg.num_layers, src.size(0), cfg.hidden_size)
    step_args = (torch.full((src.size(0), 1), BOS), zeros, zeros.clone(),
                 source.keys, source.projected_keys, source.mask)  # fmt: skip

    rows, by_position, states = {0: "batch"}, {0: "batch", 1: "source_length"}, {1: "batch"}
    axes = {"src": by_position, "src_lengths": rows, "keys": by_position,
            "projected_keys": by_position, "mask": by_position, "tokens": rows,
            "hidden": states, "cell": states, "log_probs": rows, "attention": by_position,
            "next_hidden": states, "next_cell": states}  # fmt: skip
    encoder_outputs = ob.ENCODER_OUTPUTS + (
        ob.ENCODER_STATE_OUTPUTS if source.state is not None else []
    )
    graphs = [
        (_EncoderGraph(model), (src, lengths), ob.ENCODER_FILE, ob.ENCODER_INPUTS,
         encoder_outputs),
        (_DecoderStepGraph(model), step_args, ob.DECODER_FILE, ob.DECODER_INPUTS,
         ob.DECODER_OUTPUTS),
    ]  # fmt: skip
    record = {}
    for module, args, name, inputs, outputs in graphs:
        names = inputs + outputs
        dynamic = {k: v for k, v in axes.items() if k in names}
        # The exporter puts the module back in the mode it had; a fresh wrapper is in
        # training mode and would switch the model's dropout on again.
        module.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(
                module, args, str(folder / name), dynamo=False, opset_version=OPSET,
                input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
            )  # fmt: skip
        require("onnx").checker.check_model(str(folder / name))
        record[name.removesuffix(".onnx")] = {
            "file": name, "inputs": inputs, "outputs": outputs, "dynamic_axes": dynamic
        }  # fmt: skip
    return record


def stacked(state: State | None) -> torch.Tensor:
    """Every h and c of a state in one tensor [2L, B, H] (empty for no state)."""
    return torch.empty(0) if state is None else torch.cat(ob.stack_state(state))


def _max_diff(reference: torch.Tensor, onnx: torch.Tensor) -> float:
    if reference.shape != onnx.shape:
        return float("inf")
    diff = (reference.float() - onnx.float()).abs().max().item()
    return diff if diff == diff else float("inf")  # nan counts as a failure


@torch.no_grad()
def measure_parity(model: GNMT, onnx_model: ob.OnnxGNMT) -> dict[str, float]:
    """Largest |ONNX - PyTorch| per output over the PARITY_SHAPES batches: the encoder's
    outputs on the same sources, the decoder step's on the same (PyTorch) inputs with
    random tokens and states. States count as one tensor each; "mask" is 1.0 when the
    masks differ at all; a shape that differs counts as infinitely far."""
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    worst: dict[str, float] = {}

    def note(name: str, reference: torch.Tensor, onnx: torch.Tensor) -> None:
        worst[name] = max(worst.get(name, 0.0), _max_diff(reference, onnx))

    for batch, length in PARITY_SHAPES:
        src, lengths = sample_batch(cfg.vocab_size, batch, length, generator)
        ref, got = model.encode(src, lengths), onnx_model.encode(src, lengths)
        note("keys", ref.keys, got.keys)
        note("projected_keys", ref.projected_keys, got.projected_keys)
        worst["mask"] = max(worst.get("mask", 0.0), float(not torch.equal(ref.mask, got.mask)))
        if ref.state is not None:
            note("encoder_state", stacked(ref.state), stacked(got.state))
        tokens = torch.randint(0, cfg.vocab_size, (batch, 1), generator=generator)
        shape = (1, batch, cfg.hidden_size)
        state = [(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))
                 for _ in range(cfg.num_layers)]  # fmt: skip
        logits, attention, next_state = model.decode(tokens, ref, state)
        log_probs, attention2, next_state2 = onnx_model.decode(tokens, ref, state)
        note("log_probs", F.log_softmax(logits, dim=-1), log_probs)
        note("attention", attention, attention2)
        note("decoder_state", stacked(next_state), stacked(next_state2))
    return worst


def write_folder(
    model: GNMT, tokenizer: Tokenizer, checkpoint: Path, folder: Path
) -> dict[str, Any]:
    """Export, check and write every file into `folder`; returns export.json's content."""
    graphs = export_graphs(model, folder)
    cfg = model.config
    parity = measure_parity(model, ob.open_graphs(folder, cfg.num_layers, cfg.hidden_size))
    bad = {k: v for k, v in parity.items() if not v <= TOLERANCE}
    if bad:
        name, diff = max(bad.items(), key=lambda kv: kv[1])
        raise ExportError(
            f"onnxruntime differs from PyTorch by {diff:.3g} on {name} (tolerance "
            f"{TOLERANCE:g}); nothing was written"
        )
    (folder / ob.TOKENIZER_FILE).write_text(
        json.dumps(tokenizer.state_dict(), ensure_ascii=False), encoding="utf-8"
    )
    meta = {
        "format": ob.FORMAT,
        "checkpoint": str(checkpoint),
        "model_config": asdict(model.config),
        "vocab_size": model.config.vocab_size,
        "special_tokens": {"pad": PAD, "bos": BOS, "eos": EOS},
        "opset": OPSET,
        **graphs,
        "tokenizer": ob.TOKENIZER_FILE,
        "parity": {
            "tolerance": TOLERANCE,
            "shapes": [{"sentences": b, "max_source_length": s} for b, s in PARITY_SHAPES],
            "max_abs_diff": parity,
        },
        "versions": versions(),
    }
    (folder / ob.METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.export", description=__doc__.splitlines()[0])
    required = {"required": True, "default": argparse.SUPPRESS}  # no default to show
    p.add_argument("--model", type=Path, help="our checkpoint or NVIDIA's", **required)
    p.add_argument(
        "--out-dir", type=Path, help="folder for the graphs, tokenizer and export.json", **required
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out-dir when it already holds files (only once the new export passed)",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    out = args.out_dir
    taken = out.exists() and (not out.is_dir() or any(out.iterdir()))
    cli.check_args(
        p,
        f"--out-dir {out} is a file" if out.exists() and not out.is_dir() else None,
        f"--out-dir {out} already holds files: give --overwrite to replace them"
        if taken and not args.overwrite
        else None,
    )


def export(args: argparse.Namespace) -> None:
    """Everything `main` does; a bad checkpoint raises CheckpointError, a failed check
    ExportError, both one line."""
    for package in ("onnx", "onnxruntime"):  # missing packages: before any work
        require(package)
    model, tokenizer = load_checkpoint(args.model, map_location="cpu")
    model = model.float().eval()
    out = args.out_dir.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = write_folder(model, tokenizer, args.model, tmp)
        if out.exists():  # --overwrite (checked): the old folder goes only now
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    figures = ", ".join(f"{k} {v:.1e}" for k, v in meta["parity"]["max_abs_diff"].items())
    print(f"wrote {out} (parity, max |onnx - torch|: {figures})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: export(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
