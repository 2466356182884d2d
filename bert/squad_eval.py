"""SQuAD v1.1 and v2.0 scores: exact match and F1, with the rules of the official scripts.

    python -m bert.squad_eval dev-v1.1.json predictions.json
    {"exact_match": 81.2, "f1": 88.5}
    python -m bert.squad_eval dev-v2.0.json predictions.json --na-prob-file null_odds.json

Answers are compared after normalisation: lower-case, drop ASCII punctuation, drop the
articles a/an/the, collapse whitespace. A question scores the best match over its gold
answers. F1 is over the bag of normalised words: 2PR / (P + R) with P = common / predicted
words and R = common / gold words.

v1.1 prints {"exact_match", "f1"} in percent. v2.0 prints exact, f1 and total, then the
same over the answerable (HasAns_*) and unanswerable (NoAns_*) questions; the gold of
an unanswerable question is the empty answer "", and an empty prediction and an empty
gold give F1 1 (in v1.1 every answer without common words scores 0). With a na-prob
file (question id -> probability that there is no answer, e.g. run_squad's
null_odds.json) a question whose value exceeds --na-prob-thresh counts as answered
"no answer", and the best thresholds for exact and F1 are reported as well.

A question of the data file without a prediction scores 0 and is reported on stderr.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import cli
from common.errors import UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


class SquadError(UserError, ValueError):
    """A SQuAD-format file is missing, not UTF-8, not JSON or lacks a required key."""


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed JSON of `path`; a SquadError naming the file (and line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SquadError(f"{what} {path} does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise SquadError(f"{what} {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SquadError(f"{what} {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SquadError(
            f"{what} {path}, line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg})"
        ) from None


def normalize_answer(text: str) -> str:
    """Lower-case, remove punctuation, remove articles, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, version: str = "1.1") -> float:
    """Word-bag F1 of the normalised answers; in v2.0 two empty answers match (1.0)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == "2.0" and (not predicted or not expected):
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def iter_questions(dataset: dict[str, Any], source: str = "data") -> Iterator[dict[str, Any]]:
    """Every question ("qas" entry) of a SQuAD-format dict, checked for id and answers."""
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise SquadError(f"{source}: no 'data' list at the top level")
    for a, article in enumerate(dataset["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise SquadError(f"{source}: article {a} has no 'paragraphs' list")
        for p, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise SquadError(f"{source}: article {a} paragraph {p} has no 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or "id" not in qa:
                    raise SquadError(
                        f"{source}: article {a} paragraph {p} question {q} has no 'id'"
                    )
                if not isinstance(qa.get("answers"), list):
                    raise SquadError(f"{source}: question {qa['id']} has no 'answers' list")
                yield qa


def _answer_texts(qa: dict[str, Any], source: str) -> list[str]:
    try:
        return [str(answer["text"]) for answer in qa["answers"]]
    except (KeyError, TypeError):
        raise SquadError(f"{source}: question {qa['id']} has an answer without 'text'") from None


def check_gold(dataset: dict[str, Any], source: str = "data") -> int:
    """Raise SquadError unless every question has an id and answer texts to score
    against; returns the number of questions."""
    count = 0
    for qa in iter_questions(dataset, source):
        _answer_texts(qa, source)
        count += 1
    return count


def _warn_missing(missing: list[str]) -> None:
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        print(
            f"warning: {len(missing)} questions have no prediction and score 0: {shown}",
            file=sys.stderr,
        )


def evaluate_v1(
    dataset: dict[str, Any], predictions: dict[str, str], source: str = "data"
) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over all questions of `dataset`."""
    exact = f1 = 0.0
    total = 0
    missing = []
    for qa in iter_questions(dataset, source):
        total += 1
        golds = _answer_texts(qa, source)
        if qa["id"] not in predictions:
            missing.append(str(qa["id"]))
            continue
        prediction = predictions[qa["id"]]
        exact += max((exact_match(prediction, g) for g in golds), default=0.0)
        f1 += max((f1_score(prediction, g) for g in golds), default=0.0)
    _warn_missing(missing)
    if total == 0:
        raise SquadError(f"{source}: holds no questions")
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def _mean_percent(scores: dict[str, float], ids: list[str]) -> float:
    return 100.0 * sum(scores[i] for i in ids) / len(ids)


def _best_threshold(
    scores: dict[str, float],
    predictions: dict[str, str],
    na_probs: dict[str, float],
    has_answer: dict[str, bool],
) -> tuple[float, float]:
    """(best score in percent, its threshold) when every question whose no-answer
    probability is at most the threshold keeps its prediction and the rest answer "".

    Starting from "no answer everywhere" (right for each unanswerable question), the
    questions are switched to their predictions in order of rising probability.
    """
    current = best = sum(1 for qid in scores if not has_answer[qid])
    best_threshold = 0.0
    for qid in sorted(na_probs, key=na_probs.__getitem__):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1  # an unanswerable question now gets a (wrong) answer
        if current > best:
            best, best_threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def evaluate_v2(
    dataset: dict[str, Any],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    source: str = "data",
) -> dict[str, float]:
    """The official v2.0 metrics (module docstring); best_* keys when `na_probs` is given."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    missing = []
    for qa in iter_questions(dataset, source):
        qid = qa["id"]
        texts = _answer_texts(qa, source)
        has_answer[qid] = bool(texts)
        golds = [t for t in texts if normalize_answer(t)] or [""]
        if qid not in predictions:
            missing.append(str(qid))
            exact[qid] = f1[qid] = 0.0
            continue
        prediction = predictions[qid]
        exact[qid] = max(exact_match(prediction, g) for g in golds)
        f1[qid] = max(f1_score(prediction, g, "2.0") for g in golds)
    _warn_missing(missing)
    if not has_answer:
        raise SquadError(f"{source}: holds no questions")
    probs = na_probs if na_probs is not None else dict.fromkeys(predictions, 0.0)
    thresholded = {}
    for name, raw in (("exact", exact), ("f1", f1)):
        thresholded[name] = {
            qid: float(not has_answer[qid]) if probs.get(qid, 0.0) > na_prob_thresh else score
            for qid, score in raw.items()
        }
    ids = list(has_answer)
    result: dict[str, float] = {
        "exact": _mean_percent(thresholded["exact"], ids),
        "f1": _mean_percent(thresholded["f1"], ids),
        "total": len(ids),
    }
    for name, subset in (
        ("HasAns", [q for q in ids if has_answer[q]]),
        ("NoAns", [q for q in ids if not has_answer[q]]),
    ):
        if subset:
            result[f"{name}_exact"] = _mean_percent(thresholded["exact"], subset)
            result[f"{name}_f1"] = _mean_percent(thresholded["f1"], subset)
            result[f"{name}_total"] = len(subset)
    if na_probs is not None:
        answered = {qid: predictions.get(qid, "") for qid in ids}
        for name, raw in (("exact", exact), ("f1", f1)):
            best, threshold = _best_threshold(raw, answered, na_probs, has_answer)
            result[f"best_{name}"] = best
            result[f"best_{name}_thresh"] = threshold
    return result


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    predictions = load_json(path, "predictions")
    if not isinstance(predictions, dict):
        raise SquadError(f"predictions {path}: not a JSON object of question id -> answer text")
    bad = [qid for qid, text in predictions.items() if not isinstance(text, str)]
    if bad:
        raise SquadError(f"predictions {path}: the answer of question {bad[0]} is not a string")
    return predictions


def load_na_probs(path: str | os.PathLike) -> dict[str, float]:
    na_probs = load_json(path, "na-prob file")
    if not isinstance(na_probs, dict):
        raise SquadError(f"na-prob file {path}: not a JSON object of question id -> probability")
    return na_probs


def dataset_version(dataset: dict[str, Any]) -> str:
    """ "2.0" for a file marked v2.0, else "1.1"."""
    return "2.0" if str(dataset.get("version", "")).lstrip("v") == "2.0" else "1.1"


def load_dataset(path: str | os.PathLike) -> dict[str, Any]:
    dataset = load_json(path, "SQuAD data")
    if not isinstance(dataset, dict):
        raise SquadError(f"SQuAD data {path}: not a JSON object")
    return dataset


def evaluate(
    dataset: dict[str, Any],
    predictions: dict[str, str],
    version: str | None = None,
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    source: str = "data",
) -> dict[str, float]:
    """v1.1 or v2.0 metrics; `version` None: the one the dataset names."""
    version = version or dataset_version(dataset)
    if version != dataset_version(dataset):
        print(
            f"warning: {source} is marked as version {dataset.get('version')!r}; "
            f"scoring it as {version}",
            file=sys.stderr,
        )
    if version == "1.1":
        return evaluate_v1(dataset, predictions, source)
    return evaluate_v2(dataset, predictions, na_probs, na_prob_thresh, source)


def evaluate_files(
    data_file: str | os.PathLike,
    prediction_file: str | os.PathLike,
    version: str | None = None,
    na_prob_file: str | os.PathLike | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Score a predictions file against a SQuAD data file (see `evaluate`)."""
    return evaluate(
        load_dataset(data_file),
        load_predictions(prediction_file),
        version,
        load_na_probs(na_prob_file) if na_prob_file is not None else None,
        na_prob_thresh,
        str(data_file),
    )


def format_result(result: dict[str, float], version: str) -> str:
    """JSON as the official scripts print it: one line for v1.1, indented for v2.0."""
    return json.dumps(result) if version == "1.1" else json.dumps(result, indent=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m bert.squad_eval",
        description="Exact match and F1 of SQuAD v1.1 / v2.0 predictions.",
    )
    p.add_argument("data_file", help="SQuAD-format JSON with the gold answers")
    p.add_argument("pred_file", help="JSON object: question id -> predicted answer text")
    p.add_argument(
        "--version", choices=("1.1", "2.0"), default=None, help="when not given: the file's"
    )
    p.add_argument(
        "--na-prob-file",
        "-n",
        default=None,
        help="v2.0: question id -> P(no answer), or run_squad's null_odds.json",
    )
    p.add_argument(
        "--na-prob-thresh",
        "-t",
        type=cli.any_float,
        default=1.0,
        help="v2.0: no answer above (any number: null odds may be negative)",
    )
    p.add_argument("--out-file", "-o", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that v1.1 scoring would ignore, refused before any file is read."""
    cli.check_args(
        p,
        "--version 1.1 conflicts with --na-prob-file: v1.1 has no unanswerable questions"
        if args.version == "1.1" and args.na_prob_file
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dataset = load_dataset(args.data_file)
        version = args.version or dataset_version(dataset)
        na_probs = load_na_probs(args.na_prob_file) if args.na_prob_file else None
        result = evaluate(
            dataset,
            load_predictions(args.pred_file),
            version,
            na_probs,
            args.na_prob_thresh,
            args.data_file,
        )
    except SquadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = format_result(result, version)
    print(text)
    if args.out_file:
        Path(args.out_file).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
