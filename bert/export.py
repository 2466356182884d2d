"""Export a fine-tuned BERT (SQuAD or sequence classification) to ONNX, checked against PyTorch.

    python -m bert.export results/squad exported/squad --task squad --int8
    python -m bert.export results/glue/MRPC exported/mrpc --task classification

The checkpoint is anything `from_pretrained` reads (our save_pretrained folders, Hugging
Face folders, a .pt file with its config beside it) whose task head was fine-tuned: a
head that would start from random values (a pre-training checkpoint, the other task's
checkpoint, another number of labels) is refused. OUTPUT_DIR receives:

    model.onnx       fp32; int64 inputs input_ids, token_type_ids, attention_mask
                     [batch, sequence] (1 = token, 0 = padding); outputs start_logits,
                     end_logits [batch, sequence] (squad) or logits [batch, num_labels]
    model.int8.onnx  with --int8: onnxruntime's dynamic int8 quantization of it (without
                     --int8 one left by an earlier export is deleted: it is another model's)
    vocab.txt        the checkpoint's vocabulary, when it has one
    export.json      input and output names and shapes, opset, versions, the source, the
                     longest sequence (max_seq_length) and the figures below

The graph comes from the torch.export-based exporter (`torch.onnx.export(dynamo=True)`).
The TorchScript exporter also works with torch 2.13, but it is deprecated, and its tracer
records the answer of the model's "is anything padded?" test (`bert.model._no_padding`)
for the example it runs: an example without padding gives a graph with no
attention_mask input at all. torch.export keeps the mask in any case; the example is
padded all the same, and the graph's inputs are checked by name, type and dynamic axes.

Before anything is written under its own name, the graph passes `onnx.checker` and
onnxruntime (CPU, one thread) must reproduce PyTorch on CHECKS: random tokens, padded
and unpadded, batches of 1, 3 and 16, two lengths, to within --tolerance (max abs
difference of every output). Otherwise the run ends with one line and the temporary
files are deleted. For --int8 the same batches measure its drift (max abs difference
from PyTorch fp32) and argmax agreement (the predicted label of each row; for SQuAD the
start and the end position of each row, among its tokens).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bert.model import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertPreTrainedModel,
)
from common import cli
from common.atomic import atomic_write, check_writable, replace_durably, temp_path
from common.errors import UserError
from common.onnxrt import cpu_session, versions

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "export.json"
DEFAULT_OPSET = 18  # the oldest opset the torch.export-based exporter writes directly
# From opset 23 the exporter writes attention as ONNX's Attention operator, whose CPU
# kernel in onnxruntime 1.32 refuses BERT's [B, 1, 1, S] padding mask (it wants [.., S, S]).
MAX_OPSET = 22
TOLERANCE = 1e-4
# Parity batches (rows, tokens, padded); lengths are capped at the model's positions.
CHECKS = ((1, 11, False), (1, 37, True), (3, 11, True), (3, 37, False), (16, 37, True))
EXAMPLE = (2, 16)  # the export's (rows, tokens): torch.export fixes an axis of size 1
# Weights quantized for --int8: the linear layers and the embedding tables. Named because
# the default list also holds "Attention", meant for Microsoft's fused operator: applied
# to ONNX's own Attention (opset 23 and newer) it writes a graph onnxruntime refuses.
INT8_OPS = ("MatMul", "Gather")


@dataclass(frozen=True)
class Task:
    model_cls: type[BertPreTrainedModel]
    outputs: tuple[str, ...]


TASKS = {
    "squad": Task(BertForQuestionAnswering, ("start_logits", "end_logits")),
    "classification": Task(BertForSequenceClassification, ("logits",)),
}


class ExportError(UserError):
    """A checkpoint that cannot be exported, or a graph that does not reproduce it."""


# ------------------------------------------------------------------------------ the model


def load_model(
    checkpoint: str | os.PathLike, task: str, num_labels: int | None = None
) -> BertPreTrainedModel:
    """The task's model from `checkpoint` in eval mode; `ExportError` when any weight
    would be initialised afresh rather than read from the checkpoint."""
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    # A head initialised afresh is logged as a warning; here it is the error below.
    try:
        with _log_level("bert.checkpoints", logging.ERROR):
            model = TASKS[task].model_cls.from_pretrained(checkpoint, **kwargs)
    except ValueError as exc:  # config files: missing, not JSON, inconsistent values
        raise ExportError(f"{checkpoint}: {exc}") from exc
    fresh = model.load_report.newly_initialized
    if fresh:
        labels = f" with {num_labels} labels (--num_labels)" if num_labels else ""
        raise ExportError(
            f"{checkpoint} is not a checkpoint fine-tuned for --task {task}{labels}: it lacks "
            f"{', '.join(fresh)} (or holds them with another shape), which would be random"
        )
    return model


def make_batch(
    config: BertConfig, rows: int, tokens: int, padded: bool, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random inputs [rows, tokens] (capped at the model's positions), int64: sentence A
    then B; when `padded`, row i ends in (i + 1) / (rows + 2) of padding ([PAD] id 0)."""
    tokens = min(tokens, config.max_position_embeddings)
    input_ids = torch.randint(0, config.vocab_size, (rows, tokens), generator=generator)
    token_type_ids = (torch.arange(tokens) >= tokens // 2).long().repeat(rows, 1)
    attention_mask = torch.ones(rows, tokens, dtype=torch.long)
    if padded:
        for row in range(rows):
            keep = max(tokens - (row + 1) * tokens // (rows + 2), 1)
            attention_mask[row, keep:] = 0
    padding = attention_mask == 0
    input_ids[padding] = 0
    token_type_ids[padding] = 0
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }


def torch_outputs(model: BertPreTrainedModel, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The model's outputs for `batch` in the task's output order, as float32 arrays."""
    with torch.inference_mode():
        out = model(*(batch[name] for name in INPUT_NAMES))
    outputs = out if isinstance(out, tuple) else (out,)
    return [o.float().numpy() for o in outputs]


# ------------------------------------------------------------------------------ the graph


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """Logger `name` at `level` for the duration."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence notices that say nothing about the model: the exporter's "torchvision is not
    installed" log lines, its deprecation and axis-naming warnings, and onnxruntime's
    quantizer, which logs through the root logger (and would configure it to do so)."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    if not root.handlers:
        root.addHandler(placeholder)
    try:
        with (
            _log_level("torch.onnx._internal.exporter._registration", logging.ERROR),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message=r"# The axis name")
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        root.removeHandler(placeholder)


def export_onnx(
    model: BertPreTrainedModel, outputs: tuple[str, ...], path: Path, opset: int
) -> None:
    """Write `model` as ONNX to `path` (weights inside the file), with dynamic batch and
    sequence axes, traced on a padded example."""
    generator = torch.Generator().manual_seed(0)
    example = make_batch(model.config, *EXAMPLE, padded=True, generator=generator)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    with _quiet():
        torch.onnx.export(
            model,
            tuple(example[name] for name in INPUT_NAMES),
            str(path),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            opset_version=opset,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            external_data=False,
            verbose=False,
        )


def ort_session(path: Path) -> Any:
    return cpu_session(path, threads=1)


def describe_graph(session: Any) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a session: [{"name", "dtype", "shape"}], with a dynamic axis
    by its name and a fixed one by its size."""

    def entry(arg: Any) -> dict:
        dtype = arg.type.removeprefix("tensor(").removesuffix(")")
        return {"name": arg.name, "dtype": dtype, "shape": list(arg.shape)}

    return [entry(a) for a in session.get_inputs()], [entry(a) for a in session.get_outputs()]


def graph_problem(inputs: list[dict], outputs: list[dict], names: tuple[str, ...]) -> str | None:
    """What is wrong with an exported graph's interface, or None: the inputs must be
    INPUT_NAMES, int64 [batch, sequence]; the outputs `names`, first axis batch."""
    got = [i["name"] for i in inputs]
    if got != list(INPUT_NAMES):
        return f"its inputs are {got}, not {list(INPUT_NAMES)}"
    for i in inputs:
        if i["dtype"] != "int64" or i["shape"] != ["batch", "sequence"]:
            return f"input {i['name']} is {i['dtype']} {i['shape']}, not int64 [batch, sequence]"
    got = [o["name"] for o in outputs]
    if got != list(names):
        return f"its outputs are {got}, not {list(names)}"
    for o in outputs:
        if o["shape"][:1] != ["batch"]:
            return f"output {o['name']} has shape {o['shape']}, without a dynamic batch axis"
    return None


def ort_outputs(session: Any, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return session.run(None, {name: batch[name].numpy() for name in INPUT_NAMES})


def run_graph(path: Path, batches: list[dict[str, torch.Tensor]]) -> tuple[Any, list]:
    """(session, outputs per batch) for the graph at `path`; `ExportError` when onnxruntime
    cannot load or run it."""
    import onnxruntime as ort

    try:
        session = ort_session(path)
        return session, [ort_outputs(session, b) for b in batches]
    # onnxruntime's errors (Fail, InvalidGraph, ...) have no common base below Exception.
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"onnxruntime {ort.__version__} cannot run the exported graph: {first}"
        ) from exc


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))


def argmax_agreement(
    task: str,
    outputs: list[list[np.ndarray]],
    references: list[list[np.ndarray]],
    batches: list[dict[str, torch.Tensor]],
) -> tuple[int, int]:
    """(decisions that agree, decisions): the label of each row, or for SQuAD the start
    and the end position of each row among its tokens (padding is never an answer)."""
    agree = total = 0
    for out, ref, batch in zip(outputs, references, batches, strict=True):
        if task == "classification":
            agree += int((out[0].argmax(-1) == ref[0].argmax(-1)).sum())
            total += len(ref[0])
            continue
        padding = batch["attention_mask"].numpy() == 0
        for o, r in zip(out, ref, strict=True):
            masked = [np.where(padding, -np.inf, x) for x in (o, r)]
            agree += int((masked[0].argmax(-1) == masked[1].argmax(-1)).sum())
            total += len(r)
    return agree, total


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic quantization of `src` (int8 weights, activations quantized
    per batch at run time) to `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS))


def verify_graph(
    path: Path,
    names: tuple[str, ...],
    batches: list[dict[str, torch.Tensor]],
    references: list[list[np.ndarray]],
    tolerance: float,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(inputs, outputs, parity per batch) of the fp32 graph at `path` once it passes
    onnx.checker, has the expected interface (`graph_problem`) and reproduces
    `references` within `tolerance`; `ExportError` saying which check failed."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    session, results = run_graph(path, batches)
    inputs, outputs = describe_graph(session)
    problem = graph_problem(inputs, outputs, names)
    if problem:
        raise ExportError(f"the exported graph is unusable: {problem}")
    checks = [
        {
            "rows": b["input_ids"].shape[0],
            "tokens": b["input_ids"].shape[1],
            "padded": bool((b["attention_mask"] == 0).any()),
            "max_abs_diff": max_abs_diff(o, r),
        }
        for b, o, r in zip(batches, results, references, strict=True)
    ]
    failed = [c for c in checks if not c["max_abs_diff"] <= tolerance]  # NaN fails too
    if failed:
        worst = failed[0]
        padded = ", padded" if worst["padded"] else ""
        raise ExportError(
            f"onnxruntime's outputs differ from PyTorch's by {worst['max_abs_diff']:.3g} "
            f"(max abs, batch {worst['rows']}x{worst['tokens']}{padded}), more than the "
            f"tolerance {tolerance:g}"
        )
    return inputs, outputs, checks


def measure_int8(
    path: Path,
    task: str,
    batches: list[dict[str, torch.Tensor]],
    references: list[list[np.ndarray]],
) -> dict[str, Any]:
    """The int8 graph's drift from PyTorch fp32 (max abs difference) and argmax agreement
    (percent of decisions) on `batches`."""
    _, quantized = run_graph(path, batches)
    agree, decisions = argmax_agreement(task, quantized, references, batches)
    return {
        "file": INT8_FILE,
        "bytes": path.stat().st_size,
        "quantized_ops": list(INT8_OPS),
        "max_abs_diff": max(max_abs_diff(q, r) for q, r in zip(quantized, references, strict=True)),
        "argmax_agreement": 100.0 * agree / decisions,
        "decisions": decisions,
    }


# ------------------------------------------------------------------------------- the API


def option_problems(task: str, opset: int, num_labels: int | None) -> list[str | None]:
    """What is wrong with the export options, as messages naming the flags (None: fine)."""
    return [
        f"--task {task!r}: give one of {', '.join(TASKS)}" if task not in TASKS else None,
        f"--opset {opset}: give {DEFAULT_OPSET} to {MAX_OPSET} (the exporter writes "
        f"{DEFAULT_OPSET} and newer; from 23 attention becomes ONNX's Attention operator, "
        f"which onnxruntime's CPU kernel cannot run with BERT's padding mask)"
        if not DEFAULT_OPSET <= opset <= MAX_OPSET
        else None,
        "--num_labels is for --task classification"
        if num_labels is not None and task != "classification"
        else None,
    ]


def export_bert(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    task: str = "squad",
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    num_labels: int | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Export `checkpoint` for `task` ("squad" or "classification") to `out_dir` as the
    module docstring describes; returns the report written to export.json. Raises
    `ExportError` (nothing written under its final name) for an unusable checkpoint, a
    graph that onnxruntime cannot run, or one farther than `tolerance` from PyTorch."""
    problem = next((p for p in option_problems(task, opset, num_labels) if p), None)
    if problem:
        raise ExportError(problem)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output folder {out} is a file")
    check_writable(out / MODEL_FILE)
    model = load_model(checkpoint, task, num_labels)
    outputs = TASKS[task].outputs
    generator = torch.Generator().manual_seed(1)
    batches = [make_batch(model.config, *shape, generator=generator) for shape in CHECKS]
    references = [torch_outputs(model, b) for b in batches]

    out.mkdir(parents=True, exist_ok=True)
    fp32_tmp, int8_tmp = temp_path(out / MODEL_FILE), temp_path(out / INT8_FILE)
    try:
        export_onnx(model, outputs, fp32_tmp, opset)
        inputs, graph_outputs, checks = verify_graph(
            fp32_tmp, outputs, batches, references, tolerance
        )
        int8_report = None
        if int8:
            quantize_int8(fp32_tmp, int8_tmp)
            int8_report = measure_int8(int8_tmp, task, batches, references)
        size = fp32_tmp.stat().st_size
        replace_durably(fp32_tmp, out / MODEL_FILE)
        if int8:
            replace_durably(int8_tmp, out / INT8_FILE)
        else:
            (out / INT8_FILE).unlink(missing_ok=True)
    except ExportError as exc:
        raise ExportError(f"{checkpoint}: {exc}; nothing written to {out}") from exc
    finally:
        fp32_tmp.unlink(missing_ok=True)
        int8_tmp.unlink(missing_ok=True)

    vocab = Path(checkpoint) / "vocab.txt"
    if vocab.is_file() and vocab.resolve() != (out / "vocab.txt").resolve():
        with open(vocab, "rb") as src, atomic_write(out / "vocab.txt") as dst:
            shutil.copyfileobj(src, dst)
    report = {
        "task": task,
        "architecture": type(model).__name__,
        **({"num_labels": model.num_labels} if task == "classification" else {}),
        "source": str(Path(checkpoint).resolve()),
        "model": MODEL_FILE,
        "bytes": size,
        "vocab": "vocab.txt" if (out / "vocab.txt").is_file() else None,
        "max_seq_length": model.config.max_position_embeddings,
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "inputs": inputs,
        "outputs": graph_outputs,
        "parity": {
            "tolerance": tolerance,
            "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "runtime": "onnxruntime CPUExecutionProvider, 1 thread",
            "batches": checks,
        },
        "int8": int8_report,
        "versions": versions(),
    }
    with atomic_write(out / REPORT_FILE, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    return report


# ------------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.export", description=__doc__.splitlines()[0])
    p.add_argument(
        "checkpoint",
        type=Path,
        help="the fine-tuned model: a save_pretrained or Hugging Face folder, or a .pt file "
        "with config.json beside it",
    )
    p.add_argument("output_dir", type=Path, help="folder for model.onnx and export.json")
    p.add_argument("--task", choices=tuple(TASKS), required=True, help="the model's head")
    p.add_argument(
        "--num_labels",
        type=cli.positive_int,
        default=None,
        help="classification: the labels the checkpoint was fine-tuned with; when not "
        "given: its classifier's",
    )
    p.add_argument(
        "--opset",
        type=cli.positive_int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {DEFAULT_OPSET} to {MAX_OPSET}",
    )
    p.add_argument(
        "--int8", action="store_true", help=f"also write {INT8_FILE}, dynamically quantized"
    )
    p.add_argument(
        "--tolerance",
        type=cli.positive_float,
        default=TOLERANCE,
        help="largest max abs difference from PyTorch accepted for the fp32 graph",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations refused before the checkpoint is read."""
    cli.check_args(p, *option_problems(args.task, args.opset, args.num_labels))


def summary(report: dict[str, Any], out_dir: Path) -> str:
    """What was written, with the parity and int8 figures, for the terminal."""
    parity = report["parity"]
    lines = [
        f"wrote {out_dir / report['model']} (opset {report['opset']}, "
        f"{report['bytes'] / 2**20:.1f} MiB): onnxruntime reproduces PyTorch to "
        f"{parity['max_abs_diff']:.2g} max abs difference (tolerance {parity['tolerance']:g}) "
        f"on {len(parity['batches'])} batches, padded and unpadded"
    ]
    int8 = report["int8"]
    if int8:
        lines.append(
            f"wrote {out_dir / int8['file']} ({int8['bytes'] / 2**20:.1f} MiB): drift "
            f"{int8['max_abs_diff']:.3g} max abs from PyTorch fp32, argmax agreement "
            f"{int8['argmax_agreement']:.1f}% of {int8['decisions']} decisions"
        )
    lines.append(f"wrote {out_dir / REPORT_FILE}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    report = export_bert(
        args.checkpoint,
        args.output_dir,
        task=args.task,
        opset=args.opset,
        int8=args.int8,
        num_labels=args.num_labels,
        tolerance=args.tolerance,
    )
    print(summary(report, args.output_dir), flush=True)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
