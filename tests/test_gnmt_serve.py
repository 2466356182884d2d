"""gnmt.serve: translations from a real Triton Inference Server, over HTTP and gRPC.

As in tests/test_bert_serve.py (whose serving-environment fixture, ports and `Server` this
file uses), the servers and their clients run in the serving environment of
requirements-triton.txt (.venv-serve, numpy<2), and the tests that need one are skipped
with the reason where it is missing. The translations they must equal are the files that
`python -m gnmt.translate --batch-size 1` writes in this environment. The clients are this
file run as a script (`client_main`): JSON calls on stdin, JSON replies on stdout.

The model is small and random, with weights scaled up so that different sources get
different translations (as in tests/test_gnmt_export.py).
"""

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gnmt import serve
from tests import serving_client, test_bert_serve
from tests.gnmt_fixtures import make_model, make_tokenizer, save_our_checkpoint, toy_pairs
from tests.helpers import clean_env
from tests.test_bert_serve import (
    abandon_http,
    assert_stops_on_sigterm,
    free_ports,
    launch,
    served_count,
)

serving_python = test_bert_serve.serving_python  # the fixture: the serving environment

ROOT = Path(__file__).resolve().parent.parent
SEARCH_FLAGS = ("--beam-size", "3", "--max-length", "20")
MAX_BATCH = 4
START_S = 120  # a server is up within this, or the test fails with its log
STOP_S = 20  # SIGTERM to exit, with --shutdown-timeout 3
CLIENT_S = 120

EN = [en for en, _ in toy_pairs(10, seed=11)]
# Short and long sentences, an unknown word, and blank lines (empty translations).
LINES = [*EN[:4], "", f"{EN[4]} {EN[5]}", "Hello.", "  \t", *EN[6:]]
TOO_LONG = " ".join(EN * 2)  # 224 tokens, over the default --max-input-length 150


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny random GNMT checkpoint, and LINES in a file."""
    root = tmp_path_factory.mktemp("gnmt_serve")
    tokenizer = make_tokenizer(root, toy_pairs(300))
    with torch.random.fork_rng(devices=[]):
        model = make_model(tokenizer.vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    checkpoint = save_our_checkpoint(root / "checkpoint", model, tokenizer)
    source = root / "lines.en"
    source.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return {"root": root, "checkpoint": checkpoint, "source": source}


def offline(toy, name, *model_flags):
    """The lines gnmt.translate writes for LINES, a sentence per batch, on one CPU thread."""
    from gnmt.translate import main as translate_main

    out = toy["root"] / f"{name}.de"
    argv = [*model_flags, "--input", str(toy["source"]), "--output", str(out),
            "--batch-size", "1", "--threads", "1", "--warmup", "0", *SEARCH_FLAGS]  # fmt: skip
    assert translate_main(argv) == 0
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(LINES)
    return lines


@pytest.fixture(scope="module")
def expected(toy):
    lines = offline(toy, "pytorch", "--model", str(toy["checkpoint"]), "--device", "cpu")
    assert len({line for line in lines if line}) > 5  # the sources matter
    return lines


@pytest.fixture(scope="module")
def onnx_dir(toy):
    pytest.importorskip("onnx", reason="the serve extra is not installed: requirements-serve.txt")
    from gnmt.export import main as export_main

    out = toy["root"] / "onnx"
    assert export_main(["--model", str(toy["checkpoint"]), "--out-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def onnx_expected(toy, onnx_dir):
    return offline(toy, "onnxruntime", "--backend", "onnxruntime", "--onnx-dir", str(onnx_dir))


def start_server(python, log, *flags):
    """`python -m gnmt.serve` on free loopback ports, once it says it is serving."""
    return launch(python, "gnmt.serve", "gnmt", log, *SEARCH_FLAGS, *flags, max_batch=MAX_BATCH)


@pytest.fixture(scope="module")
def server(serving_python, toy):
    server = start_server(
        serving_python, toy["root"] / "pytorch.log", "--model", str(toy["checkpoint"])
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def onnx_server(serving_python, toy, onnx_dir):
    flags = ("--onnx-dir", str(onnx_dir), "--search-batch-size", str(MAX_BATCH))
    server = start_server(serving_python, toy["root"] / "onnx.log", *flags)
    yield server
    server.stop()


def client(python, calls):
    """The replies to `calls` (see `client_main`), made in the serving environment."""
    return serving_client.run(python, __file__, calls, CLIENT_S)


def translate(url, *lines):
    return {"url": url, "translate": list(lines)}


def raw(url, datatype, shape, values, name="source"):
    """A request as given; BYTES values are str, sent as their code points (latin-1),
    so any byte can be sent."""
    return {"url": url, "raw": [name, datatype, shape, values]}


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "one of the arguments --model --onnx-dir is required"),
        (["--model", "m.pth", "--onnx-dir", "o"], "argument --onnx-dir: not allowed with"),
        (["--model", "m.pth", "--max-input-length", "2"], "--max-input-length must be at least 3"),
        (["--model", "m.pth", "--metrics-port", "8001"], "--grpc-port and --metrics-port are the"),
    ],
)
def test_flag_mistakes_end_the_run_in_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        serve.main(flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m gnmt.serve: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_a_missing_checkpoint_ends_the_run_in_one_line_before_triton_starts(
    serving_python, tmp_path
):
    ports = [str(p) for p in free_ports(3)]
    argv = [str(serving_python), "-m", "gnmt.serve", "--model", str(tmp_path / "none.pth"),
            "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=CLIENT_S)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == f"error: checkpoint {tmp_path / 'none.pth'} does not exist\n"


@pytest.fixture(scope="module")
def both_protocols(serving_python, server):
    """LINES translated over HTTP and over gRPC at the same time, then the statistics."""
    calls = [{"concurrent": [translate(server.http, *LINES), translate(server.grpc, *LINES)]}]
    (replies,) = client(serving_python, calls)
    with urllib.request.urlopen(f"{server.http}/v2/models/gnmt/stats", timeout=30) as reply:
        (stats,) = json.load(reply)["model_stats"]
    return replies, stats


@pytest.mark.slow
def test_translations_over_http_and_grpc_equal_gnmt_translate(both_protocols, expected):
    http, grpc = both_protocols[0]
    assert http["translations"] == expected
    assert grpc["translations"] == expected


@pytest.mark.slow
def test_blank_sources_get_empty_translations(both_protocols):
    http, _ = both_protocols[0]
    for i, line in enumerate(LINES):
        assert (http["translations"][i] == "") == (not line.strip()), i


@pytest.mark.slow
def test_requests_sent_together_are_batched_by_triton(both_protocols):
    stats = both_protocols[1]
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1


def texts(*rows):
    return [[r] for r in rows]


BAD_REQUESTS = {
    "not UTF-8": (
        ("BYTES", [1, 1], texts("\xff\xfe")),
        "source is not UTF-8 text: byte 0xff at offset 0",
    ),
    "too many characters": (
        ["x" * 10001],
        "line 1: source has 10001 characters, more than the 10000 this server accepts "
        "(--max-input-chars)",
    ),
    "too many tokens": (
        [TOO_LONG],
        "line 1: source has 224 tokens, more than the 150 this server accepts "
        "(--max-input-length, BOS and EOS included)",
    ),
    "wrong data type": (
        ("INT32", [1, 1], [[7]]),
        "data-type is 'INT32', but model 'gnmt' expects 'BYTES'",
    ),
    "wrong shape": (("BYTES", [1, 2], [["a", "b"]]), "unexpected shape for input"),
    "unknown input": (
        ("BYTES", [1, 1], texts("Hello."), "text"),
        "unexpected inference input 'text' for model 'gnmt'",
    ),
    "batch over the maximum": (
        ("BYTES", [MAX_BATCH + 1, 1], texts(*EN[: MAX_BATCH + 1])),
        f"batch-size must be <= {MAX_BATCH}",
    ),
    "one bad row": (
        ("BYTES", [2, 1], texts(EN[0], "ok \xff")),
        "row 1: source is not UTF-8 text: byte 0xff at offset 3",
    ),
}


@pytest.fixture(scope="module")
def bad_request_replies(serving_python, server):
    """For each case of BAD_REQUESTS, by alternate protocols: the reply to the bad request
    and to the good one sent right after it."""
    calls = []
    for i, (request, _) in enumerate(BAD_REQUESTS.values()):
        url = server.url(("http", "grpc")[i % 2])
        bad = raw(url, *request) if isinstance(request, tuple) else translate(url, *request)
        calls += [bad, translate(url, LINES[0])]
    replies = client(serving_python, calls)
    return dict(zip(BAD_REQUESTS, zip(replies[::2], replies[1::2], strict=True), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_an_error_and_the_next_is_translated(
    case, bad_request_replies, expected
):
    bad, good = bad_request_replies[case]
    assert BAD_REQUESTS[case][1] in bad["error"]
    assert good["translations"] == expected[:1]


@pytest.mark.slow
def test_a_bad_request_batched_with_good_ones_fails_alone(serving_python, server, expected):
    requests = [translate(server.grpc, TOO_LONG)]
    requests += [translate(server.grpc, line) for line in LINES[: MAX_BATCH - 1]]
    (replies,) = client(serving_python, [{"concurrent": requests}])
    assert replies[0]["error"].startswith("line 1: source has 224 tokens")
    assert [r["translations"] for r in replies[1:]] == [[e] for e in expected[: MAX_BATCH - 1]]


@pytest.mark.slow
def test_clients_that_give_up_mid_request_leave_the_server_translating(
    serving_python, server, expected
):
    """Under load from a batch of clients: HTTP requests abandoned at every stage, and
    gRPC requests whose deadline passes while the server works on them."""
    lines = [line for line in LINES if line.strip()][:MAX_BATCH]
    want = [[expected[LINES.index(line)]] for line in lines] * 2
    good = [translate(server.url(p), line) for p in ("http", "grpc") for line in lines]
    cut = [dict(translate(server.grpc, line), timeout_s=1e-4) for line in lines]
    before = served_count(server, serve.MODEL_NAME)
    with ThreadPoolExecutor(1) as pool:
        loaded = pool.submit(
            client, serving_python, [{"concurrent": good}, *cut, {"concurrent": good}]
        )
        assert (
            abandon_http(server.ports["http"], serve.MODEL_NAME, {"source": lines[0]}, rounds=5)
            == 20
        )
        replies = loaded.result(timeout=CLIENT_S)
    assert [r["translations"] for r in replies[0]] == want
    assert [r["translations"] for r in replies[-1]] == want
    for r in replies[1:-1]:  # a deadline of 0.1 ms passes before any translation comes
        assert "Deadline Exceeded" in r["error"]
    (after,) = client(serving_python, [{"concurrent": good}])
    assert [r["translations"] for r in after] == want
    # The 10 whole HTTP requests closed before their reply were run too.
    assert served_count(server, serve.MODEL_NAME) - before >= 3 * len(good) + 10
    assert server.process.poll() is None


@pytest.mark.slow
def test_onnxruntime_server_searching_sentences_together_equals_gnmt_translate(
    serving_python, onnx_server, onnx_expected
):
    # Batched search is not bound to give translate --batch-size 1's translations (the
    # module docstring of gnmt.serve says why), but at this model's margins it does.
    (reply,) = client(serving_python, [translate(onnx_server.grpc, *LINES)])
    assert reply["translations"] == onnx_expected


@pytest.mark.slow
def test_sigterm_stops_the_server_and_closes_its_ports(onnx_server):
    assert_stops_on_sigterm(onnx_server, STOP_S)


# -------------------------------------------------------------- the client (a script)


def client_main():
    """Run in the serving environment by `client`: a JSON list of calls on stdin, each
    {"url", "translate": [lines]} (gnmt.serve.translate; with "timeout_s", the client's
    deadline), {"url", "raw": [name, datatype,
    shape, values]} (one request as given) or {"concurrent": [calls]}; their replies as a
    JSON list on stdout: {"translations": [...]}, {"error"}, or a list of replies for
    "concurrent"."""
    calls = json.load(sys.stdin)
    print(json.dumps([reply(call) for call in calls]))


def reply(call):
    if "concurrent" in call:
        return serving_client.together(call["concurrent"], reply, CLIENT_S)
    try:
        if "translate" in call:
            timeout_s = call.get("timeout_s", 120.0)
            return {
                "translations": serve.translate(call["url"], call["translate"], timeout_s=timeout_s)
            }
        replies = serving_client.raw_infer(
            call["url"], serve.MODEL_NAME, [call["raw"]], [serve.OUTPUT]
        )
        return {"translations": replies[serve.OUTPUT]}
    except serve.RequestError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    client_main()
