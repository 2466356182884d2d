"""Named-entity recognition for BERT: CoNLL-style files, WordPiece features with
sliding windows, word-level predictions and entity-level scores.

File format (CoNLL-2003, the BLUE/BioBERT NER files and the like): one token per line,
its tag in the last column; a blank line, or a `-DOCSTART-` line, ends a sentence.
Columns are separated by tabs when the first token line holds a tab (then in every
line of the file), else by runs of spaces. The token is the first column; any columns
between the token and the tag (CoNLL-2003's part of speech and chunk) are kept as they
are. Every token line of a file must have the same number of columns. The tags may
follow any scheme (IOB1, IOB2, BIOES, untyped B/I/O as in BLUE): the label list is
whatever the training file holds, "O" first, then sorted.

    data = read_conll("train.tsv")
    labels = label_list(data.sentences)
    features = make_features(data.sentences, tokenizer, 128, 64, labels)
    tags = word_predictions(features, predicted_ids, labels)   # one tag per word
    write_predictions(data, tags, "predictions.txt")
    scores = entity_scores(gold_tags, tags)

Alignment. Each word is cut into WordPieces; its tag goes on its first piece and every
other piece gets IGNORE (-100: left out of the loss, never read as a prediction). A word
the tokenizer turns into nothing (control characters only) stands as [UNK].

Windows. A sentence longer than max_seq_length - 2 pieces is cut into windows of that
many pieces, each starting `doc_stride` pieces after the previous one, the last ending
at the sentence's end, each framed by [CLS] and [SEP]. A word is read from, and in
training labelled in, exactly one window: the one where its first piece has the most
context, measured as the pieces between it and the nearer edge of the window (ties go to
the earlier window). So a word near a cut is taken from a window where it sits in the
middle, and overlapping windows do not count a word twice in the loss. A window that
is no word's best is left out.

Scores follow conlleval: an entity is a maximal run of tags that one chunk makes (a
B- or S- tag, or an I- or E- tag after O or after another type, starts one), and it
counts as found only when the prediction has the same type over the same words.
seqeval's default mode (`mode=None`) implements these rules; precision, recall and F1
are micro-averaged over all entities, and also given per type.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from seqeval.metrics import accuracy_score
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

from bert.tokenization import FullTokenizer
from common.atomic import atomic_write
from common.errors import UserError

IGNORE = -100  # the label of positions without a tag (cross_entropy's ignore_index)
DOCSTART = "-DOCSTART-"
OUTSIDE = "O"


class NerError(UserError, ValueError):
    """A CoNLL file is missing, empty, not UTF-8 or has a line without a tag."""


# ------------------------------------------------------------------------------ reading


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    lines: list[int]  # each word's index into ConllFile.lines (0-based)


@dataclass
class ConllFile:
    path: Path
    lines: list[str]  # every line of the file, without its line break
    sentences: list[Sentence] = field(default_factory=list)
    separator: str | None = None  # "\t", or None: runs of whitespace

    @property
    def tags(self) -> list[list[str]]:
        return [s.tags for s in self.sentences]


def _fields(line: str, separator: str | None) -> list[str]:
    """The columns of a line ([] for a blank one)."""
    if not line.strip():
        return []
    if separator is None:
        return line.split()
    return [f.strip() for f in line.split(separator)]


def read_conll(path: str | os.PathLike) -> ConllFile:
    """Sentences of a CoNLL-style file (module docstring); a line without a tag, with
    another number of columns than the first token line, or not UTF-8 is an error naming
    the file and line."""
    path = Path(path)
    if not path.is_file():
        raise NerError(f"CoNLL file {path} does not exist")
    data = ConllFile(path, [])
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    columns: tuple[int, int] | None = None  # (count, line number) of the first token line

    def end_sentence() -> None:
        if words:
            data.sentences.append(Sentence(words.copy(), tags.copy(), lines.copy()))
        words.clear(), tags.clear(), lines.clear()

    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            number = index + 1
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise NerError(f"{path}, line {number}: not UTF-8 ({exc.reason})") from None
            if index == 0:
                text = text.removeprefix("\ufeff")  # a byte-order mark is no token
            data.lines.append(text)
            if columns is None and text.strip() and "\t" in text:
                data.separator = "\t"
            fields = _fields(text, data.separator)
            if not fields:
                end_sentence()
                continue
            if fields[0] == DOCSTART:
                end_sentence()
                continue
            if len(fields) < 2 or not fields[-1] or not fields[0]:
                what = "no token" if not fields[0] else "no tag"
                raise NerError(
                    f"{path}, line {number}: {what} in {text!r} (expected the token first "
                    "and its tag in the last column)"
                )
            if columns is None:
                columns = (len(fields), number)
            elif len(fields) != columns[0]:
                raise NerError(
                    f"{path}, line {number}: {len(fields)} columns where line {columns[1]} "
                    f"has {columns[0]}"
                )
            words.append(fields[0])
            tags.append(fields[-1])
            lines.append(index)
    end_sentence()
    if not data.sentences:
        raise NerError(f"CoNLL file {path} holds no tagged tokens")
    return data


def label_list(sentences: Sequence[Sentence]) -> list[str]:
    """The tags of `sentences`: "O" first (when present), the others sorted."""
    tags = {t for s in sentences for t in s.tags}
    return [OUTSIDE] * (OUTSIDE in tags) + sorted(tags - {OUTSIDE})


# ----------------------------------------------------------------------------- features


@dataclass
class Window:
    sentence: int
    start: int  # first piece of the sentence in this window
    length: int  # pieces (without [CLS] and [SEP])


@dataclass
class Features:
    tensors: dict[str, torch.Tensor]  # input_ids, token_type_ids, attention_mask [N, S]
    windows: list[Window]  # one per row of the tensors
    # per sentence, per word: (row of the tensors, column) where the word is read
    positions: list[list[tuple[int, int]]]


def word_pieces(words: Sequence[str], tokenizer: FullTokenizer) -> tuple[list[str], list[int]]:
    """The pieces of a sentence and the index of each word's first piece."""
    pieces: list[str] = []
    first: list[int] = []
    for word in words:
        first.append(len(pieces))
        pieces.extend(tokenizer.tokenize(word) or ["[UNK]"])
    return pieces, first


def window_spans(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows over `n` pieces: `size` long, `stride` apart, the
    last one reaching the end."""
    spans, start = [], 0
    while True:
        length = min(size, n - start)
        spans.append((start, length))
        if start + length >= n:
            return spans
        start += stride


def best_window(piece: int, spans: Sequence[tuple[int, int]]) -> int:
    """The window in which `piece` is farthest from an edge (the earlier one on a tie)."""
    best, best_context = -1, -1
    for i, (start, length) in enumerate(spans):
        if start <= piece < start + length:
            context = min(piece - start, start + length - 1 - piece)
            if context > best_context:
                best, best_context = i, context
    return best


def make_features(
    sentences: Sequence[Sentence],
    tokenizer: FullTokenizer,
    max_seq_length: int,
    doc_stride: int,
    labels: Sequence[str] | None = None,
) -> Features:
    """[CLS] window [SEP] rows padded to max_seq_length (module docstring). With `labels`
    (training) the tensors hold "labels" [N, S]: each word's tag index at the position it
    is read from, IGNORE elsewhere; tags not in `labels` are an error. Windows where no
    word is read are left out."""
    size = max_seq_length - 2
    if size < 1 or not 1 <= doc_stride <= size:
        raise NerError(
            f"doc_stride {doc_stride} must be between 1 and max_seq_length - 2 "
            f"({max_seq_length} - 2)"
        )
    label_ids = {t: i for i, t in enumerate(labels)} if labels is not None else None
    rows: list[list[int]] = []
    targets: list[list[int]] = []
    windows: list[Window] = []
    positions: list[list[tuple[int, int]]] = []
    cls_sep = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    for s, sentence in enumerate(sentences):
        pieces, first = word_pieces(sentence.words, tokenizer)
        ids = tokenizer.convert_tokens_to_ids(pieces)
        spans = window_spans(len(pieces), size, doc_stride)
        chosen = [best_window(p, spans) for p in first]
        used = set(chosen)
        row_of = {}
        for w, (start, length) in enumerate(spans):
            if w not in used:
                continue
            row_of[w] = len(rows)
            rows.append([cls_sep[0], *ids[start : start + length], cls_sep[1]])
            targets.append([IGNORE] * (length + 2))
            windows.append(Window(s, start, length))
        where = []
        for word, (piece, w) in enumerate(zip(first, chosen, strict=True)):
            row, column = row_of[w], piece - spans[w][0] + 1  # +1: [CLS]
            where.append((row, column))
            if label_ids is not None:
                tag = sentence.tags[word]
                if tag not in label_ids:
                    raise NerError(f"tag {tag!r} is not one of the labels {list(label_ids)}")
                targets[row][column] = label_ids[tag]
        positions.append(where)
    n = len(rows)
    input_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    attention_mask = torch.zeros(n, max_seq_length, dtype=torch.long)
    label_tensor = torch.full((n, max_seq_length), IGNORE, dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        label_tensor[i, : len(target)] = torch.tensor(target)
    tensors = {
        "input_ids": input_ids,
        "token_type_ids": torch.zeros_like(input_ids),
        "attention_mask": attention_mask,
    }
    if label_ids is not None:
        tensors["labels"] = label_tensor
    return Features(tensors, windows, positions)


def word_predictions(
    features: Features, predicted: Sequence[Sequence[float]], labels: Sequence[str]
) -> list[list[str]]:
    """Each word's tag: `predicted[row][column]` (a label index per position, one row per
    window) read where the word's best window holds its first piece."""
    return [
        [labels[int(predicted[row][column])] for row, column in where]
        for where in features.positions
    ]


# ------------------------------------------------------------------------------- output


def write_predictions(
    data: ConllFile, predicted: Sequence[Sequence[str]], path: str | os.PathLike
) -> Path:
    """`data`'s lines with the predicted tag as a new last column (after a tab in a
    tab-separated file, else after a space), one output line per input line: blank lines
    stay blank and -DOCSTART- lines get "O", so that every non-blank line has the same
    number of columns, as conlleval expects."""
    tag_of = {}
    for sentence, tags in zip(data.sentences, predicted, strict=True):
        if len(tags) != len(sentence.words):
            raise ValueError(f"{len(tags)} predictions for {len(sentence.words)} words")
        tag_of.update(zip(sentence.lines, tags, strict=True))
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        for index, line in enumerate(data.lines):
            tag = tag_of.get(index)
            if tag is None and _fields(line, data.separator)[:1] == [DOCSTART]:
                tag = OUTSIDE
            if tag is None:
                f.write(line + "\n")
            else:
                f.write(line.rstrip() + (data.separator or " ") + tag + "\n")
    return path


# ------------------------------------------------------------------------------ metrics


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, object]:
    """Entity-level scores as conlleval computes them (module docstring): overall
    precision, recall, F1 (micro-averaged), token accuracy, entity counts, and per type
    {precision, recall, f1, support (gold entities)}. 0 where a ratio is undefined."""
    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    if [len(s) for s in gold] != [len(s) for s in predicted]:
        raise ValueError("gold and predicted tags differ in sentence count or lengths")
    gold_entities, predicted_entities = get_entities(gold), get_entities(predicted)
    types = sorted({t for t, _, _ in gold_entities + predicted_entities})
    p, r, f, _ = precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
    scores: dict[str, object] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    scores["accuracy"] = float(accuracy_score(gold, predicted)) if any(gold) else 0.0
    scores["gold_entities"] = len(gold_entities)
    scores["predicted_entities"] = len(predicted_entities)
    per_type = {}
    if types:
        p, r, f, support = precision_recall_fscore_support(
            gold, predicted, average=None, zero_division=0
        )
        for i, name in enumerate(types):
            per_type[name] = {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
    scores["per_type"] = per_type
    return scores
