"""ChemProt chemical-protein relations for BERT, as the BLUE benchmark prepares them:
its TSV files, entity markers as single WordPiece tokens, features, and the metric.

File layout (BLUE's preprocessed ChemProt, read as NVIDIA's BioBERT run_re.py reads it):
tab-separated, no quoting, a header line, then one candidate pair a line:

    index                sentence                                               label
    10064839.T1.T22      @CHEMICAL$ inhibited @GENE$ activity in vitro .        CPR:4

The chemical is replaced by @CHEMICAL$, the gene or protein by @GENE$, and a mention
that is both by @CHEM-GENE$. Labels: CPR:3 (up-regulator, activator), CPR:4
(down-regulator, inhibitor), CPR:5 (agonist), CPR:6 (antagonist), CPR:9 (substrate,
product of) and "false" (no relation of these five). train.tsv and dev.tsv must have
three columns and a known label on every row; test.tsv has either two columns (index,
sentence) or three, and a labelled test file is scored too. A row with the wrong number
of columns or an unknown label is an error naming the file and line.

Markers. The reference lets WordPiece cut "@GENE$" into "@", "gene", "$". Here each
marker is one token: the sentence is split at the markers, the text between them is
tokenized as usual, and the markers become the vocabulary's first three [unusedN]
tokens by N (BERT's uncased vocabularies: [unused0], [unused1], [unused2] for
@CHEMICAL$, @GENE$, @CHEM-GENE$; the cased ones, BioBERT's among them, have no
[unused0] and give [unused1] to [unused3]). Those ids exist in every BERT embedding
table and were never seen in pre-training, so fine-tuning gives them their meaning
without resizing the model; the mapping depends only on vocab.txt, which the
fine-tuned model keeps. A vocabulary with fewer than three [unusedN] tokens is refused.

Metric (BLUE's and NVIDIA's re_eval.py: micro-average over the five CPR classes):
TP = rows whose gold label is a CPR class and predicted as it; FP = rows predicted as a
CPR class other than their gold label ("false" gold included); FN = rows with a CPR
gold label predicted as anything else ("false" included). Precision TP / (TP + FP),
recall TP / (TP + FN), F1 2TP / (2TP + FP + FN); each is 0, not NaN, when its
denominator is 0. Per class the same counts restricted to that class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bert.data import utf8_lines
from bert.tokenization import FullTokenizer
from common.atomic import atomic_write
from common.errors import UserError

LABELS = ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false")  # NVIDIA's head order
NEGATIVE = "false"
POSITIVE = tuple(label for label in LABELS if label != NEGATIVE)
MARKERS = ("@CHEMICAL$", "@GENE$", "@CHEM-GENE$")
_MARKER_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in MARKERS) + ")")
_UNUSED = re.compile(r"\[unused(\d+)\]")


class ChemProtError(UserError, ValueError):
    """A ChemProt file is missing or malformed, or the vocabulary cannot hold the markers."""


@dataclass
class Example:
    line: int  # 1-based line of the file
    index: str  # the row's index column (BLUE: PMID.chemical.gene)
    sentence: str
    label: int | None  # index into LABELS; None in an unlabelled test file


# ------------------------------------------------------------------------------ reading


def read_tsv(path: str | os.PathLike, split: str) -> list[Example]:
    """The rows of train.tsv, dev.tsv ("train", "dev": labelled) or test.tsv ("test":
    labelled or not, as its header says); see the module docstring for the rules."""
    path = Path(path)
    if not path.is_file():
        raise ChemProtError(f"ChemProt file {path} does not exist")
    lines = [(n, text) for n, text in enumerate(utf8_lines(path), start=1) if text.strip()]
    if not lines:
        raise ChemProtError(f"ChemProt file {path} is empty")
    (number, header), rows = lines[0], lines[1:]
    columns = header.split("\t")
    allowed = (2, 3) if split == "test" else (3,)
    if len(columns) == 3 and columns[2] in LABELS:
        raise ChemProtError(
            f"{path}, line {number}: a data row where the header index<TAB>sentence<TAB>label "
            "is expected (BLUE's files start with one)"
        )
    if len(columns) not in allowed:
        expected = " or ".join(map(str, allowed))
        raise ChemProtError(
            f"{path}, line {number}: the header has {len(columns)} columns where {expected} "
            "are expected (index, sentence, label)"
        )
    if not rows:
        raise ChemProtError(f"ChemProt file {path} has a header but no rows")
    examples = []
    for number, text in rows:
        fields = text.split("\t")
        if len(fields) != len(columns):
            raise ChemProtError(
                f"{path}, line {number}: {len(fields)} columns where {len(columns)} are expected"
            )
        label = None
        if len(fields) == 3:
            if fields[2] not in LABELS:
                raise ChemProtError(
                    f"{path}, line {number}: label {fields[2]!r} is not one of {', '.join(LABELS)}"
                )
            label = LABELS.index(fields[2])
        examples.append(Example(number, fields[0], fields[1], label))
    return examples


# ----------------------------------------------------------------------------- features


def marker_tokens(tokenizer: FullTokenizer) -> dict[str, str]:
    """Marker -> the vocabulary token that stands for it: the first three [unusedN]
    tokens by N (module docstring)."""
    unused = sorted(
        (t for t in tokenizer.vocab if _UNUSED.fullmatch(t)),
        key=lambda t: int(_UNUSED.fullmatch(t).group(1)),
    )
    if len(unused) < len(MARKERS):
        raise ChemProtError(
            f"vocabulary {tokenizer.vocab_file} has {len(unused)} [unusedN] tokens where "
            f"{len(MARKERS)} are needed for {', '.join(MARKERS)} (BERT's vocabularies have "
            "about a hundred)"
        )
    return dict(zip(MARKERS, unused, strict=False))


def tokenize(sentence: str, tokenizer: FullTokenizer, markers: dict[str, str]) -> list[str]:
    """WordPiece tokens of `sentence` with each marker as its one token, e.g.
    "@CHEMICAL$-induced @GENE$" -> [unused0] - induced [unused1] (uncased BERT)."""
    tokens: list[str] = []
    for piece in _MARKER_SPLIT.split(sentence):
        if piece in markers:
            tokens.append(markers[piece])
        elif piece:
            tokens.extend(tokenizer.tokenize(piece))
    return tokens


def make_tensors(
    examples: Sequence[Example], tokenizer: FullTokenizer, max_seq_length: int = 128
) -> tuple[dict[str, torch.Tensor], int]:
    """[CLS] sentence [SEP] padded to [N, max_seq_length] (a longer sentence loses its
    end, as in the reference), with labels [N] when every example has one; and the
    number of sentences that lost a marker to the cut."""
    markers = marker_tokens(tokenizer)
    n = len(examples)
    input_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    attention_mask = torch.zeros(n, max_seq_length, dtype=torch.long)
    kept = max_seq_length - 2
    lost_marker = 0
    for i, example in enumerate(examples):
        tokens = tokenize(example.sentence, tokenizer, markers)
        lost_marker += any(t in markers.values() for t in tokens[kept:])
        tokens = ["[CLS]", *tokens[:kept], "[SEP]"]
        input_ids[i, : len(tokens)] = torch.tensor(tokenizer.convert_tokens_to_ids(tokens))
        attention_mask[i, : len(tokens)] = 1
    tensors = {
        "input_ids": input_ids,
        "token_type_ids": torch.zeros_like(input_ids),
        "attention_mask": attention_mask,
    }
    if examples and all(e.label is not None for e in examples):
        tensors["labels"] = torch.tensor([e.label for e in examples])
    return tensors, lost_marker


# ------------------------------------------------------------------------------- metric


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    gold: int  # rows with this gold label (all five classes for the micro score)
    predicted: int  # rows predicted as it


def _score(tp: int, fp: int, fn: int) -> Score:
    return Score(
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        f1=2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        gold=tp + fn,
        predicted=tp + fp,
    )


def micro_scores(predicted: np.ndarray, gold: np.ndarray) -> tuple[Score, dict[str, Score]]:
    """Micro precision, recall and F1 over the five CPR classes ("false" excluded; module
    docstring) and each class's own; `predicted` and `gold` are [N] indices into LABELS."""
    predicted, gold = np.asarray(predicted), np.asarray(gold)
    negative = LABELS.index(NEGATIVE)
    right = predicted == gold
    micro = _score(
        tp=int((right & (gold != negative)).sum()),
        fp=int((~right & (predicted != negative)).sum()),
        fn=int((~right & (gold != negative)).sum()),
    )
    per_class = {}
    for label in POSITIVE:
        c = LABELS.index(label)
        per_class[label] = _score(
            tp=int(((predicted == c) & (gold == c)).sum()),
            fp=int(((predicted == c) & (gold != c)).sum()),
            fn=int(((predicted != c) & (gold == c)).sum()),
        )
    return micro, per_class


def flat_scores(name: str, micro: Score, per_class: dict[str, Score]) -> dict[str, float]:
    """{name}_precision, _recall, _f1 and {name}_{class}_precision, ... for logs."""
    values = {f"{name}_{k}": v for k, v in asdict(micro).items() if isinstance(v, float)}
    for label, score in per_class.items():
        for key in ("precision", "recall", "f1"):
            values[f"{name}_{label}_{key}"] = getattr(score, key)
    return values


def report(name: str, micro: Score, per_class: dict[str, Score]) -> str:
    """The scores as a small table, one line per class, the micro average last."""
    lines = [f"{name}: micro-average over {', '.join(POSITIVE)} ({NEGATIVE!r} excluded)"]
    lines.append(f"  {'class':<8} {'precision':>9} {'recall':>7} {'f1':>7} {'gold':>6} {'pred':>6}")
    for label, s in [*per_class.items(), ("micro", micro)]:
        lines.append(
            f"  {label:<8} {s.precision:>9.4f} {s.recall:>7.4f} {s.f1:>7.4f} "
            f"{s.gold:>6} {s.predicted:>6}"
        )
    return "\n".join(lines)


def write_predictions(
    path: str | os.PathLike, examples: Sequence[Example], predicted: np.ndarray
) -> Path:
    """Header "index<TAB>label", then one line per test row with its predicted label."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("index\tlabel\n")
        for example, label in zip(examples, predicted, strict=True):
            f.write(f"{example.index}\t{LABELS[int(label)]}\n")
    return path
