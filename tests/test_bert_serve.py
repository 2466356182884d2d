"""bert.serve: SQuAD answers from a real Triton Inference Server, over HTTP and gRPC.

Triton needs the serving environment of requirements-triton.txt (numpy<2, so a virtual
environment of its own: docs/DEPLOYMENT.md), found at .venv-serve/bin/python or named by
$BERT_SERVE_PYTHON. Without it the tests that need a server are skipped with the reason.
The servers and their clients run in that interpreter; the predictions they must equal
come from run_squad --do_predict (or the onnxruntime model) in this one. The clients are
this file run as a script (`client_main`): JSON calls on stdin, JSON replies on stdout.
"""

import concurrent.futures
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from bert import run_squad, serve, toy_squad
from bert.export import export_bert
from bert.model import BertForQuestionAnswering
from bert.tiny import build_vocab, tiny_config
from tests import serving_client
from tests.helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = Path(os.environ.get("BERT_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
# Windows of 48 tokens every 16: each toy context needs several.
SQUAD_FLAGS = ("--max_seq_length", "48", "--doc_stride", "16", "--max_query_length", "16",
               "--predict_batch_size", "8")  # fmt: skip
MAX_BATCH = 4
START_S = 120  # a server is up within this, or the test fails with its log
STOP_S = 20  # SIGTERM to exit, with --shutdown-timeout 3
CLIENT_S = 120
OUTPUTS = ["answer", "score"]  # of a raw request's reply


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def serving_python():
    """The interpreter of the serving environment; the test is skipped without one."""
    if not SERVE_PYTHON.is_file():
        pytest.skip(
            f"no serving environment at {SERVE_PYTHON}: create it as docs/DEPLOYMENT.md says "
            "(requirements-triton.txt), or name its python in $BERT_SERVE_PYTHON"
        )
    check = "import numpy, pytriton, tritonclient.grpc, tritonclient.http; print(numpy.__version__)"
    done = subprocess.run(
        [str(SERVE_PYTHON), "-c", check], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 or not done.stdout.startswith("1."):
        why = done.stderr.strip().splitlines()[-1:] or [f"numpy {done.stdout.strip()}"]
        pytest.skip(
            f"{SERVE_PYTHON} cannot serve ({why[0]}): pip install -r requirements-triton.txt"
        )
    return SERVE_PYTHON


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """16 made-up questions on 4 contexts of two people each, and a tiny random QA model."""
    root = tmp_path_factory.mktemp("serve_toy")
    dev = toy_squad.generate(16, seed=5, split="dev", people=2)
    (root / "dev.json").write_text(json.dumps(dev), encoding="utf-8")
    vocab = build_vocab(toy_squad.texts_of(dev), root / "vocab.txt", vocab_size=200)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vocab_size = len(vocab.read_text(encoding="utf-8").splitlines())
        model = BertForQuestionAnswering(
            tiny_config(vocab_size, hidden_size=32, max_position_embeddings=64)
        )
    model.save_pretrained(root / "model", vocab_file=vocab)
    questions = [
        (qa["id"], qa["question"], paragraph["context"])
        for article in dev["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    return {"root": root, "dev": root / "dev.json", "model": root / "model", "questions": questions}


@pytest.fixture(scope="module")
def offline(toy):
    """run_squad --do_predict's answers: {id: (text, probability of that text)}."""
    out = toy["root"] / "offline"
    flags = ["--setup_file", "", "--init_checkpoint", str(toy["model"]), "--output_dir", str(out),
             "--do_predict", "--predict_file", str(toy["dev"]), "--threads", "1", *SQUAD_FLAGS]  # fmt: skip
    assert run_squad.main(flags) == 0
    predictions = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    nbest = json.loads((out / "nbest_predictions.json").read_text(encoding="utf-8"))
    answers = {}
    for qid, text in predictions.items():
        answers[qid] = (text, next(e["probability"] for e in nbest[qid] if e["text"] == text))
    assert len({text for text, _ in answers.values()}) > 1  # the model tells contexts apart
    return answers


@dataclass
class Server:
    process: subprocess.Popen
    ports: dict[str, int]
    log: Path

    @property
    def http(self):
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def grpc(self):
        return f"grpc://127.0.0.1:{self.ports['grpc']}"

    def url(self, protocol):
        return self.http if protocol == "http" else self.grpc

    def stop(self):
        """SIGTERM; the exit status, or None when it had to be killed after STOP_S."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: Triton too
            self.process.wait(timeout=STOP_S)
            return None


def free_ports(n):
    """`n` distinct TCP ports free on the loopback now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(python, module, served, log, *args, max_batch=None):
    """`python -m module` on free loopback ports with `args` last (they win), once its
    log says `serving <served>`; a server that exits or is not up within START_S fails
    the test."""
    ports = dict(zip(("http", "grpc", "metrics"), free_ports(3), strict=True))
    argv = [str(python), "-m", module,
            "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
            "--metrics-port", str(ports["metrics"]), "--max-batch-size", str(max_batch),
            "--max-queue-delay-us", "100000", "--shutdown-timeout", "3",
            *args]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    server = Server(process, ports, log)
    deadline = time.monotonic() + START_S
    while f"serving {served}".encode() not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{module} did not start (exit {process.returncode}):\n{tail}")
        time.sleep(0.2)
    return server


def start_server(python, model, log, *flags):
    """`python -m bert.serve` on free loopback ports, once it says it is serving."""
    args = ["--model", str(model), *SQUAD_FLAGS, *flags]
    return launch(python, "bert.serve", "bert_squad", log, *args, max_batch=MAX_BATCH)


@pytest.fixture(scope="module")
def server(serving_python, toy):
    server = start_server(serving_python, toy["model"], toy["root"] / "pytorch.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def onnx_folder(toy):
    export_bert(toy["model"], toy["root"] / "onnx", task="squad")
    return toy["root"] / "onnx"


@pytest.fixture(scope="module")
def onnx_server(serving_python, toy, onnx_folder):
    flags = ("--backend", "onnxruntime")
    server = start_server(serving_python, onnx_folder, toy["root"] / "onnx.log", *flags)
    yield server
    server.stop()


def client(python, calls):
    """The replies to `calls` (see `client_main`), made in the serving environment."""
    return serving_client.run(python, __file__, calls, CLIENT_S)


def ask(url, question, context):
    return {"url": url, "ask": [question, context]}


def raw(url, *inputs):
    """A request as given: inputs (name, datatype, shape, values); BYTES values are
    str, sent as their code points (latin-1), so any byte can be sent."""
    return {"url": url, "raw": [list(i) for i in inputs]}


def texts(*rows):
    return [[r] for r in rows]


def abandon_http(port, model, inputs, rounds):
    """Requests to Triton's HTTP endpoint that their client gives up on, `rounds` times
    each kind: the headers alone, the body cut off halfway, a whole request closed before
    the reply (reset at once, and closed after 20 ms). `inputs`: {name: text}, [1, 1]
    BYTES each. Returns how many were sent."""
    tensors = [
        {"name": n, "datatype": "BYTES", "shape": [1, 1], "data": [t]} for n, t in inputs.items()
    ]
    body = json.dumps({"inputs": tensors}).encode()
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    kinds = [
        (head, 0),
        (head + body[: len(body) // 2], 0),
        (head + body, None),
        (head + body, 0.02),
    ]
    sent = 0
    for _ in range(rounds):
        for data, wait in kinds:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(data)
                if wait is None:  # no FIN but a reset: SO_LINGER on, 0 s
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                else:
                    time.sleep(wait)
            sent += 1
    return sent


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int8"], "--int8 is for --backend onnxruntime"),
        (["--grpc-port", "8000"], "--http-port and --grpc-port are the same port"),
        (["--http-port", "70000"], "argument --http-port: must be a port from 1 to 65535"),
        (["--max_seq_length", "19"], "--max_seq_length 19 leaves no room for the context"),
    ],
)
def test_flag_mistakes_end_the_run_in_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        serve.main(["--model", str(tmp_path), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m bert.serve: error: {message}")
    assert err.count("\n") == 1


def test_a_port_in_use_ends_the_run_in_one_line(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        http, metrics = free_ports(2)
        argv = ["--model", str(tmp_path), "--http-port", str(http), "--grpc-port", str(taken),
                "--metrics-port", str(metrics)]  # fmt: skip
        assert serve.main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err == f"error: --grpc-port {taken}: cannot listen on 127.0.0.1:{taken} "
        "(Address already in use)\n"
    )


def test_serving_from_another_environment_says_where_to_get_one(tmp_path, capsys):
    if importlib.util.find_spec("pytriton") and np.__version__.startswith("1."):
        pytest.skip("this interpreter is a serving environment")
    http, grpc, metrics = free_ports(3)
    argv = ["--model", str(tmp_path), "--http-port", str(http), "--grpc-port", str(grpc),
            "--metrics-port", str(metrics)]  # fmt: skip
    assert serve.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.endswith("serve from the environment of requirements-triton.txt "
                        "(docs/DEPLOYMENT.md)\n")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_the_offline_predictions(protocol, serving_python, server, toy, offline):
    url = server.url(protocol)
    replies = client(serving_python, [ask(url, q, c) for _, q, c in toy["questions"]])
    for (qid, _, _), reply in zip(toy["questions"], replies, strict=True):
        text, probability = offline[qid]
        assert reply["answer"] == text, qid
        assert reply["score"] == pytest.approx(probability, rel=1e-5), qid


@pytest.mark.slow
def test_concurrent_requests_are_batched_by_triton(serving_python, server, toy, offline):
    questions = toy["questions"][: 2 * MAX_BATCH]
    calls = [{"concurrent": [ask(server.http, q, c) for _, q, c in questions]}]
    (replies,) = client(serving_python, calls)
    assert [r["answer"] for r in replies] == [offline[qid][0] for qid, _, _ in questions]
    with urllib.request.urlopen(f"{server.http}/v2/models/bert_squad/stats", timeout=30) as r:
        (stats,) = json.load(r)["model_stats"]
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1


TOO_LONG = "x" * 20001
BAD_REQUESTS = {
    "empty question": (["", "Oren Ashby was born in 1901."], "question is empty"),
    "blank context": (["Who was born?", " \n\t"], "context is empty"),
    "context too long": (["Who?", TOO_LONG], "context has 20001 characters, more than the 20000"),
    "question not UTF-8": (
        [
            ("question", "BYTES", [1, 1], texts("\xff\xfe")),
            ("context", "BYTES", [1, 1], texts("a")),
        ],
        "question is not UTF-8 text: byte 0xff at offset 0",
    ),
    "wrong data type": (
        [("question", "INT32", [1, 1], [[7]]), ("context", "BYTES", [1, 1], texts("a"))],
        "data-type is 'INT32', but model 'bert_squad' expects 'BYTES'",
    ),
    "wrong shape": (
        [("question", "BYTES", [1, 2], [["a", "b"]]), ("context", "BYTES", [1, 2], [["a", "b"]])],
        "unexpected shape for input",
    ),
    "missing input": ([("question", "BYTES", [1, 1], texts("Who?"))], "missing required input"),
    "batch over the maximum": (
        [
            ("question", "BYTES", [MAX_BATCH + 1, 1], texts(*["Who?"] * (MAX_BATCH + 1))),
            ("context", "BYTES", [MAX_BATCH + 1, 1], texts(*["a b"] * (MAX_BATCH + 1))),
        ],
        f"batch-size must be <= {MAX_BATCH}",
    ),
    "one bad row": (
        [
            ("question", "BYTES", [2, 1], texts("Who?", "Where?")),
            ("context", "BYTES", [2, 1], texts("a b", "")),
        ],
        "row 1: context is empty",
    ),
}


@pytest.fixture(scope="module")
def bad_request_replies(serving_python, server, toy):
    """For each case of BAD_REQUESTS, by alternate protocols: the reply to the bad request
    and to the good one sent right after it."""
    _, question, context = toy["questions"][0]
    calls = []
    for i, (request, _) in enumerate(BAD_REQUESTS.values()):
        url = server.url(("http", "grpc")[i % 2])
        bad = raw(url, *request) if isinstance(request[0], tuple) else ask(url, *request)
        calls += [bad, ask(url, question, context)]
    replies = client(serving_python, calls)
    return dict(zip(BAD_REQUESTS, zip(replies[::2], replies[1::2], strict=True), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_an_error_and_the_next_is_answered(
    case, bad_request_replies, toy, offline
):
    bad, good = bad_request_replies[case]
    assert BAD_REQUESTS[case][1] in bad["error"]
    assert good["answer"] == offline[toy["questions"][0][0]][0]


@pytest.mark.slow
def test_a_bad_request_batched_with_good_ones_fails_alone(serving_python, server, toy, offline):
    good = toy["questions"][: MAX_BATCH - 1]
    requests = [ask(server.grpc, "", "a context without a question")]
    requests += [ask(server.grpc, q, c) for _, q, c in good]
    (replies,) = client(serving_python, [{"concurrent": requests}])
    assert replies[0]["error"] == "question is empty"
    assert [r["answer"] for r in replies[1:]] == [offline[qid][0] for qid, _, _ in good]


@pytest.mark.slow
def test_clients_that_give_up_mid_request_leave_the_server_answering(
    serving_python, server, toy, offline
):
    """Under load from a batch of clients: HTTP requests abandoned at every stage, and
    gRPC requests whose deadline passes while the server works on them."""
    cut = [dict(ask(server.grpc, q, c), timeout_s=1e-4) for _, q, c in toy["questions"][:4]]
    good = [
        ask(server.url(p), q, c)
        for p in ("http", "grpc")
        for _, q, c in toy["questions"][:MAX_BATCH]
    ]
    rounds = [{"concurrent": good}, *cut, {"concurrent": good}]
    before = served_count(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loaded = pool.submit(client, serving_python, rounds)
        _, question, context = toy["questions"][0]
        inputs = {"question": question, "context": context}
        assert abandon_http(server.ports["http"], "bert_squad", inputs, rounds=5) == 20
        replies = loaded.result(timeout=CLIENT_S)
    want = [offline[qid][0] for qid, _, _ in toy["questions"][:MAX_BATCH]] * 2
    assert [r["answer"] for r in replies[0]] == want
    assert [r["answer"] for r in replies[-1]] == want
    for r in replies[1:-1]:  # a deadline of 0.1 ms passes before any answer comes
        assert "Deadline Exceeded" in r["error"]
    (after,) = client(serving_python, [{"concurrent": good}])
    assert [r["answer"] for r in after] == want
    # The whole requests abandoned reached the model and were run, not lost on the way:
    # the 3 x 8 answered and the 10 HTTP requests closed before their reply at least (the
    # 4 gRPC ones may be cancelled before Triton takes them).
    assert served_count(server) - before >= 3 * len(good) + 10
    assert server.process.poll() is None


def served_count(server, model="bert_squad"):
    """Requests Triton has run for `model`, answered or failed (its statistics)."""
    with urllib.request.urlopen(f"{server.http}/v2/models/{model}/stats", timeout=30) as r:
        (stats,) = json.load(r)["model_stats"]
    return stats["inference_stats"]["success"]["count"] + stats["inference_stats"]["fail"]["count"]


@pytest.mark.slow
def test_health_and_metrics_endpoints_answer(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/bert_squad/ready"):
        with urllib.request.urlopen(server.http + path, timeout=30) as reply:
            assert reply.status == 200, path
    metrics_url = f"http://127.0.0.1:{server.ports['metrics']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=30) as reply:
        metrics = reply.read().decode()
    assert 'nv_inference_request_success{model="bert_squad",version="1"}' in metrics


def listening_addresses(port):
    """The local addresses of the sockets listening on TCP `port` (/proc/net/tcp*)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.slow
def test_every_port_is_bound_to_the_loopback_only(server):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, v4 and in v6
    for name, port in server.ports.items():
        addresses = listening_addresses(port)
        assert addresses, name
        assert set(addresses) <= loopback, (name, addresses)


@pytest.mark.slow
def test_onnxruntime_backend_answers_as_the_model_does_in_process(
    serving_python, onnx_server, onnx_folder, toy
):
    settings = serve.Settings(
        model=str(onnx_folder), backend="onnxruntime", max_seq_length=48, doc_stride=16,
        max_query_length=16,
    )  # fmt: skip
    expected = serve.QuestionAnswerer(settings).answer([(q, c) for _, q, c in toy["questions"]])
    calls = [ask(onnx_server.grpc, q, c) for _, q, c in toy["questions"]]
    replies = client(serving_python, calls)
    assert [r["answer"] for r in replies] == [a.text for a in expected]
    assert [r["score"] for r in replies] == pytest.approx([a.score for a in expected], rel=1e-5)


@pytest.mark.slow
def test_sigterm_stops_the_server_and_closes_its_ports(onnx_server):
    assert_stops_on_sigterm(onnx_server)


def assert_stops_on_sigterm(server, stop_s=STOP_S):
    """SIGTERM: exit 0 within stop_s, the log's last word "stopped", no port left open."""
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < stop_s
    assert server.log.read_text(errors="replace").rstrip().endswith("stopped")
    for port in server.ports.values():
        assert listening_addresses(port) == []


# -------------------------------------------------------------- the client (a script)


def client_main():
    """Run in the serving environment by `client`: a JSON list of calls on stdin, each
    {"url", "ask": [question, context]} (with "timeout_s", the client's deadline),
    {"url", "raw": [[name, datatype, shape, values]]}
    or {"concurrent": [calls]}; their replies as a JSON list on stdout: {"answer",
    "score"} (lists for raw), {"error"}, or a list of replies for "concurrent"."""
    calls = json.load(sys.stdin)
    print(json.dumps([reply(call) for call in calls]))


def reply(call):
    if "concurrent" in call:
        return serving_client.together(call["concurrent"], reply, CLIENT_S)
    try:
        if "ask" in call:
            timeout_s = call.get("timeout_s", 60.0)
            answer = serve.ask(call["url"], *call["ask"], timeout_s=timeout_s)
            return {"answer": answer.text, "score": answer.score}
        return serving_client.raw_infer(call["url"], serve.MODEL_NAME, call["raw"], OUTPUTS)
    except serve.RequestError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    client_main()
