"""Triton Inference Server for a recipe's model: what bert/serve.py and gnmt/serve.py share.

    group = serving.add_server_flags(parser)        # --host, the ports, batching, instances
    serving.check_ports(args.host, serving.port_flags(args))
    serving.check_serving_packages()
    serving.serve_python_model(args, "gnmt", "gnmt.serve", inputs, outputs, settings)
    with serving.Client("grpc://127.0.0.1:8001") as client:
        result = client.infer("gnmt", {"source": np.array([[b"Hello."]], dtype=np.object_)})

The server is the tritonserver 2.51 binary that the `nvidia-pytriton` wheel ships; PyTriton
only launches it. The model repository is our own (common/triton_repo.py): one model for
Triton's Python backend, whose model.py is two lines that import `TritonPythonModel` from
the recipe's serve module, and whose config carries the recipe's settings as JSON. The
backend's stub process needs the repository on PYTHONPATH and this interpreter's
libpython (`serving_environment`). Serving needs numpy<2, so it runs from an environment
of its own (requirements-triton.txt, docs/DEPLOYMENT.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from common import cli
from common.errors import UserError
from common.triton_repo import TensorSpec, write_model_repository

ROOT = Path(__file__).resolve().parent.parent  # the recipes must be importable by the stub
SERVING_REQUIREMENTS = "requirements-triton.txt"


class ServeError(UserError):
    """A model or a set-up that cannot be served."""


class RequestError(UserError):
    """A request the server refused; the message is the server's."""


def require(module: str) -> Any:
    """A serving package, or a one-line error saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ServeError(
            f"{module.split('.')[0]} is not installed in {sys.prefix}: serve from the "
            f"environment of {SERVING_REQUIREMENTS} (docs/DEPLOYMENT.md)"
        ) from None


# --------------------------------------------------------------------- the requests


def decode_text(value: Any, name: str, limit: int, flag: str) -> str:
    """The text of one BYTES element of input `name`; `RequestError` saying what is wrong
    when it is not UTF-8 or has more than `limit` characters (the limit set by `flag`)."""
    if not isinstance(value, bytes):
        raise RequestError(f"{name} must be BYTES (UTF-8 text)")
    if len(value) > 4 * limit:  # a UTF-8 character has at most 4 bytes: too long already
        raise RequestError(
            f"{name} has more than the {limit} characters this server accepts ({flag})"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"{name} is not UTF-8 text: byte 0x{value[exc.start]:02x} at offset {exc.start}"
        ) from None
    if len(text) > limit:
        raise RequestError(
            f"{name} has {len(text)} characters, more than the {limit} this server accepts ({flag})"
        )
    return text


# ------------------------------------------------------------------------ the client


class Client:
    """A KServe v2 client of the server at `url`: HOST:PORT or http://HOST:PORT for HTTP,
    grpc://HOST:PORT for gRPC. Needs tritonclient[grpc,http]; use one per thread."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        protocol, _, address = url.rpartition("://")
        if protocol not in ("", "http", "grpc"):
            raise ValueError(f"{url}: give HOST:PORT, http://HOST:PORT or grpc://HOST:PORT")
        self._module = require(f"tritonclient.{protocol or 'http'}")
        self._utils = require("tritonclient.utils")
        if protocol == "grpc":
            self._client = self._module.InferenceServerClient(address)
            self._call = {"client_timeout": timeout_s}
        else:
            self._client = self._module.InferenceServerClient(
                address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._call = {}

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> Any:
        """The result of one request (`.as_numpy(output)`); a refused one raises
        `RequestError` with the server's message."""
        tensors = []
        for name, array in inputs.items():
            datatype = self._utils.np_to_triton_dtype(array.dtype)
            tensor = self._module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            return self._client.infer(model, tensors, **self._call)
        except self._utils.InferenceServerException as exc:
            raise RequestError(exc.message()) from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ------------------------------------------------------------------------ the server


def serving_environment() -> dict[str, str]:
    """Variables Triton and its Python backend need: the repository on PYTHONPATH (the
    backend imports the recipe's serve module), and this interpreter's libpython first on
    LD_LIBRARY_PATH (the backend's stub would load the system's otherwise)."""
    env = {}
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        rest = os.environ.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{libdir}{os.pathsep}{rest}" if rest else libdir
    return env


def check_serving_packages() -> None:
    """PyTriton and its server present, with the numpy they were built for."""
    require("pytriton")
    if int(np.__version__.split(".")[0]) >= 2:
        raise ServeError(
            f"numpy {np.__version__} is installed in {sys.prefix}; Triton's Python backend "
            f"needs numpy<2: serve from the environment of {SERVING_REQUIREMENTS} "
            "(docs/DEPLOYMENT.md)"
        )


def check_ports(host: str, ports: dict[str, int]) -> None:
    """`ServeError` naming the flag of the first port nobody may listen on at `host` now
    (in use, or a host that is not this machine's): Triton would stop on it unexplained."""
    for flag, number in ports.items():
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, number, type=socket.SOCK_STREAM
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does
                probe.bind(address)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ServeError(
                f"{flag} {number}: cannot listen on {host}:{number} ({reason})"
            ) from None


def write_python_model(
    folder: Path,
    name: str,
    module: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    args: argparse.Namespace,
    settings: Any,
) -> Path:
    """A model repository in `folder` (which must exist) holding model `name` for the
    Python backend: a model.py importing `TritonPythonModel` from `module`, and a config
    with the tensors, dynamic batching and CPU instances of `add_server_flags`, and the
    dataclass `settings` as JSON (parameter "settings"). Returns the repository."""
    shim = folder / "model.py"
    shim.write_text(
        f"# Written by python -m {module}: the model lives in {module.replace('.', '/')}.py.\n"
        f"from {module} import TritonPythonModel  # noqa: F401\n",
        encoding="utf-8",
    )
    repository = folder / "repository"
    write_model_repository(
        repository,
        name,
        platform="python",
        inputs=inputs,
        outputs=outputs,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=[],
        max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances,
        files={"model.py": shim},
        parameters={"settings": json.dumps(dataclasses.asdict(settings))},
    )
    return repository


def read_settings(args: dict[str, str], settings_class: type) -> Any:
    """Inside `TritonPythonModel.initialize`: the settings `write_python_model` stored."""
    config = json.loads(args["model_config"])
    return settings_class(**json.loads(config["parameters"]["settings"]["string_value"]))


def check_server(args: argparse.Namespace) -> None:
    """What a server needs before its model is read: the ports of `add_server_flags`
    free at --host, and the serving packages."""
    check_ports(args.host, port_flags(args))
    check_serving_packages()


def serve_python_model(
    args: argparse.Namespace,
    name: str,
    module: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    settings: Any,
    label: str,
) -> None:
    """Serve model `name` (see `write_python_model`) until SIGTERM or SIGINT: start Triton
    on a temporary repository, print `serving LABEL on ...`, then stop Triton (in-flight
    requests get --shutdown-timeout seconds), remove the repository and print `stopped`."""
    os.environ.update(serving_environment())
    from pytriton.triton import Triton, TritonConfig

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix=f"{name}-serve-") as folder:
        repository = write_python_model(Path(folder), name, module, inputs, outputs, args, settings)
        triton = Triton(
            config=TritonConfig(
                model_repository=repository,
                http_address=args.host,
                http_port=args.http_port,
                grpc_address=args.host,
                grpc_port=args.grpc_port,
                metrics_address=args.host,
                metrics_port=args.metrics_port,
                allow_gpu_metrics=False,
                exit_timeout_secs=args.shutdown_timeout,
            )
        )
        try:
            try:
                triton.run()
            except Exception as exc:  # PyTriton's: a timeout, a server that stopped
                raise ServeError(f"Triton Inference Server did not start: {exc}") from exc
            print(
                f"serving {label} on HTTP http://{args.host}:{args.http_port}, gRPC "
                f"{args.host}:{args.grpc_port}, metrics http://{args.host}:"
                f"{args.metrics_port}/metrics; SIGTERM or Ctrl-C stops it",
                flush=True,
            )
            while not stop.wait(1.0):
                if not triton.is_alive():
                    raise ServeError("Triton Inference Server stopped (its log is above)")
        finally:
            triton.stop()
    print("stopped", flush=True)


# ---------------------------------------------------------------------- command line


def port(value: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    number = cli.positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value!r}")
    return number


def add_server_flags(p: argparse.ArgumentParser) -> Any:
    """The "server" flag group: address, ports, dynamic batching, instances, threads and
    shutdown. Returns the group, for the recipe's own limits."""
    t = p.add_argument_group("server")
    t.add_argument("--host", default="127.0.0.1", help="address every port is bound to")
    t.add_argument("--http-port", type=port, default=8000, help="HTTP/REST (KServe v2)")
    t.add_argument("--grpc-port", type=port, default=8001, help="gRPC (KServe v2)")
    t.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics")
    t.add_argument(
        "--max-batch-size",
        type=cli.positive_int,
        default=8,
        help="rows per request, and per call of the dynamic batcher",
    )
    t.add_argument(
        "--max-queue-delay-us",
        type=cli.nonnegative_int,
        default=2000,
        help="how long the dynamic batcher waits for more requests (microseconds)",
    )
    t.add_argument("--instances", type=cli.positive_int, default=1, help="model instances")
    t.add_argument(
        "--threads",
        type=cli.positive_int,
        default=1,
        help="CPU threads of each instance (instances x threads <= cores, or latency suffers)",
    )
    t.add_argument(
        "--shutdown-timeout",
        type=cli.positive_int,
        default=5,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    return t


def port_flags(args: argparse.Namespace) -> dict[str, int]:
    return {"--http-port": args.http_port, "--grpc-port": args.grpc_port,
            "--metrics-port": args.metrics_port}  # fmt: skip


def server_flag_problems(args: argparse.Namespace) -> list[str | None]:
    """What is wrong with the flags of `add_server_flags` (None each where nothing)."""
    ports = port_flags(args)
    same = [flag for flag, value in ports.items() if list(ports.values()).count(value) > 1]
    return [
        f"{' and '.join(same)} are the same port: give each its own" if same else None,
        None if args.host.strip() else "--host is empty",
    ]
