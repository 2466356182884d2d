"""What the ONNX exports share: the optional packages, a CPU onnxruntime session, and
the versions an export records. The packages come with requirements-serve.txt; without
them the exports and the onnxruntime backend say so in one line."""

from __future__ import annotations

import contextlib
import importlib
import platform
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from common.errors import UserError


class MissingPackageError(UserError, ImportError):
    """An optional serving package (onnx, onnxruntime, onnxscript) is not installed."""


def require(module: str) -> ModuleType:
    """Import an optional serving package, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(
            f"{module} is not installed: pip install -r requirements-serve.txt"
        ) from None


def cpu_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads and no inter-op pool
    (one thread gives steady figures on a shared machine); its own log stays quiet,
    errors are raised to the caller."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def versions() -> dict[str, str]:
    """The versions an export was made with (onnxscript when installed)."""
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": require("onnx").__version__,
        "onnxruntime": require("onnxruntime").__version__,
    }
    with contextlib.suppress(ImportError):
        found["onnxscript"] = importlib.import_module("onnxscript").__version__
    return found
