"""Triton model repositories: layout, config.pbtxt values and text, checks, atomic writes."""

import shutil

import pytest

from common import triton_repo
from common.errors import UserError
from common.triton_repo import (
    ConfigSyntaxError,
    ModelFolderExistsError,
    TensorSpec,
    TritonConfigError,
    read_config,
    write_model_repository,
)

BERT_INPUTS = [
    TensorSpec("input_ids", "TYPE_INT64", [-1]),
    TensorSpec("token_type_ids", "TYPE_INT64", [-1]),
    TensorSpec("attention_mask", "TYPE_INT64", [-1]),
]
BERT_OUTPUTS = [
    TensorSpec("start_logits", "TYPE_FP32", [-1]),
    TensorSpec("end_logits", "TYPE_FP32", [-1]),
]

# The BERT SQuAD export served by onnxruntime on CPU, as Triton's documentation lays
# out a config.pbtxt.
BERT_SQUAD_CONFIG = """\
name: "bert_squad"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "input_ids"
    data_type: TYPE_INT64
    dims: [ -1 ]
  },
  {
    name: "token_type_ids"
    data_type: TYPE_INT64
    dims: [ -1 ]
  },
  {
    name: "attention_mask"
    data_type: TYPE_INT64
    dims: [ -1 ]
  }
]
output [
  {
    name: "start_logits"
    data_type: TYPE_FP32
    dims: [ -1 ]
  },
  {
    name: "end_logits"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
instance_group [
  {
    count: 1
    kind: KIND_CPU
  }
]
parameters {
  key: "intra_op_thread_count"
  value: { string_value: "1" }
}
"""


@pytest.fixture
def model_file(tmp_path):
    """A stand-in for an exported model: only its bytes are copied."""
    path = tmp_path / "exported.bin"
    path.write_bytes(b"weights\x00\x01")
    return path


def settings(model_file, **changes):
    """The arguments of a BERT SQuAD ONNX repository, with `changes` applied."""
    args = dict(
        platform="onnxruntime_onnx",
        inputs=BERT_INPUTS,
        outputs=BERT_OUTPUTS,
        max_batch_size=8,
        preferred_batch_sizes=[4, 8],
        max_queue_delay_us=100,
        instance_count=1,
        files={"model.onnx": model_file},
        parameters={"intra_op_thread_count": "1"},
    )
    args.update(changes)
    return args


def tensor(name, dtype, dims):
    return {"name": name, "data_type": dtype, "dims": dims}


@pytest.mark.parametrize(
    "platform, field, model_name",
    [
        ("python", "backend", "model.py"),
        ("onnxruntime_onnx", "platform", "model.onnx"),
        ("pytorch_libtorch", "platform", "model.pt"),
        ("tensorrt_plan", "platform", "model.plan"),
    ],
)
def test_each_platform_gets_its_layout_and_config(
    tmp_path, model_file, platform, field, model_name
):
    root = tmp_path / "repo"
    folder = write_model_repository(
        root,
        "m",
        platform=platform,
        inputs=[
            TensorSpec("tokens", "TYPE_INT32", [-1, 16]),
            TensorSpec("text", "TYPE_STRING", [1]),
        ],
        outputs=[TensorSpec("scores", "TYPE_FP16", [-1, 3])],
        max_batch_size=32,
        preferred_batch_sizes=[8, 16, 32],
        max_queue_delay_us=2500,
        instance_count=2,
        instance_kind="KIND_GPU",
        files={model_name: model_file},
    )

    assert folder == root / "m"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "m",
        "m/1",
        f"m/1/{model_name}",
        "m/config.pbtxt",
    ]
    assert (folder / "1" / model_name).read_bytes() == model_file.read_bytes()
    assert read_config(folder / "config.pbtxt") == {
        "name": "m",
        field: platform,
        "max_batch_size": 32,
        "input": [tensor("tokens", "TYPE_INT32", [-1, 16]), tensor("text", "TYPE_STRING", [1])],
        "output": [tensor("scores", "TYPE_FP16", [-1, 3])],
        "dynamic_batching": {
            "preferred_batch_size": [8, 16, 32],
            "max_queue_delay_microseconds": 2500,
        },
        "instance_group": [{"count": 2, "kind": "KIND_GPU"}],
    }


def test_bert_squad_config_matches_the_documented_text(tmp_path, model_file):
    folder = write_model_repository(tmp_path, "bert_squad", **settings(model_file))
    assert (folder / "config.pbtxt").read_text() == BERT_SQUAD_CONFIG


def test_bert_squad_config_reads_back_to_its_values(tmp_path, model_file):
    folder = write_model_repository(tmp_path, "bert_squad", **settings(model_file))
    assert read_config(folder / "config.pbtxt") == {
        "name": "bert_squad",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 8,
        "input": [
            tensor("input_ids", "TYPE_INT64", [-1]),
            tensor("token_type_ids", "TYPE_INT64", [-1]),
            tensor("attention_mask", "TYPE_INT64", [-1]),
        ],
        "output": [
            tensor("start_logits", "TYPE_FP32", [-1]),
            tensor("end_logits", "TYPE_FP32", [-1]),
        ],
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
    }


def test_parameters_with_quotes_and_newlines_read_back_unchanged(tmp_path, model_file):
    values = {"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz", "odd": 'a "b"\\c\nd'}
    args = settings(
        model_file, platform="python", files={"model.py": model_file}, parameters=values
    )
    folder = write_model_repository(tmp_path, "m", **args)
    config = read_config(folder / "config.pbtxt")
    assert config["parameters"] == {key: {"string_value": v} for key, v in values.items()}


def test_no_preferred_sizes_leaves_the_batcher_its_delay_only(tmp_path, model_file):
    folder = write_model_repository(
        tmp_path, "m", **settings(model_file, preferred_batch_sizes=[], max_queue_delay_us=0)
    )
    assert read_config(folder / "config.pbtxt")["dynamic_batching"] == {
        "max_queue_delay_microseconds": 0
    }


def test_version_folder_holds_every_file(tmp_path, model_file):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n")
    files = {"model.onnx": model_file, "vocab.txt": vocab}
    folder = write_model_repository(
        tmp_path / "repo", "m", **settings(model_file, files=files), version=3
    )
    assert sorted(p.name for p in folder.iterdir()) == ["3", "config.pbtxt"]
    assert (folder / "3" / "model.onnx").read_bytes() == model_file.read_bytes()
    assert (folder / "3" / "vocab.txt").read_text() == "[PAD]\n"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"preferred_batch_sizes": [4, 16]}, "preferred_batch_sizes[1]"),
        ({"preferred_batch_sizes": [0]}, "preferred_batch_sizes[0]"),
        ({"max_batch_size": 0, "preferred_batch_sizes": []}, "max_batch_size"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
        ({"instance_count": 0}, "instance_count"),
        ({"instance_kind": "KIND_TPU"}, "instance_kind"),
        ({"version": 0}, "version"),
        ({"platform": "onnx"}, "platform"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [TensorSpec("ids", "TYPE_INT42", [-1])]}, "inputs[0].dtype"),
        ({"inputs": [TensorSpec("", "TYPE_INT64", [-1])]}, "inputs[0].name"),
        ({"inputs": BERT_INPUTS + BERT_INPUTS[:1]}, "inputs[3].name"),
        ({"inputs": [TensorSpec("ids", "TYPE_INT64", [])]}, "inputs[0].dims"),
        ({"outputs": [TensorSpec("logits", "TYPE_FP32", [0])]}, "outputs[0].dims"),
        ({"files": {}}, "files"),
        ({"files": {"model.onnx": "/no/such/model.onnx"}}, "files[model.onnx]"),
        ({"parameters": {"threads": 1}}, "parameters[threads]"),
    ],
)
def test_bad_argument_is_named_and_nothing_is_written(tmp_path, model_file, changes, field):
    root = tmp_path / "repo"
    with pytest.raises(TritonConfigError) as caught:
        write_model_repository(root, "m", **settings(model_file, **changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    assert not root.exists()


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_model_name_must_be_a_folder_name(tmp_path, model_file, name):
    with pytest.raises(TritonConfigError, match="^name: "):
        write_model_repository(tmp_path, name, **settings(model_file))


def failing_copy(monkeypatch):
    """Make the second file copy fail, as a full disk would."""
    copies = []
    real_copy = shutil.copyfile

    def copy(source, dest):
        copies.append(dest)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        return real_copy(source, dest)

    monkeypatch.setattr(triton_repo.shutil, "copyfile", copy)


def test_failed_write_leaves_no_temporary_folder(tmp_path, model_file, monkeypatch):
    root = tmp_path / "repo"
    files = {"model.onnx": model_file, "vocab.txt": model_file}
    failing_copy(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write_model_repository(root, "m", **settings(model_file, files=files))
    assert list(root.iterdir()) == []


def test_failed_overwrite_keeps_the_old_model(tmp_path, model_file, monkeypatch):
    root = tmp_path / "repo"
    write_model_repository(root, "m", **settings(model_file))
    before = (root / "m" / "config.pbtxt").read_text()
    files = {"model.onnx": model_file, "vocab.txt": model_file}
    failing_copy(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write_model_repository(root, "m", **settings(model_file, files=files), overwrite=True)
    assert [p.name for p in root.iterdir()] == ["m"]
    assert (root / "m" / "config.pbtxt").read_text() == before
    assert [p.name for p in (root / "m" / "1").iterdir()] == ["model.onnx"]


def test_failed_rename_puts_the_old_model_back(tmp_path, model_file, monkeypatch):
    root = tmp_path / "repo"
    write_model_repository(root, "m", **settings(model_file))
    before = (root / "m" / "config.pbtxt").read_text()
    real_rename = triton_repo.os.rename

    def rename(source, dest):
        if dest == root / "m" and source.name.startswith(".m.tmp"):
            raise OSError(5, "Input/output error")
        real_rename(source, dest)

    monkeypatch.setattr(triton_repo.os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        write_model_repository(root, "m", **settings(model_file, max_batch_size=16), overwrite=True)
    assert [p.name for p in root.iterdir()] == ["m"]
    assert (root / "m" / "config.pbtxt").read_text() == before


def test_another_model_in_the_folder_is_refused(tmp_path, model_file):
    write_model_repository(tmp_path, "m", **settings(model_file))
    with pytest.raises(ModelFolderExistsError, match="overwrite=True") as caught:
        write_model_repository(tmp_path, "m", **settings(model_file, max_batch_size=16))
    assert isinstance(caught.value, UserError)
    assert read_config(tmp_path / "m" / "config.pbtxt")["max_batch_size"] == 8


def test_other_model_bytes_are_refused_too(tmp_path, model_file):
    write_model_repository(tmp_path, "m", **settings(model_file))
    model_file.write_bytes(b"retrained")
    with pytest.raises(ModelFolderExistsError):
        write_model_repository(tmp_path, "m", **settings(model_file))


def test_writing_the_same_model_again_is_allowed(tmp_path, model_file):
    first = write_model_repository(tmp_path / "repo", "m", **settings(model_file))
    again = write_model_repository(tmp_path / "repo", "m", **settings(model_file))
    assert again == first
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["m"]


def test_overwrite_replaces_the_whole_folder(tmp_path, model_file):
    root = tmp_path / "repo"
    write_model_repository(root, "m", **settings(model_file), version=1)
    changed = settings(model_file, max_batch_size=16)
    write_model_repository(root, "m", **changed, version=2, overwrite=True)
    assert sorted(p.name for p in (root / "m").iterdir()) == ["2", "config.pbtxt"]
    assert read_config(root / "m" / "config.pbtxt")["max_batch_size"] == 16
    assert [p.name for p in root.iterdir()] == ["m"]


def test_read_config_accepts_hand_written_variations(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text(
        "# served by onnxruntime\n"
        "name: 'bert'\n"
        'platform: "onnxruntime_onnx"; max_batch_size: 4\n'
        'input { name: "input_ids" data_type: TYPE_INT64 dims: -1 }\n'
        'input: { name: "attention_mask", data_type: TYPE_INT64, dims: [-1] }\n'
        "dynamic_batching { }\n"
        "instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0, 1 ] } ]\n"
        "optimization { input_pinned_memory { enable: true } }\n"
    )
    assert read_config(path) == {
        "name": "bert",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 4,
        "input": [
            tensor("input_ids", "TYPE_INT64", [-1]),
            tensor("attention_mask", "TYPE_INT64", [-1]),
        ],
        "dynamic_batching": {},
        "instance_group": [{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}],
        "optimization": {"input_pinned_memory": {"enable": True}},
    }


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ('name: "m"\ninput [\n  { name: "x" }\n', 4, "missing ']'"),
        ('name: "m"\nmax_batch_size 8\n', 2, "expected ':'"),
        ('name: "m"\n\nplatform: "a" }\n', 3, "expected a field name"),
        ('name: "m\\q"\n', 1, "unknown escape"),
    ],
)
def test_read_config_names_the_line_of_a_syntax_error(tmp_path, text, line, problem):
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    with pytest.raises(ConfigSyntaxError, match=f"config.pbtxt:{line}: .*{problem}"):
        read_config(path)
