"""GLUE tasks for BERT: CoLA, MRPC, MNLI and SST-2 from their TSV files, features and
metrics.

File layouts, as GLUE distributes them (tab-separated, no quoting):

    CoLA   train/dev: no header; source, label, original label, sentence
           test: header "index  sentence"
    SST-2  train/dev: header "sentence  label"; test: "index  sentence"
    MRPC   train/dev: header "Quality  #1 ID  #2 ID  #1 String  #2 String"
           test: header "index  #1 ID  #2 ID  #1 String  #2 String"
    MNLI   train (12 columns), dev_matched/dev_mismatched (16 columns): header; sentence1
           in column 8, sentence2 in column 9, gold_label last
           test_matched/test_mismatched: header, sentence1 and sentence2 in 8 and 9

Every row must have as many columns as the header (CoLA train/dev: 4) and a known label.
A row that does not is reported with file and line: skipped and counted in training,
an error in evaluation and prediction (their outputs keep one line per input).

Metrics: CoLA Matthews correlation, (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
(0 when a factor is 0); MRPC accuracy and F1 of the positive class, 2TP / (2TP + FP +
FN); MNLI accuracy on dev_matched and dev_mismatched; SST-2 accuracy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bert.tokenization import FullTokenizer
from common.atomic import atomic_write
from common.errors import UserError


class GlueError(UserError, ValueError):
    """A GLUE file is missing, not UTF-8, or has a malformed row where none may be skipped."""


@dataclass(frozen=True)
class TaskSpec:
    name: str  # as GLUE spells it
    labels: tuple[str, ...]
    dev_files: tuple[str, ...]
    test_files: tuple[str, ...]
    submissions: tuple[str, ...]  # prediction file per test file (GLUE's submission names)
    has_header: bool  # train/dev
    columns: int | None  # train/dev columns without a header
    text_a: int
    text_b: int | None
    label: int
    test_text_a: int
    test_text_b: int | None


TASKS = {
    "cola": TaskSpec(
        "CoLA", ("0", "1"), ("dev.tsv",), ("test.tsv",), ("CoLA.tsv",),
        has_header=False, columns=4, text_a=3, text_b=None, label=1,
        test_text_a=1, test_text_b=None,
    ),
    "sst-2": TaskSpec(
        "SST-2", ("0", "1"), ("dev.tsv",), ("test.tsv",), ("SST-2.tsv",),
        has_header=True, columns=None, text_a=0, text_b=None, label=1,
        test_text_a=1, test_text_b=None,
    ),
    "mrpc": TaskSpec(
        "MRPC", ("0", "1"), ("dev.tsv",), ("test.tsv",), ("MRPC.tsv",),
        has_header=True, columns=None, text_a=3, text_b=4, label=0,
        test_text_a=3, test_text_b=4,
    ),
    "mnli": TaskSpec(
        "MNLI", ("contradiction", "entailment", "neutral"),
        ("dev_matched.tsv", "dev_mismatched.tsv"),
        ("test_matched.tsv", "test_mismatched.tsv"), ("MNLI-m.tsv", "MNLI-mm.tsv"),
        has_header=True, columns=None, text_a=8, text_b=9, label=-1,
        test_text_a=8, test_text_b=9,
    ),
}  # fmt: skip


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name.lower()]
    except KeyError:
        known = ", ".join(t.name for t in TASKS.values())
        raise GlueError(f"unknown GLUE task {name!r}; choose one of {known}") from None


@dataclass
class GlueExample:
    line: int  # 1-based line of the file
    text_a: str
    text_b: str | None
    label: int | None  # index into the task's labels; None in test files
    index: str | None = None  # test files: the row's index column


@dataclass
class GlueData:
    examples: list[GlueExample]
    skipped: list[tuple[int, str]]  # (line, reason)

    def skipped_summary(self, path: str | os.PathLike, limit: int = 10) -> str | None:
        if not self.skipped:
            return None
        shown = "; ".join(f"line {line} ({reason})" for line, reason in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} rows of {path}: {shown}{more}"


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text without the line break) of every non-empty line."""
    if not path.is_file():
        raise GlueError(f"GLUE file {path} does not exist")
    out = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise GlueError(f"{path}, line {number}: not UTF-8 ({exc.reason})") from None
            if text.strip():
                out.append((number, text))
    if not out:
        raise GlueError(f"GLUE file {path} is empty")
    return out


def read_tsv(path: str | os.PathLike, task: TaskSpec, split: str) -> GlueData:
    """Rows of a train, dev or test file of `task` (module docstring for the rules)."""
    path = Path(path)
    lines = _lines(path)
    test = split == "test"
    if test or task.has_header:
        (_, header), lines = lines[0], lines[1:]
        columns = len(header.split("\t"))
    else:
        columns = task.columns
    data = GlueData([], [])
    for number, text in lines:
        fields = text.split("\t")
        problem = None
        if len(fields) != columns:
            problem = f"{len(fields)} columns where {columns} are expected"
        elif not test and fields[task.label] not in task.labels:
            problem = f"label {fields[task.label]!r} is not one of {', '.join(task.labels)}"
        if problem is not None:
            if split != "train":
                raise GlueError(f"{path}, line {number}: {problem}")
            data.skipped.append((number, problem))
            continue
        if test:
            a, b = task.test_text_a, task.test_text_b
            example = GlueExample(number, fields[a], None if b is None else fields[b], None)
            example.index = fields[0]
        else:
            b = task.text_b
            label = task.labels.index(fields[task.label])
            example = GlueExample(
                number, fields[task.text_a], None if b is None else fields[b], label
            )
        data.examples.append(example)
    return data


def _truncate_pair(a: list[str], b: list[str], limit: int) -> None:
    """Drop tokens from the end of the longer list until both fit `limit` together."""
    while len(a) + len(b) > limit:
        (a if len(a) >= len(b) else b).pop()


def make_tensors(
    examples: Sequence[GlueExample], tokenizer: FullTokenizer, max_seq_length: int = 128
) -> dict[str, torch.Tensor]:
    """[CLS] a [SEP] (b [SEP]), padded to [N, max_seq_length], with labels [N] when every
    example has one."""
    n = len(examples)
    input_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    token_type_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    attention_mask = torch.zeros(n, max_seq_length, dtype=torch.long)
    for i, example in enumerate(examples):
        a = tokenizer.tokenize(example.text_a)
        b = tokenizer.tokenize(example.text_b) if example.text_b is not None else []
        _truncate_pair(a, b, max_seq_length - (3 if example.text_b is not None else 2))
        tokens = ["[CLS]", *a, "[SEP]"]
        types = [0] * len(tokens)
        if example.text_b is not None:
            tokens += [*b, "[SEP]"]
            types += [1] * (len(b) + 1)
        input_ids[i, : len(tokens)] = torch.tensor(tokenizer.convert_tokens_to_ids(tokens))
        token_type_ids[i, : len(tokens)] = torch.tensor(types)
        attention_mask[i, : len(tokens)] = 1
    tensors = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }
    if examples and all(e.label is not None for e in examples):
        tensors["labels"] = torch.tensor([e.label for e in examples])
    return tensors


# ------------------------------------------------------------------------------- metrics


def _confusion(predictions: np.ndarray, labels: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, TN, FP, FN) with 1 as the positive class."""
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    return int((p & y).sum()), int((~p & ~y).sum()), int((p & ~y).sum()), int((~p & y).sum())


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_positive(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1: 2TP / (2TP + FP + FN); 0 without true positives."""
    tp, _, fp, fn = _confusion(predictions, labels)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation of binary predictions (0 when it is undefined)."""
    tp, tn, fp, fn = _confusion(predictions, labels)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def task_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's GLUE metrics."""
    if task.name == "CoLA":
        return {"mcc": matthews_corrcoef(predictions, labels)}
    if task.name == "MRPC":
        return {"accuracy": accuracy(predictions, labels), "f1": f1_positive(predictions, labels)}
    return {"accuracy": accuracy(predictions, labels)}


def write_predictions(
    path: str | os.PathLike, task: TaskSpec, examples: Sequence[GlueExample], predicted: np.ndarray
) -> Path:
    """GLUE's submission format: header "index<TAB>prediction", one row per test row."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for example, label in zip(examples, predicted, strict=True):
            f.write(f"{example.index}\t{task.labels[int(label)]}\n")
    return path
