"""A Triton Inference Server model repository for an exported model.

    write_model_repository("repo", "bert_squad", platform="onnxruntime_onnx",
        inputs=[TensorSpec("input_ids", "TYPE_INT64", [-1]), ...],
        outputs=[TensorSpec("start_logits", "TYPE_FP32", [-1]), ...],
        max_batch_size=8, preferred_batch_sizes=[4, 8], max_queue_delay_us=100,
        instance_count=1, files={"model.onnx": "exported/squad/model.onnx"})

gives the layout Triton loads (`tritonserver --model-repository repo`):

    repo/bert_squad/config.pbtxt     the model configuration, protobuf text format
    repo/bert_squad/1/model.onnx     the files, copied into the version folder

Tensor dims leave out the batch dimension (Triton adds it: batching is always on, with
the dynamic batcher); -1 marks a variable one. The model folder is built next to its
final place and renamed into it, so Triton never sees half a model and a failed write
leaves nothing behind. `read_config` parses such a config back into a dict.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from common.atomic import fsync_dir, temp_path
from common.errors import UserError

# Triton's name for the runtime -> (the config field that names it, the file it loads).
PLATFORMS = {
    "python": ("backend", "model.py"),
    "onnxruntime_onnx": ("platform", "model.onnx"),
    "pytorch_libtorch": ("platform", "model.pt"),
    "tensorrt_plan": ("platform", "model.plan"),
}
DTYPES = (
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_BF16",
    "TYPE_STRING",
)
KINDS = ("KIND_CPU", "KIND_GPU")
CONFIG = "config.pbtxt"


class TritonConfigError(UserError, ValueError):
    """An argument cannot make a valid Triton model configuration; `field` names it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class ModelFolderExistsError(UserError, FileExistsError):
    """The model folder already holds another model and overwrite was not asked for."""


class ConfigSyntaxError(UserError, ValueError):
    """A config.pbtxt is not in the protobuf text format `read_config` reads."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: its name in the graph, a Triton data type
    (TYPE_INT64, TYPE_FP32, TYPE_STRING, ...) and its dims without the batch
    dimension, -1 where the size varies (BERT's sequence: [-1])."""

    name: str
    dtype: str
    dims: Sequence[int]


def write_model_repository(
    root: str | os.PathLike,
    name: str,
    *,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_delay_us: int,
    instance_count: int,
    instance_kind: str = "KIND_CPU",
    version: int = 1,
    files: Mapping[str, str | os.PathLike],
    parameters: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write root/name/config.pbtxt and copy `files` ({name in the version folder:
    source file}, which must hold the file the platform loads) into root/name/<version>/.
    Returns root/name.

    A folder already there is left as it is when it holds exactly this model; another
    one is refused unless `overwrite`, which replaces the whole folder (every version).
    Bad arguments raise TritonConfigError naming the field before anything is written.
    """
    text = config_text(
        name,
        platform=platform,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        instance_kind=instance_kind,
        parameters=parameters,
    )
    _check_int("version", version, 1)
    _check_files(platform, files)
    final = Path(root) / name
    if final.exists() or final.is_symlink():
        if _holds_model(final, text, version, files):
            return final
        if not overwrite:
            raise ModelFolderExistsError(
                f"{final} already holds another model: pass overwrite=True to replace it"
            )
    final.parent.mkdir(parents=True, exist_ok=True)
    building = temp_path(final)
    _remove(building)  # left by a crashed run of a process with our pid
    try:
        _build(building, text, version, files)
        _move_into_place(building, final)
    except BaseException:
        _remove(building)
        raise
    return final


def config_text(
    name: str,
    *,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_delay_us: int,
    instance_count: int,
    instance_kind: str = "KIND_CPU",
    parameters: Mapping[str, str] | None = None,
) -> str:
    """The config.pbtxt for these settings (see write_model_repository), in the layout
    of Triton's documented examples. Raises TritonConfigError naming a bad field."""
    _check_name("name", name)
    if name in (".", "..") or "/" in name or "\\" in name:
        raise TritonConfigError("name", f"{name!r} cannot be a folder name")
    if platform not in PLATFORMS:
        raise TritonConfigError("platform", f"{platform!r} is not one of {', '.join(PLATFORMS)}")
    _check_tensors("inputs", inputs)
    _check_tensors("outputs", outputs)
    # The dynamic batcher is always configured, and it needs batching on.
    _check_int("max_batch_size", max_batch_size, 1)
    for i, size in enumerate(preferred_batch_sizes):
        _check_int(f"preferred_batch_sizes[{i}]", size, 1)
        if size > max_batch_size:
            raise TritonConfigError(
                f"preferred_batch_sizes[{i}]",
                f"{size} is larger than max_batch_size {max_batch_size}",
            )
    _check_int("max_queue_delay_us", max_queue_delay_us, 0)
    _check_int("instance_count", instance_count, 1)
    if instance_kind not in KINDS:
        raise TritonConfigError(
            "instance_kind", f"{instance_kind!r} is not one of {', '.join(KINDS)}"
        )
    parameters = dict(parameters or {})
    for key, value in parameters.items():
        _check_name("parameters", key)
        if not isinstance(value, str):
            raise TritonConfigError(f"parameters[{key}]", f"{value!r} is not a string")

    runtime_field = PLATFORMS[platform][0]
    lines = [
        f"name: {_quote(name)}",
        f"{runtime_field}: {_quote(platform)}",
        f"max_batch_size: {max_batch_size}",
        *_tensor_block("input", inputs),
        *_tensor_block("output", outputs),
        "dynamic_batching {",
    ]
    if preferred_batch_sizes:
        lines.append(f"  preferred_batch_size: {_list(preferred_batch_sizes)}")
    lines += [
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {instance_kind}",
        "  }",
        "]",
    ]
    for key, value in parameters.items():
        lines += [
            "parameters {",
            f"  key: {_quote(key)}",
            f"  value: {{ string_value: {_quote(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _tensor_block(field: str, tensors: Sequence[TensorSpec]) -> list[str]:
    entries = [
        [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {tensor.dtype}",
            f"    dims: {_list(tensor.dims)}",
            "  },",
        ]
        for tensor in tensors
    ]
    entries[-1][-1] = "  }"  # no comma after the last entry
    return [f"{field} [", *(line for entry in entries for line in entry), "]"]


def _list(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


# Escapes in protobuf text strings: the ones we write, and the ones we read.
_ESCAPE = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPE = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def _quote(text: str) -> str:
    return '"' + "".join(_ESCAPE.get(c, c) for c in text) + '"'


# --- checks ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(field: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise TritonConfigError(field, f"{value!r} is not an integer >= {minimum}")


def _check_name(field: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise TritonConfigError(field, f"{value!r} is not a non-empty name")


def _check_tensors(field: str, tensors: Sequence[TensorSpec]) -> None:
    if not tensors:
        raise TritonConfigError(field, "at least one tensor is needed")
    seen = set()
    for i, tensor in enumerate(tensors):
        where = f"{field}[{i}]"
        if not isinstance(tensor, TensorSpec):
            raise TritonConfigError(where, f"{tensor!r} is not a TensorSpec")
        _check_name(f"{where}.name", tensor.name)
        if tensor.name in seen:
            raise TritonConfigError(f"{where}.name", f"{tensor.name!r} is named twice")
        seen.add(tensor.name)
        if tensor.dtype not in DTYPES:
            raise TritonConfigError(
                f"{where}.dtype",
                f"{tensor.dtype!r} is not a Triton data type ({', '.join(DTYPES)})",
            )
        dims = list(tensor.dims)
        if not dims or not all(_is_int(d) and (d == -1 or d >= 1) for d in dims):
            raise TritonConfigError(
                f"{where}.dims", f"{dims} is not a non-empty list of sizes >= 1 or -1"
            )


def _check_files(platform: str, files: Mapping[str, str | os.PathLike]) -> None:
    model_file = PLATFORMS[platform][1]
    if model_file not in files:
        raise TritonConfigError("files", f"no {model_file}, the file {platform} loads")
    for dest, source in files.items():
        if not dest or dest in (".", "..") or Path(dest).name != dest:
            raise TritonConfigError("files", f"{dest!r} is not a plain file name")
        if not Path(source).is_file():
            raise TritonConfigError(f"files[{dest}]", f"{source} is not a file")


# --- writing --------------------------------------------------------------------------


def _holds_model(folder: Path, text: str, version: int, files: Mapping) -> bool:
    """Whether `folder` holds exactly the config `text` and the `files` under `version`."""
    version_dir = folder / str(version)
    return (
        folder.is_dir()
        and {p.name for p in folder.iterdir()} == {CONFIG, str(version)}
        and (folder / CONFIG).is_file()
        and (folder / CONFIG).read_bytes() == text.encode()
        and version_dir.is_dir()
        and {p.name for p in version_dir.iterdir()} == set(files)
        and all(
            (version_dir / dest).is_file()
            and filecmp.cmp(source, version_dir / dest, shallow=False)
            for dest, source in files.items()
        )
    )


def _build(folder: Path, text: str, version: int, files: Mapping) -> None:
    version_dir = folder / str(version)
    version_dir.mkdir(parents=True)
    (folder / CONFIG).write_text(text, encoding="utf-8")
    for dest, source in files.items():
        shutil.copyfile(source, version_dir / dest)
    # On disk before the rename, so a power cut cannot publish empty files.
    for path in [folder / CONFIG, *(version_dir / dest for dest in files)]:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(version_dir)
    fsync_dir(folder)


def _move_into_place(building: Path, final: Path) -> None:
    """Rename `building` to `final`; an old `final` is moved aside first (a folder cannot
    be renamed over a non-empty one) and put back if the rename fails."""
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        _remove(old)
        os.rename(final, old)
        try:
            os.rename(building, final)
        except BaseException:
            os.rename(old, final)
            raise
        _remove(old)
    else:
        os.rename(building, final)
    fsync_dir(final.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- reading --------------------------------------------------------------------------

# Fields read as lists even when written once (Triton's repeated fields that we write),
# and map fields, read as {key: value}.
REPEATED = {"input", "output", "dims", "preferred_batch_size", "instance_group"}
MAPS = {"parameters"}

_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<word>[\w.+-]+)
      | (?P<punct>[{}\[\]:,;])""",
    re.VERBOSE,
)
_FIELD = re.compile(r"[A-Za-z_]\w*")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a config.pbtxt into a dict shaped like the config's JSON form:
    messages are dicts, repeated fields lists, `parameters` {key: {"string_value": ...}},
    numbers int or float, enum values (TYPE_INT64, KIND_CPU) strings.

    Reads what `write_model_repository` writes and the usual hand-written variations
    (comments, a repeated field written as several blocks, optional ':' before '{')."""
    path = Path(path)
    return _Parser(path, path.read_text(encoding="utf-8")).message(closing=None)


class _Parser:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, line)
        pos, line = 0, 1
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                self.fail(f"unexpected character {text[pos]!r}", line)
            if match.lastgroup != "space":
                self.tokens.append((match.lastgroup, match.group(), line))
            line += match.group().count("\n")
            pos = match.end()
        self.pos = 0
        self.end_line = line

    def fail(self, problem: str, line: int | None = None) -> NoReturn:
        if line is None:
            line = self.tokens[self.pos][2] if self.pos < len(self.tokens) else self.end_line
        raise ConfigSyntaxError(f"{self.path}:{line}: {problem}")

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, text: str) -> bool:
        if self.peek() == text and self.tokens[self.pos][0] == "punct":
            self.pos += 1
            return True
        return False

    def message(self, closing: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while not (closing and self.take(closing)):
            if self.peek() is None:
                if closing:
                    self.fail(f"missing {closing!r}")
                return fields
            kind, name, _ = self.tokens[self.pos]
            if kind != "word" or not _FIELD.fullmatch(name):
                self.fail(f"expected a field name, found {name!r}")
            self.pos += 1
            value = self.value(name, colon=self.take(":"))
            self.store(fields, name, value)
            if not self.take(","):
                self.take(";")
        return fields

    def value(self, field: str, colon: bool) -> Any:
        if self.take("{"):
            return self.message(closing="}")
        if self.take("["):
            items: list[Any] = []
            while not self.take("]"):
                if self.peek() is None:
                    self.fail(f"{field}: missing ']'")
                if items and not self.take(","):
                    self.fail(f"{field}: expected ',' or ']'")
                items.append(self.value(field, colon=True))
            return items
        if not colon:
            self.fail(f"{field}: expected ':' before its value")
        return self.scalar(field)

    def scalar(self, field: str) -> Any:
        if self.peek() is None:
            self.fail(f"{field}: missing value")
        kind, text, _ = self.tokens[self.pos]
        self.pos += 1
        if kind == "string":
            return self.unquote(text)
        if kind != "word":
            self.fail(f"{field}: expected a value, found {text!r}")
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
        if text in ("true", "false"):
            return text == "true"
        if not _FIELD.fullmatch(text):
            self.fail(f"{field}: {text!r} is not a value")
        return text  # an enum value

    def unquote(self, text: str) -> str:
        def plain(match: re.Match) -> str:
            if match.group(1) not in _UNESCAPE:
                self.fail(f"unknown escape \\{match.group(1)}", self.tokens[self.pos - 1][2])
            return _UNESCAPE[match.group(1)]

        return re.sub(r"\\(.)", plain, text[1:-1])

    def store(self, fields: dict[str, Any], name: str, value: Any) -> None:
        if name in MAPS:
            for entry in value if isinstance(value, list) else [value]:
                if not isinstance(entry, dict) or "key" not in entry:
                    self.fail(f"{name}: each entry needs a key")
                fields.setdefault(name, {})[entry["key"]] = entry.get("value")
        elif name in REPEATED or isinstance(value, list) or name in fields:
            if name in fields and not isinstance(fields[name], list):
                fields[name] = [fields[name]]  # a field written as several blocks
            items = value if isinstance(value, list) else [value]
            fields.setdefault(name, []).extend(items)
        else:
            fields[name] = value
