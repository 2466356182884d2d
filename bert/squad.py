"""SQuAD v1.1 / v2.0 for BERT: questions from the JSON, features, answers from logits.

Reading (`read_squad`). The context is split on whitespace into words; a gold answer is
located by its `answer_start` character and must be found there verbatim. What cannot
be used is reported with its question id and file: in training such a question is
skipped and counted (missing keys, answers not at their offset, empty texts); in
prediction only empty questions and contexts are skipped (their prediction is "") and
anything else malformed is an error, because every question must get a prediction.

Features (`make_features`). Each word is cut into WordPiece pieces; the question
(at most `max_query_length` pieces) and a window of the context form

    [CLS] question [SEP] context window [SEP]      token types 0 ... 0 1 ... 1

Windows of at most max_seq_length - len(question) - 3 pieces start every `doc_stride`
pieces, so a long context gives several features. A piece seen by several windows is
"max context" in the one where min(pieces left of it, pieces right of it) + 0.01 *
window length is largest; only there may an answer start. Training targets are the
answer's first and last piece (narrowed to the pieces of the answer text alone when a
word holds more, e.g. "(1843)."); an unanswerable question, or an answer outside the
window, points at [CLS] (position 0).

Answers (`predict_answers`). For each question, the `n_best_size` best start and end
logits of each of its features are paired into spans: both inside the context, start
at a max-context piece, end >= start, at most `max_answer_length` pieces; a span scores
start_logit + end_logit. Distinct answer texts are kept in order of score (the n-best
list, with softmax probabilities over it). A span's text is cut from the original
context: the pieces' text is aligned with the basic-tokenized original words ignoring
whitespace, so "(1843)." yields "1843" with the context's own spelling and case. In
v2.0 the null answer "" scores start + end logit at [CLS] (the lowest over the
features); the prediction is "" when null score - best span score exceeds
`null_score_diff_threshold`, and that difference is written to null_odds.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bert.squad_eval import SquadError, load_json
from bert.tokenization import BasicTokenizer, FullTokenizer
from common import cli
from common.atomic import atomic_write

# A v2.0 question without any span candidate: its no-answer margin (finite, for JSON).
NO_SPAN_MARGIN = 1e6


@dataclass
class SquadExample:
    """One question with its context split into words."""

    qid: str
    question: str
    words: list[str]  # the context, split on whitespace
    answers: list[str] = field(default_factory=list)  # gold texts, when the file has them
    start_word: int = -1  # training: the answer's first and last word
    end_word: int = -1
    is_impossible: bool = False


@dataclass
class SquadData:
    """The usable questions of a file, every question id (in file order) and what was skipped."""

    examples: list[SquadExample]
    question_ids: list[str]
    skipped: list[tuple[str, str]]  # (question id or position, reason)

    def skipped_summary(self, path: str | os.PathLike, limit: int = 10) -> str | None:
        """ "skipped N questions of FILE: id (reason), ..." or None when nothing was."""
        if not self.skipped:
            return None
        shown = "; ".join(f"{qid} ({reason})" for qid, reason in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} questions of {path}: {shown}{more}"


@dataclass
class SquadFeature:
    """One window of one question's context, as model input."""

    example_index: int
    tokens: list[str]  # [CLS] question [SEP] window [SEP]
    token_to_word: dict[int, int]  # position in tokens -> word of the context
    max_context: dict[int, bool]  # position in tokens -> the window is its best context
    input_ids: list[int]
    token_type_ids: list[int]
    start_position: int = 0  # training targets (0: [CLS], no answer in this window)
    end_position: int = 0


# ------------------------------------------------------------------------ command line


def add_window_flags(group: argparse._ArgumentGroup) -> None:
    """The SQuAD flags that shape windows and answers, the same in run_squad and serve."""
    group.add_argument("--version_2_with_negative", action="store_true", help="SQuAD v2.0")
    group.add_argument(
        "--null_score_diff_threshold",
        type=cli.any_float,
        default=0.0,
        help="v2.0: answer '' when the null score exceeds the best span's by more",
    )
    group.add_argument(
        "--max_seq_length",
        type=cli.positive_int,
        default=384,
        help="WordPiece tokens per window (at least --max_query_length + 4)",
    )
    group.add_argument(
        "--doc_stride", type=cli.positive_int, default=128, help="tokens between window starts"
    )
    group.add_argument(
        "--max_query_length", type=cli.positive_int, default=64, help="question tokens kept"
    )
    group.add_argument(
        "--predict_batch_size", type=cli.positive_int, default=8, help="windows per model call"
    )
    group.add_argument(
        "--n_best_size", type=cli.positive_int, default=20, help="answers in the n-best lists"
    )
    group.add_argument(
        "--max_answer_length", type=cli.positive_int, default=30, help="longest answer in tokens"
    )


def window_problem(args: argparse.Namespace) -> str | None:
    """Why add_window_flags' values cannot make a window, or None."""
    # a window holds [CLS] question [SEP] context [SEP], with one context token at least
    room = args.max_query_length + 4
    if args.max_seq_length >= room:
        return None
    return (
        f"--max_seq_length {args.max_seq_length} leaves no room for the context after "
        f"--max_query_length {args.max_query_length} and 3 special tokens: give "
        f"--max_seq_length {room} or more, or a smaller --max_query_length"
    )


# ----------------------------------------------------------------------------- reading


def split_words(text: str) -> tuple[list[str], list[int]]:
    """Whitespace-separated words and, per character, the index of its word (whitespace
    counts to the word before it; -1 before the first word)."""
    words: list[str] = []
    word_of_char: list[int] = []
    in_word = False
    for char in text:
        if char.isspace():
            in_word = False
        elif in_word:
            words[-1] += char
        else:
            words.append(char)
            in_word = True
        word_of_char.append(len(words) - 1)
    return words, word_of_char


def _locate_answer(
    context: str, word_of_char: list[int], answer: Any
) -> tuple[str, int, int] | str:
    """(text, first word, last word) of a gold answer, or the reason it cannot be used."""
    if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
        return "answer without 'text' or 'answer_start'"
    text, start = answer["text"], answer["answer_start"]
    if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
        return "answer 'text' is not a string or 'answer_start' not an integer"
    if start < 0 or context[start : start + len(text)] != text:
        return f"answer {text!r} does not occur at answer_start {start}"
    stripped = text.strip()
    if not stripped:
        return "empty answer text"
    start += len(text) - len(text.lstrip())
    return stripped, word_of_char[start], word_of_char[start + len(stripped) - 1]


def read_squad(path: str | os.PathLike, *, training: bool, version_2: bool) -> SquadData:
    """Questions of a SQuAD-format file (see the module docstring for what is skipped)."""
    source = str(path)
    dataset = load_json(path, "SQuAD file")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise SquadError(f"SQuAD file {source}: no 'data' list at the top level")
    data = SquadData([], [], [])
    seen: set[str] = set()

    def problem(where: str, reason: str) -> None:
        if not training:
            raise SquadError(f"{source}: {where}: {reason}")
        data.skipped.append((where, reason))

    for a, article in enumerate(dataset["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            problem(f"article {a}", "no 'paragraphs' list")
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"article {a} paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                problem(where, "no 'qas' list")
                continue
            context = paragraph.get("context")
            words, word_of_char = split_words(context) if isinstance(context, str) else ([], [])
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str | int):
                    problem(f"{where} question {q}", "no 'id'")
                    continue
                qid = str(qa["id"])
                if not training:
                    if qid in seen:
                        raise SquadError(f"{source}: question id {qid} appears twice")
                    seen.add(qid)
                    data.question_ids.append(qid)
                if not isinstance(context, str):
                    problem(qid, "its paragraph has no 'context' string")
                    continue
                question = qa.get("question")
                if not isinstance(question, str):
                    problem(qid, "no 'question' string")
                    continue
                if not question.strip() or not words:
                    data.skipped.append((qid, "empty question" if words else "empty context"))
                    continue
                example = SquadExample(qid, question, words)
                answers = qa.get("answers")
                if isinstance(answers, list):
                    example.answers = [
                        str(x["text"]) for x in answers if isinstance(x, dict) and "text" in x
                    ]
                if training:
                    example.is_impossible = version_2 and bool(qa.get("is_impossible", False))
                    if not example.is_impossible:
                        if not isinstance(answers, list) or not answers:
                            problem(qid, "no 'answers'")
                            continue
                        located = _locate_answer(context, word_of_char, answers[0])
                        if isinstance(located, str):
                            problem(qid, located)
                            continue
                        example.answers = [located[0]]
                        example.start_word, example.end_word = located[1], located[2]
                data.examples.append(example)
    return data


# ---------------------------------------------------------------------------- features


def _narrow_to_answer(
    pieces: list[str], start: int, end: int, answer_pieces: list[str]
) -> tuple[int, int]:
    """The first run of `answer_pieces` inside pieces[start:end + 1], else (start, end)."""
    n = len(answer_pieces)
    for s in range(start, end - n + 2):
        if pieces[s : s + n] == answer_pieces:
            return s, s + n - 1
    return start, end


def _windows(n_pieces: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of the context windows."""
    spans = []
    start = 0
    while True:
        length = min(n_pieces - start, max_len)
        spans.append((start, length))
        if start + length >= n_pieces:
            return spans
        start += min(length, stride)


def _best_window(spans: list[tuple[int, int]], n_pieces: int) -> list[int]:
    """For each context piece, the window in which it has the most context."""
    best = [-1] * n_pieces
    best_score = [-math.inf] * n_pieces
    for i, (start, length) in enumerate(spans):
        for p in range(start, start + length):
            score = min(p - start, start + length - 1 - p) + 0.01 * length
            if score > best_score[p]:
                best[p], best_score[p] = i, score
    return best


def make_features(
    examples: Sequence[SquadExample],
    tokenizer: FullTokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    training: bool = False,
) -> list[SquadFeature]:
    """Windows of every example as model inputs (module docstring)."""
    if max_seq_length - min(max_query_length, max_seq_length) - 3 < 1:
        raise ValueError(
            f"max_seq_length {max_seq_length} leaves no room for the context after a question "
            f"of up to max_query_length {max_query_length} pieces and 3 special tokens"
        )
    word_pieces = functools.lru_cache(maxsize=1 << 17)(tokenizer.tokenize)  # words repeat
    features = []
    for index, example in enumerate(examples):
        query = tokenizer.tokenize(example.question)[:max_query_length]
        pieces: list[str] = []
        word_of_piece: list[int] = []
        first_piece: list[int] = []
        for w, word in enumerate(example.words):
            first_piece.append(len(pieces))
            for piece in word_pieces(word):
                pieces.append(piece)
                word_of_piece.append(w)
        target = None
        if training and not example.is_impossible:
            start = first_piece[example.start_word]
            last = example.end_word + 1
            end = (first_piece[last] if last < len(first_piece) else len(pieces)) - 1
            target = _narrow_to_answer(pieces, start, end, tokenizer.tokenize(example.answers[0]))
        spans = _windows(len(pieces), max_seq_length - len(query) - 3, doc_stride)
        best = _best_window(spans, len(pieces))
        offset = len(query) + 2
        for i, (start, length) in enumerate(spans):
            tokens = ["[CLS]", *query, "[SEP]", *pieces[start : start + length], "[SEP]"]
            feature = SquadFeature(
                example_index=index,
                tokens=tokens,
                token_to_word={offset + k: word_of_piece[start + k] for k in range(length)},
                max_context={offset + k: best[start + k] == i for k in range(length)},
                input_ids=tokenizer.convert_tokens_to_ids(tokens),
                token_type_ids=[0] * offset + [1] * (length + 1),
            )
            if target is not None and start <= target[0] and target[1] < start + length:
                feature.start_position = target[0] - start + offset
                feature.end_position = target[1] - start + offset
            features.append(feature)
    return features


def features_to_tensors(
    features: Sequence[SquadFeature], max_seq_length: int, training: bool
) -> dict[str, torch.Tensor]:
    """Padded model inputs [N, max_seq_length] (pad id 0, mask 0), plus start_positions
    and end_positions [N] for training or feature_index [N] for prediction."""
    n = len(features)
    input_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    token_type_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    attention_mask = torch.zeros(n, max_seq_length, dtype=torch.long)
    for i, f in enumerate(features):
        length = len(f.input_ids)
        input_ids[i, :length] = torch.tensor(f.input_ids)
        token_type_ids[i, :length] = torch.tensor(f.token_type_ids)
        attention_mask[i, :length] = 1
    tensors = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }
    if training:
        tensors["start_positions"] = torch.tensor([f.start_position for f in features])
        tensors["end_positions"] = torch.tensor([f.end_position for f in features])
    else:
        tensors["feature_index"] = torch.arange(n)
    return tensors


# ------------------------------------------------------------------------------ answers


def _strip_spaces(text: str) -> tuple[str, list[int]]:
    """`text` without spaces, and for each kept character its position in `text`."""
    kept = [(i, c) for i, c in enumerate(text) if c != " "]
    return "".join(c for _, c in kept), [i for i, _ in kept]


def align_answer_text(pred_text: str, orig_text: str, do_lower_case: bool) -> str:
    """The part of `orig_text` (original context words) that the tokenized answer
    `pred_text` covers, found by comparing both with whitespace removed.

    `orig_text` tokenized as the model saw it (lower-cased, punctuation split off) must
    contain `pred_text`; its characters are then mapped back to `orig_text` through the
    space-free forms of the two, which agree character for character. When either
    step fails (e.g. lower-casing changed the length) `orig_text` is returned whole.
    """
    tokenized = " ".join(BasicTokenizer(do_lower_case).tokenize(orig_text))
    found = tokenized.find(pred_text)
    if not pred_text or found < 0:
        return orig_text
    orig_chars, orig_pos = _strip_spaces(orig_text)
    tok_chars, tok_pos = _strip_spaces(tokenized)
    if len(orig_chars) != len(tok_chars):
        return orig_text
    compact_of = {pos: k for k, pos in enumerate(tok_pos)}  # tokenized position -> compact
    first = compact_of.get(found)
    last = compact_of.get(found + len(pred_text) - 1)
    if first is None or last is None:
        return orig_text
    return orig_text[orig_pos[first] : orig_pos[last] + 1]


def _pieces_text(pieces: list[str]) -> str:
    """WordPiece pieces back to text: "mor ##ven ( 1843 )" -> "morven ( 1843 )"."""
    text = " ".join(pieces).replace(" ##", "").replace("##", "")
    return " ".join(text.split())


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass
class _Candidate:
    score: float
    feature: SquadFeature | None  # None: the null answer
    start: int
    end: int
    start_logit: float
    end_logit: float


def predict_answers(
    examples: Sequence[SquadExample],
    features: Sequence[SquadFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    do_lower_case: bool = True,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], dict[str, float]]:
    """(predictions, n-best lists, null odds) by question id from per-feature logits
    ([tokens of the feature or more] each); see the module docstring."""
    by_example: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_example.setdefault(f.example_index, []).append(i)
    predictions: dict[str, str] = {}
    nbest_lists: dict[str, list[dict[str, Any]]] = {}
    null_odds: dict[str, float] = {}
    for index, example in enumerate(examples):
        candidates: list[_Candidate] = []
        null: _Candidate | None = None
        for i in by_example.get(index, []):
            f = features[i]
            n = len(f.tokens)
            s_logits = np.asarray(start_logits[i], dtype=np.float64)[:n]
            e_logits = np.asarray(end_logits[i], dtype=np.float64)[:n]
            null_score = s_logits[0] + e_logits[0]
            if null is None or null_score < null.score:
                null = _Candidate(null_score, None, 0, 0, s_logits[0], e_logits[0])
            starts = np.argsort(-s_logits, kind="stable")[:n_best_size]
            ends = np.argsort(-e_logits, kind="stable")[:n_best_size]
            for s in starts.tolist():
                if s not in f.token_to_word or not f.max_context[s]:
                    continue
                for e in ends.tolist():
                    if e in f.token_to_word and s <= e < s + max_answer_length:
                        score = s_logits[s] + e_logits[e]
                        candidates.append(_Candidate(score, f, s, e, s_logits[s], e_logits[e]))
        if version_2 and null is not None:
            candidates.append(null)
        candidates.sort(key=lambda c: c.score, reverse=True)

        entries: list[tuple[str, _Candidate]] = []
        seen: set[str] = set()
        for c in candidates:
            if len(entries) >= n_best_size:
                break
            text = "" if c.feature is None else _span_text(example, c, do_lower_case)
            if text not in seen:
                seen.add(text)
                entries.append((text, c))
        if version_2 and null is not None and "" not in seen:
            entries.append(("", null))
        if not entries:  # no window of this question allowed any span
            entries.append(("", _Candidate(0.0, None, 0, 0, 0.0, 0.0)))
        probabilities = _softmax([c.score for _, c in entries])
        nbest_lists[example.qid] = [
            {
                "text": text,
                "probability": p,
                "start_logit": float(c.start_logit),
                "end_logit": float(c.end_logit),
            }
            for (text, c), p in zip(entries, probabilities, strict=True)
        ]
        if not version_2:
            predictions[example.qid] = entries[0][0]
            continue
        best_span = next(((t, c) for t, c in entries if c.feature is not None), None)
        null_score = null.score if null is not None else 0.0
        margin = NO_SPAN_MARGIN if best_span is None else float(null_score - best_span[1].score)
        null_odds[example.qid] = margin
        answered = best_span is not None and margin <= null_score_diff_threshold
        predictions[example.qid] = best_span[0] if answered else ""
    return predictions, nbest_lists, null_odds


def _span_text(example: SquadExample, c: _Candidate, do_lower_case: bool) -> str:
    f = c.feature
    pred_text = _pieces_text(f.tokens[c.start : c.end + 1])
    orig_text = " ".join(example.words[f.token_to_word[c.start] : f.token_to_word[c.end] + 1])
    return align_answer_text(pred_text, orig_text, do_lower_case)


def complete_predictions(
    predictions: dict[str, str], question_ids: Sequence[str]
) -> dict[str, str]:
    """Every question id of the file in file order; skipped questions get ""."""
    return {qid: predictions.get(qid, "") for qid in question_ids}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Indented JSON, written atomically."""
    path = Path(path)
    text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
