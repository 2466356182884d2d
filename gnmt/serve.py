"""Serve GNMT translation with Triton Inference Server, over HTTP and gRPC.

    python -m gnmt.serve --model results/gnmt/model_best.pth     # ours or NVIDIA's
    python -m gnmt.serve --onnx-dir exported/gnmt                # python -m gnmt.export
    german = translate("127.0.0.1:8000", ["Hello world."])       # or grpc://127.0.0.1:8001

The server is the Triton Inference Server that bert.serve uses (common/serving.py: the
tritonserver binary of `nvidia-pytriton`, from the numpy<2 environment of
requirements-triton.txt). Its one model, `gnmt`, runs in Triton's Python backend: a
checkpoint in PyTorch (--model) or a gnmt.export folder in onnxruntime (--onnx-dir),
on the CPU in fp32, with gnmt.translate's tokenizer, beam search and detokenizer.

A request holds `source`, BYTES [rows, 1] (one English sentence per row, UTF-8, rows <=
--max-batch-size); the response holds `translation`, BYTES [rows, 1] (UTF-8). A blank
source gets an empty translation, as gnmt.translate gives an empty line for one. Triton's
dynamic batcher hands the requests that arrive within --max-queue-delay-us to one call.

Each sentence is beam-searched alone by default (--search-batch-size 1), so its
translation is, token for token, the one `python -m gnmt.translate --batch-size 1` writes
with the same search flags, whatever it is batched with. Sentences searched together
go through matrix products of another batch size, which round differently in the last
bits (measured on the CPU: a sentence's encoder outputs and first logits move by ~5e-7
between a batch of 1 and one of 12 sentences of its length; padding alone moved
nothing), so in a near-tie its translation could depend on the sentences beside it;
gnmt.translate's output depends on --batch-size in the same way.
--search-batch-size N searches up to N sentences of a call together (faster) and gives
up that guarantee.

A request that cannot be translated gets an error of its own (HTTP 400, gRPC
INVALID_ARGUMENT) and the requests batched with it are translated: bytes that are not
UTF-8, a source over --max-input-chars characters or --max-input-length tokens (which
gnmt.translate would cut; a server refuses instead, since it cannot warn). Triton
refuses a wrong data type or shape, an unknown input and more rows than --max-batch-size.
Every port is bound to --host, 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import cli, serving
from common.serving import RequestError
from common.triton_repo import TensorSpec
from gnmt.beam_search import SearchConfig, add_scoring_flags
from gnmt.model import load_checkpoint
from gnmt.onnx_backend import load_onnx_folder
from gnmt.translate import translate_ids

MODEL_NAME = "gnmt"
INPUT, OUTPUT = "source", "translation"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Settings:
    """What a model instance needs, handed to Triton as JSON in the model's config."""

    model: str  # a checkpoint file (pytorch) or a gnmt.export folder (onnxruntime)
    backend: str = "pytorch"
    threads: int = 1  # per model instance
    beam_size: int = 5
    max_length: int = 150  # generated tokens, EOS included
    len_norm_factor: float = 0.6
    len_norm_const: float = 5.0
    cov_penalty_factor: float = 0.1
    beam_scoring: str = "nvidia"
    max_input_length: int = 150  # source tokens, BOS and EOS included
    max_input_chars: int = 10000
    search_batch_size: int = 1  # sentences beam-searched together


# -------------------------------------------------------------------- the translations


class Translator:
    """A GNMT (PyTorch or onnxruntime) with its tokenizer: source texts in, translations
    out, as gnmt.translate computes them. Used by every model instance, and in-process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.backend == "onnxruntime":
            self.model, self.tokenizer = load_onnx_folder(settings.model, settings.threads)
        else:
            self.model, self.tokenizer = load_checkpoint(settings.model, map_location=CPU)
        self.search = SearchConfig(
            settings.beam_size,
            settings.max_length,
            settings.len_norm_factor,
            settings.len_norm_const,
            settings.cov_penalty_factor,
            settings.beam_scoring,
        )

    def encode(self, value: Any) -> list[int] | None:
        """The ids (BOS ... EOS) of one BYTES element, None for a blank text;
        `RequestError` saying what is wrong with one that cannot be translated."""
        s = self.settings
        text = serving.decode_text(value, INPUT, s.max_input_chars, "--max-input-chars")
        if not text.strip():
            return None
        ids = self.tokenizer.encode(text)
        if len(ids) > s.max_input_length:
            raise RequestError(
                f"{INPUT} has {len(ids)} tokens, more than the {s.max_input_length} this "
                "server accepts (--max-input-length, BOS and EOS included)"
            )
        return ids

    def encode_rows(self, values: np.ndarray) -> list[list[int] | None]:
        """`encode` of each row of one request's input ([rows, 1]); errors name the row."""
        rows = []
        for r, (value,) in enumerate(values):
            try:
                rows.append(self.encode(value))
            except RequestError as exc:
                raise RequestError(f"row {r}: {exc}" if len(values) > 1 else str(exc)) from None
        return rows

    def translate(self, sources: Sequence[list[int] | None]) -> list[str]:
        """The translation of each source (from `encode`; "" for None), in order."""
        todo = [i for i, ids in enumerate(sources) if ids is not None]
        with torch.inference_mode():
            hyps = translate_ids(
                self.model,
                [sources[i] for i in todo],
                self.settings.search_batch_size,
                self.search,
                CPU,
            )
        out = [""] * len(sources)
        for i, hyp in zip(todo, hyps, strict=True):
            out[i] = self.tokenizer.decode(hyp)
        return out


# --------------------------------------------------------------- the Triton model


class TritonPythonModel:
    """The model as Triton's Python backend runs it (one per instance, in its own
    process): each call translates the requests that the dynamic batcher gathered, with
    an error response for each request that cannot be translated."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self.pb = pb_utils
        settings = serving.read_settings(args, Settings)
        torch.set_num_threads(settings.threads)
        self.translator = Translator(settings)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        sources: list[list[int] | None] = []
        spans = []  # (request, its first source, its rows)
        for i, request in enumerate(requests):
            values = pb.get_input_tensor_by_name(request, INPUT).as_numpy()
            try:
                rows = self.translator.encode_rows(values)
            except RequestError as exc:
                error = pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
                responses[i] = pb.InferenceResponse(output_tensors=[], error=error)
                continue
            spans.append((i, len(sources), len(rows)))
            sources += rows
        translations = self.translator.translate(sources)
        for i, first, n in spans:
            mine = [t.encode("utf-8") for t in translations[first : first + n]]
            tensor = pb.Tensor(OUTPUT, np.array(mine, dtype=np.object_).reshape(-1, 1))
            responses[i] = pb.InferenceResponse(output_tensors=[tensor])
        return responses


# ------------------------------------------------------------------------ the client


def translate(
    url: str, lines: Sequence[str], parallel: int = 8, timeout_s: float = 120.0
) -> list[str]:
    """The server's translation of each line, in order. Each line is one request, with
    `parallel` in flight at once (the server batches them). `url` is HOST:PORT or
    http://HOST:PORT for HTTP, grpc://HOST:PORT for gRPC. A refused line raises
    `RequestError` with its number (from 1) and the server's message; needs
    tritonclient[grpc,http]."""
    mine = threading.local()
    clients: list[serving.Client] = []

    def one(line: str) -> str:
        if not hasattr(mine, "client"):  # a client per thread: HTTP's is not thread-safe
            mine.client = serving.Client(url, timeout_s)
            clients.append(mine.client)
        source = np.array([[line.encode("utf-8")]], dtype=np.object_)
        result = mine.client.infer(MODEL_NAME, {INPUT: source})
        return result.as_numpy(OUTPUT)[0, 0].decode("utf-8")

    def result(number: int, future: Future) -> str:
        try:
            return future.result()
        except RequestError as exc:
            raise RequestError(f"line {number}: {exc}") from None

    pool = ThreadPoolExecutor(parallel)
    try:
        futures = [pool.submit(one, line) for line in lines]
        return [result(number, future) for number, future in enumerate(futures, 1)]
    finally:
        pool.shutdown(cancel_futures=True)
        for client in clients:
            client.close()


# ------------------------------------------------------------------------ the server


def serve(args: argparse.Namespace) -> int:
    """Check the ports and the model, start Triton, wait for SIGTERM or SIGINT, stop Triton."""
    serving.check_server(args)
    settings = settings_from_args(args)
    Translator(settings)  # the model's problems as one line, before Triton starts
    serving.serve_python_model(
        args,
        MODEL_NAME,
        "gnmt.serve",
        inputs=[TensorSpec(INPUT, "TYPE_STRING", [1])],
        outputs=[TensorSpec(OUTPUT, "TYPE_STRING", [1])],
        settings=settings,
        label=f"{MODEL_NAME} ({settings.backend})",
    )
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"model", "backend"}
    if args.onnx_dir is not None:
        model, backend = args.onnx_dir, "onnxruntime"
    else:
        model, backend = args.model, "pytorch"
    return Settings(
        model=str(model.resolve()), backend=backend, **{k: getattr(args, k) for k in fields}
    )


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.serve", description=__doc__.splitlines()[0])
    m = p.add_argument_group("model").add_mutually_exclusive_group(required=True)
    m.add_argument(
        "--model",
        type=Path,
        metavar="CHECKPOINT",
        help="a GNMT checkpoint, ours or NVIDIA's: served with PyTorch",
    )
    m.add_argument(
        "--onnx-dir",
        type=Path,
        metavar="DIR",
        help="a folder written by python -m gnmt.export: served with onnxruntime",
    )
    s = p.add_argument_group("beam search (as python -m gnmt.translate)")
    s.add_argument("--beam-size", type=cli.positive_int, default=5, help="beam width")
    s.add_argument("--max-length", type=cli.positive_int, default=150, help="most tokens generated")
    add_scoring_flags(s)
    s.add_argument(
        "--search-batch-size",
        type=cli.positive_int,
        default=1,
        help="sentences searched together; 1 gives gnmt.translate --batch-size 1's "
        "translations exactly, more is faster but a near-tie may then depend on the batch",
    )
    t = serving.add_server_flags(p)
    t.add_argument(
        "--max-input-length",
        type=cli.positive_int,
        default=150,
        help="longer sources are refused (tokens, BOS and EOS included)",
    )
    t.add_argument(
        "--max-input-chars",
        type=cli.positive_int,
        default=10000,
        help="longer sources are refused before they are tokenized",
    )
    args = p.parse_args(argv)
    cli.check_args(
        p,
        f"--max-input-length must be at least 3 (BOS, a token, EOS), got {args.max_input_length}"
        if args.max_input_length < 3
        else None,
        *serving.server_flag_problems(args),
    )
    return args


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
