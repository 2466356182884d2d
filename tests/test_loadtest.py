"""scripts/loadtest.py: throughput and latency of a running server under real requests.

The flags, the reading of the data and of perf_analyzer's files are checked in this
interpreter. The load tests run against the tiny GNMT server of tests/test_gnmt_serve.py
(its fixtures, on free loopback ports), in the serving environment (.venv-serve), and are
skipped with the reason where it is missing; the perf_analyzer run is also skipped where
perf_analyzer does not run. Triton's statistics count the requests the server answered.
"""

import importlib.util
import json
import os
import subprocess
import urllib.request

import pytest

from common.benchmark import device_name, markdown_table
from scripts import loadtest
from tests import test_bert_serve, test_gnmt_serve
from tests.helpers import ROOT, clean_env
from tests.test_bert_serve import free_ports

serving_python = test_bert_serve.serving_python  # the fixtures: the serving environment,
toy = test_gnmt_serve.toy  # and a tiny GNMT checkpoint with English lines to translate

RUN_S = 120
REQUESTS = 9
CONCURRENCY = (1, 3)

# What perf_analyzer 2.51 wrote with -f (gRPC, then HTTP with --verbose-csv), microseconds.
CSV_SAMPLE = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency\n"
    "2,29.9849,6,538,2059,35,23029,255,2,26331,29795,35914,36100\n"
)
VERBOSE_CSV_SAMPLE = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,"
    "response wait\n"
    "4,39.9712,102,512,325,48,41908,310,0,44917,49326,50428,50497,43208,102,43084\n"
)


# ---------------------------------------------------------------------------- helpers


def run_loadtest(python, out_dir, *flags):
    argv = [str(python), "-m", "scripts.loadtest", *flags, "--out-dir", str(out_dir)]
    return subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=RUN_S)  # fmt: skip


def answered(server):
    """Requests the server's model has answered so far (Triton's statistics)."""
    with urllib.request.urlopen(f"{server.http}/v2/models/gnmt/stats", timeout=30) as reply:
        (stats,) = json.load(reply)["model_stats"]
    return stats["inference_stats"]["success"]["count"]


def rows_of(out_dir):
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    return report, report["results"]["gnmt"]["result"]["load"]


def markdown_cells(text):
    """The rows of report.md's table as {column: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]  # fmt: skip


def sentences_file(toy, tmp_path, *extra):
    path = tmp_path / "sentences.en"
    lines = toy["source"].read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(serving_python, toy):
    server = test_gnmt_serve.start_server(
        serving_python, toy["root"] / "loadtest.log", "--model", str(toy["checkpoint"]),
        "--max-queue-delay-us", "2000",
    )  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="module")
def python_run(serving_python, server, toy, tmp_path_factory):
    """The Python generator over gRPC at CONCURRENCY, REQUESTS each: (exit, stderr,
    report.json, its rows, report.md, requests the server answered meanwhile)."""
    out = tmp_path_factory.mktemp("python_run")
    before = answered(server)
    concurrency = ",".join(map(str, CONCURRENCY))
    done = run_loadtest(serving_python, out, "--url", f"127.0.0.1:{server.ports['grpc']}",
                        "--protocol", "grpc", "--model", "gnmt", "--data", str(toy["source"]),
                        "--concurrency", concurrency, "--requests", str(REQUESTS),
                        "--tool", "python")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report, rows = rows_of(out)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    return {"report": report, "rows": rows, "markdown": markdown,
            "answered": answered(server) - before}  # fmt: skip


# ----------------------------------------------------------------- flags and files


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--url", "http://h:8000"], "argument --url: must be HOST:PORT with a port from 1"),
        (["--url", "h:0"], "argument --url: must be HOST:PORT"),
        (["--concurrency", "1,0"], "argument --concurrency: must be distinct positive"),
        (["--concurrency", "4,4"], "argument --concurrency: must be distinct positive"),
        (["--requests", "0"], "argument --requests: must be a positive integer, got '0'"),
        (["--requests", "5", "--duration-s", "2"], "argument --duration-s: not allowed with"),
        (["--model", "bert"], "argument --model: invalid choice: 'bert'"),
        (["--tool", "locust"], "argument --tool: invalid choice: 'locust'"),
        (["--data", "missing.txt"], "--data missing.txt: no such file"),
    ],
)
def test_flag_mistakes_end_the_run_in_one_line(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lines.en").write_text("Hello.\n", encoding="utf-8")
    given = {"--url": "127.0.0.1:8000", "--model": "gnmt", "--data": "lines.en",
             "--out-dir": "out"}  # fmt: skip
    defaults = [x for k, v in given.items() if k not in flags for x in (k, v)]
    with pytest.raises(SystemExit) as exc:
        loadtest.main([*defaults, *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m scripts.loadtest: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is not None, reason="tritonclient is installed here"
)
def test_without_tritonclient_the_error_points_to_the_serving_environment(tmp_path, capsys):
    data = tmp_path / "lines.en"
    data.write_text("Hello.\n", encoding="utf-8")
    argv = ["--url", "127.0.0.1:8000", "--model", "gnmt", "--data", str(data),
            "--out-dir", str(tmp_path / "out")]  # fmt: skip
    assert loadtest.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: tritonclient[grpc,http] is not installed in ")
    assert ".venv-serve/bin/python" in err
    assert err.count("\n") == 1


def test_requests_are_the_squad_questions_with_their_contexts(tmp_path):
    squad = {"data": [{"paragraphs": [
        {"context": "Ada founded Selmoor.", "qas": [
            {"id": "1", "question": "Who founded Selmoor?"},
            {"id": "2", "question": "  "},
            {"id": "3", "question": "What did Ada found?"}]},
        {"context": "Bo läuft.", "qas": [{"id": "4", "question": "Wer läuft?"}]}]}]}  # fmt: skip
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad), encoding="utf-8")
    assert loadtest.read_requests("bert_squad", path) == [
        {"question": "Who founded Selmoor?", "context": "Ada founded Selmoor."},
        {"question": "What did Ada found?", "context": "Ada founded Selmoor."},
        {"question": "Wer läuft?", "context": "Bo läuft."},
    ]


def test_requests_are_the_nonblank_lines_of_a_text_file(tmp_path):
    path = tmp_path / "lines.en"
    path.write_text("The cat.\n\n  \nThe dog sleeps.\n", encoding="utf-8")
    assert loadtest.read_requests("gnmt", path) == [
        {"source": "The cat."},
        {"source": "The dog sleeps."},
    ]


def test_a_file_without_requests_is_refused(tmp_path):
    path = tmp_path / "blank.en"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(loadtest.UserError, match="holds no sentence"):
        loadtest.read_requests("gnmt", path)


def test_perf_analyzer_input_holds_each_request_for_a_batch_of_one(tmp_path):
    requests = [
        {"question": "Wer läuft?", "context": "Bo läuft."},
        {"question": "Q", "context": "C"},
    ]
    loadtest.write_perf_analyzer_input(requests, tmp_path / "input.json")
    assert json.loads((tmp_path / "input.json").read_text(encoding="utf-8")) == {
        "data": [
            {"question": ["Wer läuft?"], "context": ["Bo läuft."]},
            {"question": ["Q"], "context": ["C"]},
        ]
    }


def test_perf_analyzer_csv_is_read_in_seconds():
    assert loadtest.parse_perf_analyzer_csv(VERBOSE_CSV_SAMPLE) == {
        "concurrency": 4,
        "requests/s": 39.9712,
        "latency_avg": pytest.approx(0.043208),
        "latency_p50": pytest.approx(0.044917),
        "latency_p90": pytest.approx(0.049326),
        "latency_p95": pytest.approx(0.050428),
        "latency_p99": pytest.approx(0.050497),
    }


def test_perf_analyzer_csv_without_verbose_columns_has_no_mean():
    summary = loadtest.parse_perf_analyzer_csv(CSV_SAMPLE)
    assert summary["concurrency"] == 2
    assert summary["latency_avg"] is None
    assert summary["latency_p99"] == pytest.approx(0.0361)


def test_profile_export_gives_latencies_failures_and_elapsed(tmp_path):
    start = 1_796_152_902_529_135_875  # nanoseconds, as perf_analyzer writes them
    requests = [
        {"timestamp": start, "response_timestamps": [start + 40_000_000]},
        {"timestamp": start + 5_000_000, "response_timestamps": []},
        {"timestamp": start + 10_000_000, "response_timestamps": [start + 90_000_000]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"experiments": [{"requests": requests}]}), encoding="utf-8")
    latencies, failed, elapsed = loadtest.read_profile_export(path)
    assert latencies == pytest.approx([0.04, 0.08])
    assert failed == 1
    assert elapsed == pytest.approx(0.09)


def test_a_run_whose_requests_all_failed_shows_no_latencies():
    row = loadtest.result_row("python", "http", 2, [], 3, 0.5, "refused")
    assert (row["requests"], row["errors"], row["requests/s"]) == (3, 3, 0.0)
    assert [row[f"latency_{k}"] for k in ("avg", "p50", "p90", "p95", "p99")] == [None] * 5
    (cells,) = markdown_cells(markdown_table(loadtest.markdown_rows([row]), loadtest.COLUMNS))
    assert (cells["requests"], cells["p50 (ms)"], cells["elapsed (s)"]) == ("3", "", "0.50")


# ------------------------------------------------------------------ against a server


@pytest.mark.slow
def test_python_generator_reports_one_row_per_concurrency(python_run):
    rows = python_run["rows"]
    assert [r["concurrency"] for r in rows] == list(CONCURRENCY)
    assert {(r["tool"], r["protocol"]) for r in rows} == {("python", "grpc")}


@pytest.mark.slow
def test_counts_equal_the_requests_sent(python_run):
    assert [(r["requests"], r["errors"]) for r in python_run["rows"]] == [(REQUESTS, 0)] * 2
    warmups = sum(CONCURRENCY)  # one untimed request per client
    assert python_run["answered"] == REQUESTS * len(CONCURRENCY) + warmups


@pytest.mark.slow
def test_latency_percentiles_are_ordered(python_run):
    for r in python_run["rows"]:
        assert 0 < r["latency_p50"] <= r["latency_p90"] <= r["latency_p95"] <= r["latency_p99"]
        assert 0 < r["latency_avg"] <= r["latency_p99"]


@pytest.mark.slow
def test_throughput_is_answered_requests_over_elapsed(python_run):
    for r in python_run["rows"]:
        assert r["requests/s"] == pytest.approx(r["requests"] / r["elapsed_s"])
    serial = python_run["rows"][0]  # one at a time: the run lasts the sum of its latencies
    assert serial["elapsed_s"] >= serial["latency_avg"] * serial["requests"]


@pytest.mark.slow
def test_markdown_table_matches_json(python_run):
    cells = markdown_cells(python_run["markdown"])
    assert len(cells) == len(python_run["rows"])
    for row, shown in zip(python_run["rows"], cells, strict=True):
        assert shown["tool"] == row["tool"]
        assert shown["concurrency"] == str(row["concurrency"])
        assert shown["requests"] == str(row["requests"])
        assert shown["errors"] == str(row["errors"])
        assert shown["elapsed (s)"] == f"{row['elapsed_s']:.2f}"
        assert shown["requests/s"] == f"{row['requests/s']:.2f}"
        for name in ("avg", "p50", "p90", "p95", "p99"):
            assert shown[f"{name} (ms)"] == f"{row[f'latency_{name}'] * 1e3:.2f}"


@pytest.mark.slow
def test_report_names_the_client_and_the_served_model(python_run):
    setting = python_run["report"]["setting"]
    assert setting["client"]["cpu"] == device_name("cpu")
    assert setting["client"]["cores"] == len(os.sched_getaffinity(0))
    server = setting["server"]
    assert server["triton"] == "2.51.0"
    assert (server["backend"], server["runtime"], server["threads_per_instance"]) == (
        "python", "pytorch", 1)  # fmt: skip
    assert (server["instances"], server["max_batch_size"], server["max_queue_delay_us"]) == (
        1, test_gnmt_serve.MAX_BATCH, 2000)  # fmt: skip
    assert (
        "on the python backend running pytorch, 1 instance(s) x 1 thread(s)"
        in (python_run["markdown"])
    )


@pytest.mark.slow
def test_failed_requests_are_counted_marked_and_end_with_status_1(
    serving_python, server, toy, tmp_path
):
    data = sentences_file(toy, tmp_path, "x" * 10001)  # over the server's --max-input-chars
    n_lines = len(loadtest.read_requests("gnmt", data))
    done = run_loadtest(serving_python, tmp_path / "out", "--url",
                        f"127.0.0.1:{server.ports['http']}", "--model", "gnmt", "--data",
                        str(data), "--concurrency", "1", "--requests", str(n_lines),
                        "--tool", "python")  # fmt: skip
    assert done.returncode == 1
    message = "source has 10001 characters, more than the 10000 this server accepts"
    assert done.stderr.startswith(f"error: 1 of {n_lines} requests failed at concurrency 1 ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    _, (row,) = rows_of(tmp_path / "out")
    assert (row["requests"], row["errors"]) == (n_lines, 1)
    assert message in row["first_error"]
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"**Failed requests** at concurrency 1: 1 of {n_lines}" in markdown


@pytest.mark.slow
def test_a_server_that_is_not_there_ends_the_run_in_one_line(serving_python, toy, tmp_path):
    (port,) = free_ports(1)
    done = run_loadtest(serving_python, tmp_path / "out", "--url", f"127.0.0.1:{port}",
                        "--model", "gnmt", "--data", str(toy["source"]))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: no Triton server answers HTTP at 127.0.0.1:{port}: ")
    assert done.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def perf_analyzer(serving_python):
    """Skips the test where perf_analyzer does not run in the serving environment."""
    probe = ("import pathlib, sys, tempfile; from scripts import loadtest\n"
             "with tempfile.TemporaryDirectory() as links:\n"
             "    try: print(loadtest.find_perf_analyzer(pathlib.Path(links)).version)\n"
             "    except loadtest.UserError as exc: sys.exit(str(exc))")  # fmt: skip
    done = subprocess.run([str(serving_python), "-c", probe], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=RUN_S)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"perf_analyzer does not run: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


@pytest.mark.slow
def test_perf_analyzer_sends_the_requests_and_reports_the_same_table(
    serving_python, server, toy, perf_analyzer, tmp_path
):
    before = answered(server)
    done = run_loadtest(serving_python, tmp_path, "--url", f"127.0.0.1:{server.ports['http']}",
                        "--model", "gnmt", "--data", str(toy["source"]), "--concurrency", "2",
                        "--requests", str(REQUESTS), "--tool", "perf_analyzer")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert answered(server) - before == REQUESTS
    report, (row,) = rows_of(tmp_path)
    assert report["setting"]["client"]["perf_analyzer"] == perf_analyzer
    assert (row["tool"], row["protocol"], row["concurrency"]) == ("perf_analyzer", "http", 2)
    assert (row["requests"], row["errors"]) == (REQUESTS, 0)
    assert 0 < row["latency_p50"] <= row["latency_p90"] <= row["latency_p95"] <= row["latency_p99"]
    assert row["requests/s"] == pytest.approx(row["requests"] / row["elapsed_s"])
    # perf_analyzer's own mean, from its CSV, is over the same requests.
    assert row["perf_analyzer"]["latency_avg"] == pytest.approx(row["latency_avg"], rel=0.01)
    (shown,) = markdown_cells((tmp_path / "report.md").read_text(encoding="utf-8"))
    assert shown["requests"] == str(REQUESTS)
    assert shown["p99 (ms)"] == f"{row['latency_p99'] * 1e3:.2f}"
