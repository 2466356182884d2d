"""Load a running Triton server with real requests: throughput and latency per concurrency.

    .venv-serve/bin/python -m scripts.loadtest --url 127.0.0.1:8000 --model gnmt \\
        --data newstest2014.en --concurrency 1,4,16 --duration-s 30 --out-dir results/load
    .venv-serve/bin/python -m scripts.loadtest --url 127.0.0.1:8001 --protocol grpc \\
        --model bert_squad --data dev-v1.1.json --requests 500 --out-dir results/load

The server is one of ours (python -m bert.serve, python -m gnmt.serve) or any server of
the model `bert_squad` (inputs `question`, `context`) or `gnmt` (input `source`). The
requests are the --data file's: for bert_squad a SQuAD JSON file (each question with its
paragraph's context), for gnmt a text file of one English sentence per line (blank lines
are skipped). Each request holds one of them ([1, 1] BYTES per input), in the file's
order, starting over at its end. Each concurrency C keeps C requests in flight, and
stops after --requests N requests or after --duration-s seconds (the default: 10 s).

Two tools send them:

- perf_analyzer (Triton's load generator; the tritonclient wheel puts it beside this
  interpreter), given the requests as its --input-data JSON file. With --duration-s it
  measures windows of that length until three in a row agree (perf_analyzer's
  stabilisation, at most 10 windows) and reports the last three.
- the Python generator: C threads, each with its own tritonclient client, which sends one
  untimed request (to connect), waits for the others, then sends requests one after the
  other. A refused or failed request is counted in `errors`; the report marks it, and
  the exit status is then 1.

--tool auto takes perf_analyzer where it runs and the Python generator otherwise.

Both tools report in the same way, from each request's send and response times: `requests`
sent, `errors`, `elapsed` (first request sent to last response), requests/s (answered
requests over elapsed) and the latency of the answered requests: mean and the 50th to
99th percentiles (common.benchmark.percentiles). perf_analyzer's own summary (its CSV)
is kept beside them in the JSON; its throughput is not used because with
--request-count it divides by a window of at least a second (20 requests answered in
0.30 s were reported as 19.99 infer/s).

Written into --out-dir, as scripts/benchmark.py writes its report:

    report.md      the client's CPU, the server (Triton's version, the model's backend,
                   instances, threads, batching, from the model's config) and the table,
                   latencies in ms
    report.json    the same, as data (latencies in seconds)
    perf_analyzer_input.json, perf_analyzer_c<C>.{csv,json,log}
                   perf_analyzer's input, CSV, per-request export and output

It needs tritonclient, so it runs from the serving environment (.venv-serve,
docs/DEPLOYMENT.md); elsewhere it stops with a line that says so.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import io
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from common import cli, serving
from common.atomic import atomic_write
from common.benchmark import device_name, markdown_table, percentiles, to_milliseconds, write_json
from common.errors import UserError
from common.serving import RequestError

MODELS = ("bert_squad", "gnmt")
TOOLS = ("auto", "perf_analyzer", "python")
PROTOCOL_NAMES = {"http": "HTTP", "grpc": "gRPC"}
DEFAULT_DURATION_S = 10.0
PERCENTILES = (50, 90, 95, 99)
TABLE = "load"
COLUMNS = ["tool", "protocol", "concurrency", "requests", "errors", "elapsed (s)",
           "requests/s", "avg (ms)", "p50 (ms)", "p90 (ms)", "p95 (ms)", "p99 (ms)"]  # fmt: skip
# The wheel of nvidia-pytriton ships these under names of its own (libb64-<hash>.so.0d);
# perf_analyzer asks for the plain names, so a folder of links gives it them.
LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


@dataclasses.dataclass(frozen=True)
class Limit:
    """When a concurrency's run ends: after `requests` requests, or `duration_s` seconds."""

    requests: int | None = None
    duration_s: float | None = None

    def describe(self) -> str:
        if self.requests is not None:
            return f"{self.requests} requests per concurrency"
        return f"{self.duration_s:g} s per concurrency"


# -------------------------------------------------------------------------- the data


def read_requests(model: str, path: Path) -> list[dict[str, str]]:
    """The requests of --data: {input name: text} each, in the file's order."""
    if model == "bert_squad":
        requests = read_squad_questions(path)
        what = "question with a context"
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"--data {path} is not UTF-8 text (byte {exc.start})") from None
        requests = [{"source": line} for line in lines if line.strip()]
        what = "sentence"
    if not requests:
        raise UserError(f"--data {path} holds no {what}")
    return requests


def read_squad_questions(path: Path) -> list[dict[str, str]]:
    """{"question", "context"} of each question of a SQuAD file that has both texts."""
    from bert.squad_eval import load_json

    dataset = load_json(path, "--data")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise UserError(f"--data {path} is not a SQuAD file: it has no 'data' list")
    pairs = []
    for article in filter(_is_dict, dataset["data"]):
        for paragraph in filter(_is_dict, article.get("paragraphs", [])):
            context = paragraph.get("context")
            for qa in filter(_is_dict, paragraph.get("qas", [])):
                question = qa.get("question")
                if _is_text(question) and _is_text(context):
                    pairs.append({"question": question, "context": context})
    return pairs


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def as_arrays(request: dict[str, str]) -> dict[str, np.ndarray]:
    """One request as tensors: each text UTF-8, BYTES [1, 1]."""
    return {name: np.array([[text.encode("utf-8")]], dtype=np.object_)
            for name, text in request.items()}  # fmt: skip


# ---------------------------------------------------------------------- the results


def result_row(
    tool: str,
    protocol: str,
    concurrency: int,
    latencies: Sequence[float],
    errors: int,
    elapsed: float,
    first_error: str | None = None,
) -> dict[str, Any]:
    """One concurrency's row of the report, from the answered requests' `latencies`
    (seconds) and the count of failed ones; throughput in answered requests/s."""
    row: dict[str, Any] = {
        "tool": tool,
        "protocol": protocol,
        "concurrency": concurrency,
        "requests": len(latencies) + errors,
        "errors": errors,
        "elapsed_s": elapsed,
        "requests/s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latency_avg": math.fsum(latencies) / len(latencies) if latencies else None,
    }
    spread = percentiles(latencies, PERCENTILES) if latencies else {}
    for p in PERCENTILES:
        row[f"latency_p{p}"] = spread.get(f"p{p}")
    row["first_error"] = first_error
    return row


# ------------------------------------------------------------ the Python generator


def run_python(
    url: str,
    model: str,
    requests: list[dict[str, str]],
    concurrency: int,
    limit: Limit,
    protocol: str,
) -> dict[str, Any]:
    """`concurrency` threads, each with its own client, sending `requests` round-robin
    until `limit`; the report's row."""
    tensors = [as_arrays(r) for r in requests]
    numbers = itertools.count()  # the next request to send, shared by the threads
    start: list[float] = []
    ready = threading.Barrier(concurrency, action=lambda: start.append(time.perf_counter()))

    def send(thread: int) -> tuple[list[float], list[tuple[float, str]], float]:
        """This thread's latencies, (time, message) of its failures, and its last response."""
        try:
            with serving.Client(url) as client:
                # Untimed: connects. Its failure is not counted; the timed requests' are.
                with contextlib.suppress(RequestError, OSError):
                    client.infer(model, tensors[thread % len(tensors)])
                ready.wait()
                deadline = start[0] + (limit.duration_s or math.inf)
                latencies, failures, end = [], [], start[0]
                for i in numbers:
                    if limit.requests is not None and i >= limit.requests:
                        break
                    if time.perf_counter() >= deadline:
                        break
                    sent = time.perf_counter()
                    try:
                        client.infer(model, tensors[i % len(tensors)])
                    except (RequestError, OSError) as exc:
                        end = time.perf_counter()
                        failures.append((end, str(exc) or type(exc).__name__))
                    else:
                        end = time.perf_counter()
                        latencies.append(end - sent)
                return latencies, failures, end
        except BaseException:
            ready.abort()  # the others stop waiting for this thread
            raise

    with ThreadPoolExecutor(concurrency) as pool:  # a thread each: they all block on `ready`
        futures = [pool.submit(send, n) for n in range(concurrency)]
    problems = [f.exception() for f in futures if f.exception() is not None]
    for problem in problems:
        if not isinstance(problem, threading.BrokenBarrierError):
            raise problem
    results = [f.result() for f in futures]
    latencies = [x for mine, _, _ in results for x in mine]
    failures = sorted(f for _, theirs, _ in results for f in theirs)
    elapsed = max(end for _, _, end in results) - start[0]
    first = failures[0][1] if failures else None
    return result_row("python", protocol, concurrency, latencies, len(failures), elapsed, first)


# ------------------------------------------------------------------- perf_analyzer


@dataclasses.dataclass(frozen=True)
class PerfAnalyzer:
    path: str
    env: dict[str, str]  # LD_LIBRARY_PATH with the wheel's libraries
    version: str


def find_perf_analyzer(links: Path) -> PerfAnalyzer:
    """perf_analyzer, checked to run, with links to its libraries made in `links`;
    `UserError` saying why it cannot run otherwise."""
    beside = Path(sys.prefix) / "bin" / "perf_analyzer"  # where the tritonclient wheel puts it
    path = str(beside) if beside.is_file() else shutil.which("perf_analyzer")
    if path is None:
        raise UserError(
            f"no perf_analyzer in {beside.parent} or on PATH (tritonclient's wheel has it)"
        )
    for folder in map(Path, sys.path):
        shipped = folder / "nvidia_pytriton.libs"
        if shipped.is_dir():
            for name, pattern in LIBRARIES.items():
                found = sorted(shipped.glob(pattern))
                if found:
                    (links / name).symlink_to(found[0])
            break
    before = os.environ.get("LD_LIBRARY_PATH")
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{links}{os.pathsep}{before}" if before else str(links),
    }
    try:
        done = subprocess.run([path, "--version"], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    except OSError as exc:
        raise UserError(f"{path} does not run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise UserError(f"{path} does not run: {last_line(done.stderr + done.stdout)}")
    version = done.stdout.strip().removeprefix("Perf Analyzer Version ").split(" ")[0]
    return PerfAnalyzer(path, env, version)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def write_perf_analyzer_input(requests: list[dict[str, str]], path: Path) -> None:
    """perf_analyzer's --input-data file: one entry per request, each input's content for
    a batch of one (its shape [1]; -b 1 adds the batch dimension), strings as text."""
    data = {"data": [{name: [text] for name, text in r.items()} for r in requests]}
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def perf_analyzer_args(
    model: str, address: str, protocol: str, concurrency: Any, limit: Limit, files: dict[str, Any]
) -> list[str]:
    """perf_analyzer's flags for one concurrency; `files`: input, csv and export."""
    args = ["-m", model, "-u", address, "-i", protocol, "-b", "1",
            "--input-data", str(files["input"]),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "-f", str(files["csv"]), "--verbose-csv",
            "--profile-export-file", str(files["export"])]  # fmt: skip
    if limit.requests is not None:
        return [*args, "--request-count", str(limit.requests)]
    return [*args, "--measurement-interval", str(max(round(limit.duration_s * 1000), 1))]


def run_perf_analyzer(
    tool: PerfAnalyzer,
    model: str,
    address: str,
    protocol: str,
    concurrency: int,
    limit: Limit,
    out_dir: Path,
) -> dict[str, Any]:
    """perf_analyzer at one concurrency; the report's row, with perf_analyzer's own
    summary (its CSV) under "perf_analyzer"."""
    stem = f"perf_analyzer_c{concurrency}"
    files = {"input": out_dir / "perf_analyzer_input.json", "csv": out_dir / f"{stem}.csv",
             "export": out_dir / f"{stem}.json"}  # fmt: skip
    files["export"].unlink(missing_ok=True)  # perf_analyzer will not write over one
    args = perf_analyzer_args(model, address, protocol, concurrency, limit, files)
    done = subprocess.run([tool.path, *args], env=tool.env, capture_output=True, text=True)
    log = out_dir / f"{stem}.log"
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise UserError(
            f"perf_analyzer stopped at concurrency {concurrency} (exit {done.returncode}): "
            f"{last_line(done.stdout + done.stderr)} (its output: {log})"
        )
    summary = parse_perf_analyzer_csv(files["csv"].read_text(encoding="utf-8"))
    latencies, failed, elapsed = read_profile_export(files["export"])
    row = result_row("perf_analyzer", protocol, concurrency, latencies, failed, elapsed)
    row["perf_analyzer"] = summary
    return row


CSV_LATENCIES = {"latency_avg": "Avg latency", "latency_p50": "p50 latency",
                 "latency_p90": "p90 latency", "latency_p95": "p95 latency",
                 "latency_p99": "p99 latency"}  # fmt: skip


def parse_perf_analyzer_csv(text: str) -> dict[str, Any]:
    """perf_analyzer's summary in its -f CSV (one concurrency): {"concurrency",
    "requests/s", "latency_avg", "latency_p50", ... "latency_p99"}, latencies in seconds
    (the CSV's are microseconds); "latency_avg" is None without --verbose-csv."""
    table = text.strip().split("\n\n")[0]  # --collect-metrics appends a second table
    rows = list(csv.DictReader(io.StringIO(table)))
    if not rows or "Inferences/Second" not in rows[0]:
        raise UserError("perf_analyzer's CSV holds no measurement")
    row = rows[0]
    summary: dict[str, Any] = {
        "concurrency": int(row["Concurrency"]),
        "requests/s": float(row["Inferences/Second"]),
    }
    for key, column in CSV_LATENCIES.items():
        summary[key] = int(row[column]) * 1e-6 if row.get(column) else None
    return summary


def read_profile_export(path: Path) -> tuple[list[float], int, float]:
    """From perf_analyzer's --profile-export-file: the latency of each answered request
    (seconds), the count of requests without a response, and the seconds from the first
    request sent to the last response."""
    (experiment,) = json.loads(path.read_text(encoding="utf-8"))["experiments"]
    requests = experiment["requests"]
    if not requests:
        raise UserError(f"perf_analyzer measured no request ({path})")
    latencies, failed, ends = [], 0, []
    for r in requests:
        if r["response_timestamps"]:
            ends.append(r["response_timestamps"][-1])
            latencies.append((ends[-1] - r["timestamp"]) * 1e-9)
        else:
            failed += 1
    first = min(r["timestamp"] for r in requests)
    return latencies, failed, (max(ends, default=first) - first) * 1e-9


# ------------------------------------------------------------------------ the server


def server_info(address: str, protocol: str, model: str) -> dict[str, Any]:
    """What the server says of itself and of `model` (Triton's version, the model's
    config); `UserError` when no server answers or the model is not ready."""
    module = serving.require(f"tritonclient.{protocol}")
    utils = serving.require("tritonclient.utils")
    as_json = {"as_json": True} if protocol == "grpc" else {}
    client = module.InferenceServerClient(address)
    try:
        try:
            live = client.is_server_live()
        except Exception as exc:  # refused, reset, another protocol: no server to load
            known = isinstance(exc, utils.InferenceServerException)
            reason = exc.message() if known else (str(exc) or type(exc).__name__)
            raise UserError(
                f"no Triton server answers {PROTOCOL_NAMES[protocol]} at {address}: "
                + " ".join(reason.split())
            ) from None
        if not live:
            raise UserError(f"the Triton server at {address} is not live")
        if not client.is_model_ready(model):
            index = client.get_model_repository_index(**as_json)
            index = index.get("models", []) if isinstance(index, dict) else index
            ready = [m["name"] for m in index if m.get("state") == "READY"]
            raise UserError(
                f"the server at {address} has no model {model} ready "
                f"(ready: {', '.join(ready) or 'none'})"
            )
        config = client.get_model_config(model, **as_json)
        metadata = client.get_server_metadata(**as_json)
    finally:
        client.close()
    return describe_server(address, protocol, model, config.get("config", config), metadata)


def describe_server(
    address: str, protocol: str, model: str, config: dict[str, Any], metadata: dict[str, Any]
) -> dict[str, Any]:
    """The report's server: its version, and from the model's config its backend,
    instances and batching, and the settings our servers store there (what runs the
    model and with how many threads), where present."""
    stored = config.get("parameters", {}).get("settings", {}).get("string_value")
    try:
        settings = json.loads(stored) if stored else None
    except json.JSONDecodeError:
        settings = None
    batching = config.get("dynamic_batching")
    return {
        "address": address,
        "protocol": protocol,
        "triton": metadata.get("version"),
        "model": model,
        "backend": config.get("backend") or config.get("platform") or None,
        "runtime": settings.get("backend") if isinstance(settings, dict) else None,
        "threads_per_instance": settings.get("threads") if isinstance(settings, dict) else None,
        "instances": sum(int(g.get("count", 1)) for g in config.get("instance_group", [])),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "max_queue_delay_us": (
            int(batching.get("max_queue_delay_microseconds", 0)) if batching is not None else None
        ),
        "settings": settings,
    }


# ------------------------------------------------------------------------ the report


def markdown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the table shows them: latencies in ms, elapsed in s, without the JSON's
    extras (first error, perf_analyzer's summary)."""
    shown = []
    for row in rows:
        known = {k: v for k, v in row.items() if v is not None and not isinstance(v, dict)}
        table = to_milliseconds(known, ("latency_",))
        table["elapsed (s)"] = table.pop("elapsed_s")
        shown.append(table)
    return shown


def render(setting: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """report.md: the machine and server, how the load was made, and the table."""
    client, server = setting["client"], setting["server"]
    tools = f", perf_analyzer {client['perf_analyzer']}" if client["perf_analyzer"] else ""
    runs = server["runtime"] or "its model"
    threads = server["threads_per_instance"]
    delay = server["max_queue_delay_us"]
    if setting["perf_analyzer_args"] is not None:
        flags = shlex.join(setting["perf_analyzer_args"])
        sender = f"perf_analyzer at each concurrency C: `perf_analyzer {flags}`"
    else:
        sender = (
            "The Python generator: C threads, each with its own tritonclient client, sending "
            "one untimed request first"
        )
    lines = [
        f"## {client['cpu']}",
        "",
        f"Measured {setting['date']} with `{setting['command']}`; client: "
        f"{client['cores']} CPU cores, Python {client['python']}, tritonclient "
        f"{client['tritonclient']}{tools}. Server: Triton {server['triton']} at "
        f"{server['address']} over {PROTOCOL_NAMES[server['protocol']]}; model `{server['model']}` "
        f"on the {server['backend']} backend running {runs}, {server['instances']} "
        f"instance(s) x {threads if threads is not None else 'unknown'} thread(s), max "
        f"batch {server['max_batch_size']}, "
        + (f"dynamic batching within {delay} us." if delay is not None else "no dynamic batching."),
        "",
        f"### {server['model']}",
        "",
        f"{sender}. {setting['data']['requests']} distinct requests from "
        f"`{setting['data']['file']}`, one row each, sent in order and round-robin; "
        f"{Limit(**setting['limit']).describe()}.",
        "",
        f"{TABLE} (latencies in ms):",
        "",
        markdown_table(markdown_rows(rows), COLUMNS),
    ]
    failed = [r for r in rows if r["errors"]]
    for row in failed:
        lines.append(
            f"**Failed requests** at concurrency {row['concurrency']}: {row['errors']} of "
            f"{row['requests']} (first: {row['first_error']}); the latencies and requests/s "
            "are of the answered ones."
        )
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: Path, setting: dict[str, Any], argv: list[str], rows: list[dict]) -> str:
    """report.md and report.json, as scripts/benchmark.py writes them; returns report.md."""
    text = render(setting, rows)
    with atomic_write(out_dir / "report.md", "w", encoding="utf-8") as f:
        f.write(text)
    model = setting["server"]["model"]
    results = {model: {"args": argv, "result": {TABLE: rows}}}
    write_json(out_dir / "report.json", {"setting": setting, "results": results})
    return text


# ------------------------------------------------------------------------ the run


def load_test(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        for protocol in ("http", "grpc"):
            importlib.import_module(f"tritonclient.{protocol}")
    except ImportError:
        raise UserError(
            f"tritonclient[grpc,http] is not installed in {sys.prefix}: run the load test "
            "with the serving environment's python, .venv-serve/bin/python (docs/DEPLOYMENT.md)"
        ) from None
    requests = read_requests(args.model, args.data)
    limit = Limit(args.requests, args.duration_s)
    server = server_info(args.url, args.protocol, args.model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loadtest-libs-") as links:
        tool = choose_tool(args.tool, Path(links))
        flags = None
        if tool is not None:
            write_perf_analyzer_input(requests, args.out_dir / "perf_analyzer_input.json")
            flags = perf_analyzer_args(args.model, args.url, args.protocol, "C", limit, {
                "input": "perf_analyzer_input.json", "csv": "perf_analyzer_cC.csv",
                "export": "perf_analyzer_cC.json"})  # fmt: skip
        rows = []
        for concurrency in args.concurrency:
            if tool is not None:
                row = run_perf_analyzer(tool, args.model, args.url, args.protocol,
                                        concurrency, limit, args.out_dir)  # fmt: skip
            else:
                url = f"{args.protocol}://{args.url}"
                row = run_python(url, args.model, requests, concurrency, limit, args.protocol)
            print(
                f"concurrency {concurrency}: {row['requests']} requests, {row['errors']} "
                f"failed, {row['requests/s']:.2f} requests/s", flush=True,
            )  # fmt: skip
            rows.append(row)
    setting = {
        "date": datetime.date.today().isoformat(),
        "command": f"python -m scripts.loadtest {shlex.join(argv)}",
        "tool": "perf_analyzer" if tool is not None else "python",
        "perf_analyzer_args": flags,  # C: the concurrency
        "client": client_info(tool),
        "server": server,
        "data": {"file": str(args.data), "model": args.model, "requests": len(requests)},
        "limit": dataclasses.asdict(limit),
    }
    print(write_report(args.out_dir, setting, argv, rows), end="")
    failed = [r for r in rows if r["errors"]]
    if failed:
        raise UserError(
            f"{sum(r['errors'] for r in failed)} of {sum(r['requests'] for r in failed)} "
            f"requests failed at concurrency {', '.join(str(r['concurrency']) for r in failed)} "
            f"(first: {failed[0]['first_error']}); {args.out_dir / 'report.md'} marks them"
        )
    return 0


def choose_tool(tool: str, links: Path) -> PerfAnalyzer | None:
    """perf_analyzer, or None for the Python generator (--tool auto: where it cannot run)."""
    if tool == "python":
        return None
    try:
        return find_perf_analyzer(links)
    except UserError as exc:
        if tool == "perf_analyzer":
            raise
        print(f"{exc}: using the Python load generator", file=sys.stderr, flush=True)
        return None


def client_info(tool: PerfAnalyzer | None) -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {
        "cpu": device_name("cpu"),
        "cores": cores,
        "python": platform.python_version(),
        "tritonclient": importlib.metadata.version("tritonclient"),
        "perf_analyzer": tool.version if tool is not None else None,
    }


# ---------------------------------------------------------------------- command line


def host_port(value: str) -> str:
    """argparse type for --url: HOST:PORT, the protocol being --protocol's."""
    host, _, port = value.rpartition(":")
    try:
        if "://" in value or not host:
            raise argparse.ArgumentTypeError
        serving.port(port)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be HOST:PORT with a port from 1 to 65535 (--protocol says HTTP or gRPC), "
            f"got {value!r}"
        ) from None
    return value


def concurrency_list(value: str) -> list[int]:
    """argparse type for --concurrency: distinct positive integers, comma-separated."""
    try:
        levels = [cli.positive_int(v.strip()) for v in value.split(",")]
    except argparse.ArgumentTypeError:
        levels = []
    if not levels or len(set(levels)) < len(levels):
        raise argparse.ArgumentTypeError(
            f"must be distinct positive integers, comma-separated, got {value!r}"
        )
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m scripts.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--url", type=host_port, required=True, metavar="HOST:PORT",
                   help="the server's HTTP or gRPC port (see --protocol)")  # fmt: skip
    p.add_argument("--model", choices=MODELS, required=True, help="the served model")
    p.add_argument("--data", type=Path, required=True, metavar="FILE",
                   help="bert_squad: a SQuAD JSON file; gnmt: sentences, one per line")  # fmt: skip
    p.add_argument("--concurrency", type=concurrency_list, default=[1, 4, 16],
                   help="requests in flight, one run each (comma-separated)")  # fmt: skip
    limit = p.add_mutually_exclusive_group()
    limit.add_argument(
        "--duration-s",
        type=cli.positive_float,
        default=None,
        help=f"seconds of each run (perf_analyzer: of each measurement window); "
        f"{DEFAULT_DURATION_S:g} when neither this nor --requests is given",
    )
    limit.add_argument("--requests", type=cli.positive_int, default=None,
                       help="requests of each run")  # fmt: skip
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--tool", choices=TOOLS, default="auto",
                   help="auto: perf_analyzer where it runs, else the Python generator")  # fmt: skip
    p.add_argument("--out-dir", type=Path, required=True, help="report.md, report.json, ...")
    args = p.parse_args(argv)
    check_flags(p, args)
    if args.requests is None and args.duration_s is None:
        args.duration_s = DEFAULT_DURATION_S
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations refused before any request is sent."""
    cli.check_args(
        p,
        None if args.data.is_file() else f"--data {args.data}: no such file",
        f"--out-dir {args.out_dir} is a file" if args.out_dir.is_file() else None,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.run_main(lambda: load_test(parse_args(argv), argv))


if __name__ == "__main__":
    sys.exit(main())
