"""The client side of the serving tests. tritonclient lives in the serving environment,
not the test one, so a test describes its requests as JSON and a test module run as a
script in that environment sends them and prints the replies. This module holds what
both recipes' scripts share: running the script, sending requests at once (so Triton
batches them) and sending a request exactly as given."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent


def run(python: Path, script: str, calls: list[Any], timeout_s: float) -> list[Any]:
    """The replies `script` (a test module's client_main) prints for `calls`."""
    done = subprocess.run(
        [str(python), script], input=json.dumps(calls), capture_output=True, text=True,
        cwd=ROOT, env=clean_env(), timeout=timeout_s,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def together(calls: list[Any], reply: Callable[[Any], Any], timeout_s: float) -> list[Any]:
    """reply(call) for each call, every call in its own thread and released at the same
    moment, so that the server can batch them."""
    barrier = threading.Barrier(len(calls))

    def send(call: Any) -> Any:
        barrier.wait(timeout=timeout_s)
        return reply(call)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(send, calls))


def request_array(datatype: str, shape: list[int], values: list[Any]) -> np.ndarray:
    """A request's tensor as the test wrote it: BYTES values are str sent as their code
    points (latin-1, so any byte can be sent); any other datatype is sent as INT32."""
    if datatype == "BYTES":
        data = np.array([[v.encode("latin-1") for v in row] for row in values], dtype=np.object_)
    else:
        data = np.array(values, dtype=np.int32)
    assert list(data.shape) == list(shape), (data.shape, shape)
    return data


def raw_infer(url: str, model: str, inputs: list[Any], outputs: list[str]) -> dict[str, list]:
    """One request of `inputs` [(name, datatype, shape, values)] to `model`: its outputs as
    lists (BYTES decoded as UTF-8). A refusal raises common.serving.RequestError."""
    from common.serving import Client

    arrays = {
        name: request_array(datatype, shape, values) for name, datatype, shape, values in inputs
    }
    with Client(url) as server:
        result = server.infer(model, arrays)
    replies = {}
    for name in outputs:
        column = result.as_numpy(name)[:, 0]
        replies[name] = [v.decode("utf-8") if isinstance(v, bytes) else v.item() for v in column]
    return replies
