"""Serve SQuAD question answering with Triton Inference Server, over HTTP and gRPC.

    python -m bert.serve --model results/squad                    # a fine-tuned checkpoint
    python -m bert.serve --model exported/squad --backend onnxruntime --int8
    answer = ask("127.0.0.1:8000", "Who founded the Selmoor Guild?", context)  # or grpc://...

The server is Triton Inference Server 2.51, the binary that the `nvidia-pytriton` wheel
ships (requirements-triton.txt; it needs numpy<2, so it lives in its own environment:
docs/DEPLOYMENT.md). This command writes a model repository holding one model,
`bert_squad`, for Triton's Python backend, starts Triton on it through PyTriton's
launcher, and stops it on SIGTERM or Ctrl-C: in-flight requests get --shutdown-timeout
seconds to finish, the ports are closed, and the exit status is 0.

A request holds `question` and `context`, BYTES [rows, 1] (UTF-8 text, rows <=
--max-batch-size); the response holds `answer` (BYTES [rows, 1], UTF-8, "" for no
answer) and `score` (FP32 [rows, 1]: the answer's probability among the n-best answers
of its question). Each instance of the model tokenizes, cuts the context into windows of
--max_seq_length tokens every --doc_stride tokens, runs the model and picks the best
span with bert/squad.py, exactly as `run_squad --do_predict` does with the same flags.
Triton's dynamic batcher gathers the requests that arrive within --max-queue-delay-us
into one call, whose windows then run in batches of --predict_batch_size.

A request that cannot be answered gets an error of its own (HTTP 400, gRPC
INVALID_ARGUMENT), and the requests batched with it are answered: an empty or
whitespace-only text, bytes that are not UTF-8, a text over --max-question-chars or
--max-context-chars characters (Triton itself refuses a wrong data type or shape, a
missing input, and more rows than --max-batch-size).

Triton's own endpoints: health at /v2/health/live and /v2/health/ready (HTTP) or
ServerLive and ServerReady (gRPC), statistics at /v2/models/bert_squad/stats, Prometheus
metrics at http://HOST:METRICS_PORT/metrics. Every port is bound to --host, 127.0.0.1
unless told otherwise: Triton has no authentication, so expose it on purpose only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bert import export, squad
from bert.finetune import select
from bert.model import check_vocab
from bert.tokenization import FullTokenizer
from common import cli, serving
from common.onnxrt import cpu_session
from common.serving import RequestError, ServeError
from common.triton_repo import TensorSpec

MODEL_NAME = "bert_squad"
INPUTS = ("question", "context")
BACKENDS = ("pytorch", "onnxruntime")


@dataclass(frozen=True)
class Settings:
    """What a model instance needs, handed to Triton as JSON in the model's config."""

    model: str  # folder: a fine-tuned checkpoint (pytorch) or a bert.export folder
    backend: str = "pytorch"
    int8: bool = False  # onnxruntime: model.int8.onnx
    threads: int = 1  # per model instance
    do_lower_case: bool = True
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    predict_batch_size: int = 8  # windows per model call
    max_question_chars: int = 1000
    max_context_chars: int = 20000


@dataclass(frozen=True)
class Answer:
    text: str  # "" when the model finds none (SQuAD v2.0)
    score: float  # probability among the question's n-best answers


# ----------------------------------------------------------------------- the answers


class QuestionAnswerer:
    """A SQuAD model with its tokenizer: questions and contexts in, answers out, as
    run_squad --do_predict computes them. Used by every model instance, and in-process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        folder = Path(settings.model)
        if not folder.is_dir():
            raise ServeError(f"--model {folder}: no such folder")
        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            raise ServeError(f"--model {folder} holds no vocab.txt")
        self.tokenizer = FullTokenizer(vocab, do_lower_case=settings.do_lower_case)
        if settings.backend == "onnxruntime":
            positions = self._load_onnx(folder)
        else:
            positions = self._load_torch(folder)
        if settings.max_seq_length > positions:
            raise ServeError(
                f"--max_seq_length {settings.max_seq_length} exceeds the {positions} "
                f"positions of the model in {folder}"
            )

    def _load_torch(self, folder: Path) -> int:
        self.model = export.load_model(folder, "squad")  # refuses a head left random
        try:
            check_vocab(self.model, self.tokenizer)
        except ValueError as exc:
            raise ServeError(str(exc)) from exc
        self.session = None
        return self.model.config.max_position_embeddings

    def _load_onnx(self, folder: Path) -> int:
        report_file = folder / export.REPORT_FILE
        name = export.INT8_FILE if self.settings.int8 else export.MODEL_FILE
        if not report_file.is_file() or not (folder / name).is_file():
            raise ServeError(
                f"--model {folder} is not a folder written by python -m bert.export "
                f"(it lacks {export.REPORT_FILE} or {name}; --int8 needs an export with --int8)"
            )
        report = json.loads(report_file.read_text(encoding="utf-8"))
        if report.get("task") != "squad":
            raise ServeError(f"--model {folder} holds a {report.get('task')} model, not SQuAD")
        self.model = None
        self.session = cpu_session(folder / name, threads=self.settings.threads)
        return int(report["max_seq_length"])

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[Answer]:
        """The answer to each (question, context); texts must hold words (`read_text`)."""
        s = self.settings
        examples = [
            squad.SquadExample(str(i), question, squad.split_words(context)[0])
            for i, (question, context) in enumerate(pairs)
        ]
        features = squad.make_features(
            examples, self.tokenizer, s.max_seq_length, s.doc_stride, s.max_query_length
        )
        tensors = squad.features_to_tensors(features, s.max_seq_length, training=False)
        start_logits, end_logits = self.logits(tensors)
        predictions, nbest, _ = squad.predict_answers(
            examples,
            features,
            start_logits,
            end_logits,
            n_best_size=s.n_best_size,
            max_answer_length=s.max_answer_length,
            do_lower_case=s.do_lower_case,
            version_2=s.version_2_with_negative,
            null_score_diff_threshold=s.null_score_diff_threshold,
        )
        answers = []
        for example in examples:
            text = predictions[example.qid]
            score = next(e["probability"] for e in nbest[example.qid] if e["text"] == text)
            answers.append(Answer(text, float(score)))
        return answers

    def logits(self, tensors: dict[str, torch.Tensor]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start and end logits of every window ([tokens] each), in the order of
        `tensors`; windows run shortest first, cut to their longest (as finetune.infer)."""
        order = torch.argsort(tensors["attention_mask"].sum(1), stable=True)
        starts: list[np.ndarray | None] = [None] * len(order)
        ends: list[np.ndarray | None] = [None] * len(order)
        for index in order.split(self.settings.predict_batch_size):
            batch = select(tensors, index, torch.device("cpu"))
            if self.session is not None:
                feed = {name: batch[name].numpy() for name in export.INPUT_NAMES}
                start, end = self.session.run(None, feed)
            else:
                with torch.inference_mode():
                    out = self.model(*(batch[name] for name in export.INPUT_NAMES))
                start, end = (o.float().numpy() for o in out)
            for row, i in enumerate(index.tolist()):
                starts[i], ends[i] = start[row], end[row]
        return starts, ends


def read_text(value: Any, name: str, limit: int, flag: str) -> str:
    """The text of one BYTES element of input `name`; `RequestError` saying what is wrong
    when it is not UTF-8, holds no word, or has more than `limit` characters."""
    text = serving.decode_text(value, name, limit, flag)
    if not text.strip():
        raise RequestError(f"{name} is empty")
    return text


def read_rows(columns: dict[str, np.ndarray], settings: Settings) -> list[tuple[str, str]]:
    """(question, context) of each row of one request's inputs ([rows, 1] each)."""
    limits = {
        "question": (settings.max_question_chars, "--max-question-chars"),
        "context": (settings.max_context_chars, "--max-context-chars"),
    }
    rows = []
    n = len(columns["question"])
    for r in range(n):
        texts = []
        for name in INPUTS:
            try:
                texts.append(read_text(columns[name][r][0], name, *limits[name]))
            except RequestError as exc:
                raise RequestError(f"row {r}: {exc}" if n > 1 else str(exc)) from None
        rows.append((texts[0], texts[1]))
    return rows


# --------------------------------------------------------------- the Triton model


class TritonPythonModel:
    """The model as Triton's Python backend runs it (one per instance, in its own
    process): each call answers the requests that the dynamic batcher gathered, with an
    error response for each request that cannot be answered."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self.pb = pb_utils
        self.settings = serving.read_settings(args, Settings)
        torch.set_num_threads(self.settings.threads)
        self.answerer = QuestionAnswerer(self.settings)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        pairs: list[tuple[str, str]] = []
        spans = []  # (request, first pair, pairs)
        for i, request in enumerate(requests):
            columns = {n: pb.get_input_tensor_by_name(request, n).as_numpy() for n in INPUTS}
            try:
                rows = read_rows(columns, self.settings)
            except RequestError as exc:
                error = pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
                responses[i] = pb.InferenceResponse(output_tensors=[], error=error)
                continue
            spans.append((i, len(pairs), len(rows)))
            pairs += rows
        answers = self.answerer.answer(pairs) if pairs else []
        for i, first, n in spans:
            mine = answers[first : first + n]
            text = np.array([[a.text.encode("utf-8")] for a in mine], dtype=np.object_)
            score = np.array([[a.score] for a in mine], dtype=np.float32)
            responses[i] = pb.InferenceResponse(
                output_tensors=[pb.Tensor("answer", text), pb.Tensor("score", score)]
            )
        return responses


# ------------------------------------------------------------------------ the client


def ask(url: str, question: str, context: str, timeout_s: float = 60.0) -> Answer:
    """The server's answer to `question` about `context`. `url` is HOST:PORT or
    http://HOST:PORT for HTTP, grpc://HOST:PORT for gRPC. A refused request raises
    `RequestError` with the server's message; needs tritonclient[grpc,http]."""
    inputs = {
        name: np.array([[text.encode("utf-8")]], dtype=np.object_)
        for name, text in zip(INPUTS, (question, context), strict=True)
    }
    with serving.Client(url, timeout_s) as client:
        result = client.infer(MODEL_NAME, inputs)
    return Answer(
        result.as_numpy("answer")[0, 0].decode("utf-8"), float(result.as_numpy("score")[0, 0])
    )


# ------------------------------------------------------------------------ the server


def serve(args: argparse.Namespace) -> int:
    """Check the ports and the model, start Triton, wait for SIGTERM or SIGINT, stop Triton."""
    serving.check_server(args)
    settings = settings_from_args(args)
    QuestionAnswerer(settings)  # the model's problems as one line, before Triton starts
    serving.serve_python_model(
        args,
        MODEL_NAME,
        "bert.serve",
        inputs=[TensorSpec(name, "TYPE_STRING", [1]) for name in INPUTS],
        outputs=[TensorSpec("answer", "TYPE_STRING", [1]), TensorSpec("score", "TYPE_FP32", [1])],
        settings=settings,
        label=f"{MODEL_NAME} ({args.backend})",
    )
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"model"}
    return Settings(model=str(args.model.resolve()), **{k: getattr(args, k) for k in fields})


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.serve", description=__doc__.splitlines()[0])
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        type=Path,
        required=True,
        help="pytorch: a checkpoint fine-tuned on SQuAD (run_squad's output folder); "
        "onnxruntime: a folder written by python -m bert.export --task squad",
    )
    m.add_argument("--backend", choices=BACKENDS, default="pytorch", help="what runs the model")
    m.add_argument("--int8", action="store_true", help="onnxruntime: serve model.int8.onnx")
    m.add_argument(
        "--do_lower_case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower-case and strip accents (uncased models), as in fine-tuning",
    )
    s = p.add_argument_group("SQuAD (as run_squad --do_predict)")
    squad.add_window_flags(s)
    t = serving.add_server_flags(p)
    t.add_argument(
        "--max-question-chars", type=cli.positive_int, default=1000, help="longer is refused"
    )
    t.add_argument(
        "--max-context-chars", type=cli.positive_int, default=20000, help="longer is refused"
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations refused before the model is read."""
    cli.check_args(
        p,
        "--int8 is for --backend onnxruntime"
        if args.int8 and args.backend != "onnxruntime"
        else None,
        *serving.server_flag_problems(args),
        squad.window_problem(args),
    )


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
