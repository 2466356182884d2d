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

With --triton-repo DIR the model also goes into a model repository for NVIDIA's Triton
Inference Server container (docs/DEPLOYMENT.md). It is checked here as text and files;
no Triton, GPU or TensorRT ran it here. <name> is --triton-name (bert_squad,
bert_classification by default):

    <name>_onnx/       config.pbtxt, 1/model.onnx (the graph above); onnxruntime_onnx
    <name>_libtorch/   config.pbtxt, 1/model.pt (TorchScript); pytorch_libtorch
    <name>_trt/        config.pbtxt, README.txt (the trtexec command that builds
                       1/model.plan from model.onnx inside the container), empty 1/;
                       tensorrt_plan. Left out with --triton-kind cpu: TensorRT needs a GPU

Each model gets the dynamic batcher (--triton-max-batch rows, --triton-preferred sizes,
--triton-queue-delay-us) and --triton-instances instances of --triton-kind. The inputs
are int64 [-1] (the batch axis is Triton's), the outputs fp32 [-1] (squad) or
[num_labels]. Triton's libtorch backend binds tensors by position, so <name>_libtorch
names them by the convention `<name>__<index>`: INPUT__0, INPUT__1, INPUT__2 are
input_ids, token_type_ids, attention_mask (forward's argument order) and OUTPUT__0,
OUTPUT__1 are start_logits, end_logits (classification: OUTPUT__0 is logits). The
TorchScript is traced on a padded example, for the reason above, with its embeddings
scripted (they follow the device of the inputs and refuse more tokens than positions:
`trace_torchscript`), and must reproduce PyTorch on CHECKS within --tolerance before
anything is written. A new export replaces
these folders; an earlier model.plan is deleted unless its model.onnx and trtexec command
are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import logging
import os
import re
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
from common.triton_repo import CONFIG, TensorSpec, config_text, write_model_repository

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
TORCHSCRIPT_FILE = "model.pt"
PLAN_FILE = "model.plan"
TRT_README = "README.txt"
TRITON_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}  # --triton-kind -> instance kind
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # in NVIDIA's Triton (and TensorRT) containers


@dataclass(frozen=True)
class Task:
    model_cls: type[BertPreTrainedModel]
    outputs: tuple[str, ...]


TASKS = {
    "squad": Task(BertForQuestionAnswering, ("start_logits", "end_logits")),
    "classification": Task(BertForSequenceClassification, ("logits",)),
}


@dataclass(frozen=True)
class TritonOptions:
    """The Triton models' settings: the --triton-* flags."""

    name: str | None = None  # prefix of the model folders; None: bert_<task>
    max_batch: int = 8  # rows per model call
    preferred: tuple[int, ...] = (4, 8)  # batch sizes the dynamic batcher aims for
    queue_delay_us: int = 100  # how long it waits for more requests
    kind: str = "gpu"  # a key of TRITON_KINDS
    instances: int = 1  # per model

    def prefix(self, task: str) -> str:
        return self.name or f"bert_{task}"

    def opt_batch(self) -> int:
        """The batch size a TensorRT plan is tuned for: the largest preferred one."""
        return max(self.preferred, default=self.max_batch)


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


def torch_outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The model's (or its TorchScript's) outputs for `batch` in the task's output order,
    as float32 arrays."""
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
    installed" log lines, its deprecation and axis-naming warnings, TorchScript's
    deprecation warnings, and onnxruntime's quantizer, which logs through the root logger
    (and would configure it to do so)."""
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
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
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


# ------------------------------------------------------------------------------- Triton


class _CheckedEmbeddings(torch.nn.Module):
    """BERT's embeddings, refusing more tokens than they have positions."""

    def __init__(self, embeddings: torch.nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.positions: int = embeddings.position_embeddings.num_embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.size(1) > self.positions:
            raise ValueError(
                f"{input_ids.size(1)} tokens, more than the model's {self.positions} positions"
            )
        return self.embeddings(input_ids, token_type_ids)


def trace_torchscript(model: BertPreTrainedModel, path: Path) -> None:
    """Save `model` to `path` as TorchScript, traced on a padded example.

    The tracer keeps Python values as constants. One is the answer of the "is anything
    padded?" test, hence the padded example. Another is the device of the position ids
    (`torch.arange(..., device=input_ids.device)`): traced, it would stay the CPU when
    Triton runs the model on a GPU. And BertModel's refusal of sequences longer than its
    positions would be dropped: on a GPU such a request would end in a device-side assert,
    which breaks the model instance. So the embeddings are scripted rather than traced,
    with that check: the device is read from the input and the check made at run time."""
    generator = torch.Generator().manual_seed(0)
    example = make_batch(model.config, *EXAMPLE, padded=True, generator=generator)
    embeddings = model.bert.embeddings
    try:
        with _quiet(), warnings.catch_warnings():
            # BertModel's padding test and length check, fixed on purpose: the mask is
            # always applied, and _CheckedEmbeddings checks the length.
            warnings.filterwarnings(
                "ignore",
                message="Converting a tensor to a Python boolean",
                category=torch.jit.TracerWarning,
            )
            model.bert.embeddings = torch.jit.script(_CheckedEmbeddings(embeddings))
            traced = torch.jit.trace(
                model, tuple(example[name] for name in INPUT_NAMES), check_trace=False
            )
            torch.jit.save(traced, str(path))
    finally:
        model.bert.embeddings = embeddings


def check_torchscript(
    path: Path,
    batches: list[dict[str, torch.Tensor]],
    references: list[list[np.ndarray]],
    tolerance: float,
) -> float:
    """The max abs difference from `references` of the TorchScript file at `path`, loaded
    back, on `batches`; `ExportError` when it exceeds `tolerance`."""
    with _quiet():
        module = torch.jit.load(str(path))
    diff = max(
        max_abs_diff(torch_outputs(module, b), r) for b, r in zip(batches, references, strict=True)
    )
    if not diff <= tolerance:  # NaN fails too
        raise ExportError(
            f"the TorchScript model differs from PyTorch by {diff:.3g} (max abs), more than "
            f"the tolerance {tolerance:g}"
        )
    return diff


def triton_problems(options: TritonOptions) -> list[str | None]:
    """What is wrong with the Triton settings, as messages naming the flags (None: fine);
    the numbers' ranges are config_text's to check."""
    larger = [size for size in options.preferred if size > options.max_batch]
    name = options.name
    return [
        f"--triton-name {name!r}: give letters, digits, '_', '.' and '-', starting with a "
        f"letter or a digit"
        if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)
        else None,
        f"--triton-kind {options.kind!r}: give one of {', '.join(TRITON_KINDS)}"
        if options.kind not in TRITON_KINDS
        else None,
        f"--triton-preferred: {larger[0]} is larger than --triton-max-batch {options.max_batch}"
        if larger
        else None,
    ]


def triton_models(
    task: str, num_labels: int | None, options: TritonOptions
) -> dict[str, dict[str, Any]]:
    """config_text's settings of each Triton model, by the suffix of its folder: "onnx",
    "libtorch" and, on GPUs, "trt". Checked here: `TritonConfigError` names a bad one."""
    kind = TRITON_KINDS[options.kind]
    dims = [-1] if task == "squad" else [num_labels]
    inputs = [TensorSpec(name, "TYPE_INT64", [-1]) for name in INPUT_NAMES]
    outputs = [TensorSpec(name, "TYPE_FP32", dims) for name in TASKS[task].outputs]
    batching = {
        "max_batch_size": options.max_batch,
        "preferred_batch_sizes": list(options.preferred),
        "max_queue_delay_us": options.queue_delay_us,
        "instance_count": options.instances,
        "instance_kind": kind,
    }
    models = {
        "onnx": {"platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs},
        "libtorch": {
            "platform": "pytorch_libtorch",
            # TorchScript keeps no tensor names: the backend goes by <name>__<index>.
            "inputs": [TensorSpec(f"INPUT__{i}", t.dtype, t.dims) for i, t in enumerate(inputs)],
            "outputs": [TensorSpec(f"OUTPUT__{i}", t.dtype, t.dims) for i, t in enumerate(outputs)],
            "parameters": {"INFERENCE_MODE": "true"},  # no autograd, as torch.inference_mode
        },
    }
    if options.kind == "gpu":  # TensorRT runs on GPUs only
        models["trt"] = {"platform": "tensorrt_plan", "inputs": inputs, "outputs": outputs}
    models = {suffix: {**settings, **batching} for suffix, settings in models.items()}
    for suffix, settings in models.items():
        config_text(f"{options.prefix(task)}_{suffix}", **settings)
    return models


def trtexec_args(name: str, options: TritonOptions, max_seq: int) -> list[str]:
    """The trtexec command building <name>_trt/1/model.plan from <name>_onnx/1/model.onnx,
    with the repository at /models: one profile from 1x1 to max batch x max_seq tokens,
    tuned for the largest preferred batch of full-length rows."""

    def shapes(rows: int, tokens: int) -> str:
        return ",".join(f"{tensor}:{rows}x{tokens}" for tensor in INPUT_NAMES)

    return [
        TRTEXEC,
        f"--onnx=/models/{name}_onnx/1/{MODEL_FILE}",
        f"--saveEngine=/models/{name}_trt/1/{PLAN_FILE}",
        f"--minShapes={shapes(1, 1)}",
        f"--optShapes={shapes(options.opt_batch(), max_seq)}",
        f"--maxShapes={shapes(options.max_batch, max_seq)}",
    ]


def trt_readme(name: str, options: TritonOptions, max_seq: int) -> str:
    """README.txt of <name>_trt: how to build its model.plan."""
    command = " \\\n        ".join(trtexec_args(name, options, max_seq))
    return f"""\
{name}_trt: the TensorRT engine of {name}_onnx, for Triton's tensorrt_plan platform

TensorRT was not available where bert.export wrote this folder, and a plan runs only with
the TensorRT version and the GPU model that built it. So build 1/model.plan on the serving
machine, in the NVIDIA Triton container release that will serve it, from the model
repository's folder (the one holding {name}_onnx and {name}_trt):

docker run --rm --gpus all -v "$PWD":/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
    {command}

The plan takes 1 to {options.max_batch} rows (--triton-max-batch) of 1 to {max_seq} tokens
(the model's positions), tuned for {options.opt_batch()} rows of {max_seq} tokens. It needs
TensorRT 10 or newer, which keeps the int64 inputs that config.pbtxt declares. --fp16
gives a half-precision plan: check its answers first. Until model.plan exists Triton
cannot load this model, and tritonserver stops at start-up unless given
--exit-on-error=false.
"""


def write_triton_repository(
    repo: Path,
    name: str,
    models: dict[str, dict[str, Any]],
    onnx_file: Path,
    torchscript_file: Path,
    readme: str,
) -> None:
    """Write `models` (from `triton_models`) under `repo` as <name>_<suffix>, each in place
    of an earlier export's folder. The onnx and libtorch models get their files; the trt
    model its config, `readme` and the empty version folder trtexec writes into, keeping
    an earlier model.plan only when built from the same model.onnx by the same command."""
    onnx_before = repo / f"{name}_onnx" / "1" / MODEL_FILE
    same_onnx = onnx_before.is_file() and filecmp.cmp(onnx_before, onnx_file, shallow=False)
    for suffix, files in (
        ("onnx", {MODEL_FILE: onnx_file}),
        ("libtorch", {TORCHSCRIPT_FILE: torchscript_file}),
    ):
        write_model_repository(
            repo, f"{name}_{suffix}", **models[suffix], files=files, overwrite=True
        )
    trt = repo / f"{name}_trt"
    if "trt" not in models:  # an earlier export's, which would serve another model
        if trt.is_dir():
            shutil.rmtree(trt)
        return
    readme_before = trt / TRT_README
    if not (
        same_onnx
        and readme_before.is_file()
        and readme_before.read_text(encoding="utf-8") == readme
    ):
        (trt / "1" / PLAN_FILE).unlink(missing_ok=True)
    (trt / "1").mkdir(parents=True, exist_ok=True)
    # Each file replaced atomically; the config last, when the folder is complete.
    for file, text in ((TRT_README, readme), (CONFIG, config_text(f"{name}_trt", **models["trt"]))):
        with atomic_write(trt / file, "w", encoding="utf-8") as f:
            f.write(text)


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
    triton_repo: str | os.PathLike | None = None,
    triton: TritonOptions | None = None,
) -> dict[str, Any]:
    """Export `checkpoint` for `task` ("squad" or "classification") to `out_dir` as the
    module docstring describes, and with `triton_repo` the Triton models (`triton`
    settings, the defaults when None) into that repository; returns the report written to
    export.json. Raises `ExportError` (nothing written under its final name) for an
    unusable checkpoint, a graph that onnxruntime cannot run, or a graph or TorchScript
    farther than `tolerance` from PyTorch."""
    triton = triton or TritonOptions()
    repo = None if triton_repo is None else Path(triton_repo)
    problems = option_problems(task, opset, num_labels) + (triton_problems(triton) if repo else [])
    problem = next((p for p in problems if p), None)
    if problem:
        raise ExportError(problem)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output folder {out} is a file")
    check_writable(out / MODEL_FILE)
    if repo is not None:  # where write_model_repository builds a model folder
        check_writable(temp_path(repo / f"{triton.prefix(task)}_onnx"), "--triton-repo")
    model = load_model(checkpoint, task, num_labels)
    labels = model.num_labels if task == "classification" else None
    models = triton_models(task, labels, triton) if repo else {}
    outputs = TASKS[task].outputs
    generator = torch.Generator().manual_seed(1)
    batches = [make_batch(model.config, *shape, generator=generator) for shape in CHECKS]
    references = [torch_outputs(model, b) for b in batches]

    out.mkdir(parents=True, exist_ok=True)
    fp32_tmp, int8_tmp = temp_path(out / MODEL_FILE), temp_path(out / INT8_FILE)
    torchscript_tmp = temp_path(out / TORCHSCRIPT_FILE)  # until copied into the repository
    try:
        export_onnx(model, outputs, fp32_tmp, opset)
        inputs, graph_outputs, checks = verify_graph(
            fp32_tmp, outputs, batches, references, tolerance
        )
        int8_report = None
        if int8:
            quantize_int8(fp32_tmp, int8_tmp)
            int8_report = measure_int8(int8_tmp, task, batches, references)
        if repo is not None:
            trace_torchscript(model, torchscript_tmp)
            torchscript_diff = check_torchscript(torchscript_tmp, batches, references, tolerance)
        size = fp32_tmp.stat().st_size
        replace_durably(fp32_tmp, out / MODEL_FILE)
        if int8:
            replace_durably(int8_tmp, out / INT8_FILE)
        else:
            (out / INT8_FILE).unlink(missing_ok=True)
        if repo is not None:
            name = triton.prefix(task)
            readme = trt_readme(name, triton, model.config.max_position_embeddings)
            write_triton_repository(repo, name, models, out / MODEL_FILE, torchscript_tmp, readme)
    except ExportError as exc:
        raise ExportError(f"{checkpoint}: {exc}; nothing written to {out}") from exc
    finally:
        fp32_tmp.unlink(missing_ok=True)
        int8_tmp.unlink(missing_ok=True)
        torchscript_tmp.unlink(missing_ok=True)

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
        "triton": None
        if repo is None
        else {
            "repository": str(repo.resolve()),
            "models": [f"{name}_{suffix}" for suffix in models],
            "torchscript": {"max_abs_diff": torchscript_diff, "traced_on": "padded example"},
            "trtexec": trtexec_args(name, triton, model.config.max_position_embeddings)
            if "trt" in models
            else None,
        },
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
        help="largest max abs difference from PyTorch accepted for the fp32 graph "
        "(and the TorchScript of --triton-repo)",
    )
    t = p.add_argument_group("Triton model repository (for NVIDIA's Triton container)")
    t.add_argument(
        "--triton-repo",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write <name>_onnx, <name>_libtorch and <name>_trt there",
    )
    t.add_argument(
        "--triton-name", default=None, help="<name>, the models' prefix (None: bert_<task>)"
    )
    t.add_argument(
        "--triton-max-batch", type=cli.positive_int, default=8, help="rows per model call"
    )
    t.add_argument(
        "--triton-preferred",
        type=batch_sizes,
        default="4,8",
        help="batch sizes the dynamic batcher aims for, comma-separated ('' for none)",
    )
    t.add_argument(
        "--triton-queue-delay-us",
        type=cli.nonnegative_int,
        default=100,
        help="how long the dynamic batcher waits for more requests (microseconds)",
    )
    t.add_argument(
        "--triton-kind",
        choices=tuple(TRITON_KINDS),
        default="gpu",
        help="where the instances run (cpu: no <name>_trt)",
    )
    t.add_argument("--triton-instances", type=cli.positive_int, default=1, help="per model")
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def batch_sizes(value: str) -> tuple[int, ...]:
    """argparse type: positive integers, comma-separated; "" for none."""
    return tuple(cli.positive_int(v.strip()) for v in value.split(",") if v.strip())


def triton_options(args: argparse.Namespace) -> TritonOptions:
    return TritonOptions(
        name=args.triton_name,
        max_batch=args.triton_max_batch,
        preferred=args.triton_preferred,
        queue_delay_us=args.triton_queue_delay_us,
        kind=args.triton_kind,
        instances=args.triton_instances,
    )


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations refused before the checkpoint is read."""
    cli.check_args(
        p,
        *option_problems(args.task, args.opset, args.num_labels),
        *triton_problems(triton_options(args)),
    )


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
    triton = report["triton"]
    if triton:
        lines.append(
            f"wrote {', '.join(triton['models'])} to {triton['repository']}: the TorchScript "
            f"reproduces PyTorch to {triton['torchscript']['max_abs_diff']:.2g} max abs difference"
        )
        if triton["trtexec"]:
            trt = next(m for m in triton["models"] if m.endswith("_trt"))
            lines.append(
                f"{trt}: build 1/{PLAN_FILE} inside NVIDIA's Triton container with the command "
                f"in {Path(triton['repository']) / trt / TRT_README}"
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
        triton_repo=args.triton_repo,
        triton=triton_options(args),
    )
    print(summary(report, args.output_dir), flush=True)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
