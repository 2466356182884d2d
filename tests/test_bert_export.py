"""bert.export: ONNX graphs of fine-tuned tiny BERTs, checked here with onnxruntime, and
the Triton model repository beside them, checked as files and text (no Triton here)."""

import contextlib
import io
import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bert import export
from bert.model import BertForQuestionAnswering, BertForSequenceClassification
from bert.tiny import build_vocab, save_tiny_bert, tiny_config
from common.errors import UserError
from common.triton_repo import read_config
from tests.bert_finetune_fixtures import WORDS
from tests.helpers import requires_cuda

# TorchScript (the Triton libtorch model) is deprecated in torch 2.13, and says so each call.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")

POSITIONS = 64  # max_position_embeddings of the tiny models
LABELS = 3
# The classification export's Triton settings (the squad export keeps the defaults).
MRPC_FLAGS = ["--triton-name", "mrpc", "--triton-max-batch", "16", "--triton-preferred", "2,16",
              "--triton-queue-delay-us", "500", "--triton-kind", "cpu", "--triton-instances", "2"]  # fmt: skip


def save_task_model(model_cls, folder, vocab, **kwargs):
    """A tiny task model with its head "fine-tuned" (saved, so nothing is initialised on
    loading), dropout on: the export must run it in eval mode."""
    with open(vocab, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    torch.manual_seed(0)
    config = tiny_config(vocab_size, hidden_size=32, max_position_embeddings=POSITIONS)
    return model_cls(config, **kwargs).save_pretrained(folder, vocab_file=vocab)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    vocab = build_vocab([" ".join(WORDS)], root / "vocab.txt", vocab_size=80)
    return {
        "squad": save_task_model(BertForQuestionAnswering, root / "squad", vocab),
        "classification": save_task_model(
            BertForSequenceClassification, root / "classification", vocab, num_labels=LABELS
        ),
        "pretraining": save_tiny_bert(root / "pretraining", vocab, hidden_size=32),
    }


@pytest.fixture(scope="module")
def squad_export(checkpoints, tmp_path_factory):
    """Through the API, into a folder holding an int8 file of an earlier export, with a
    Triton repository of the default settings."""
    out = tmp_path_factory.mktemp("squad_onnx")
    (out / export.INT8_FILE).write_bytes(b"an earlier export")
    report = export.export_bert(
        checkpoints["squad"], out, task="squad", triton_repo=tmp_path_factory.mktemp("triton")
    )
    return out, report


@pytest.fixture(scope="module")
def classification_export(checkpoints, tmp_path_factory):
    """Through the command line, with --int8 and a Triton repository of MRPC_FLAGS into a
    folder holding an earlier GPU export's mrpc_trt; (folder, report, what it printed)."""
    out = tmp_path_factory.mktemp("classification_onnx")
    repo = tmp_path_factory.mktemp("triton")
    (repo / "mrpc_trt" / "1").mkdir(parents=True)
    (repo / "mrpc_trt" / "1" / export.PLAN_FILE).write_bytes(b"an earlier plan")
    argv = [str(checkpoints["classification"]), str(out), "--task", "classification"]
    argv += ["--triton-repo", str(repo), *MRPC_FLAGS]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export.main([*argv, "--num_labels", str(LABELS), "--int8"]) == 0
    report = json.loads((out / export.REPORT_FILE).read_text(encoding="utf-8"))
    return out, report, printed.getvalue()


@pytest.fixture(params=["squad", "classification"])
def exported(request, squad_export, classification_export, checkpoints):
    """(task, ONNX folder, report, the PyTorch model) for each task."""
    out, report = (squad_export if request.param == "squad" else classification_export)[:2]
    model_cls = export.TASKS[request.param].model_cls
    return request.param, out, report, model_cls.from_pretrained(checkpoints[request.param])


def padded_batch(vocab_size, rows=4, tokens=23):
    """Random ids; row i keeps tokens - 4i positions, the rest is padding."""
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(5, vocab_size, (rows, tokens), generator=generator)
    attention_mask = torch.ones(rows, tokens, dtype=torch.long)
    for row in range(rows):
        attention_mask[row, tokens - 4 * row :] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, tokens // 2 :] = 1
    token_type_ids[attention_mask == 0] = 0
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }


def run_onnx(path, batch):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in batch.items()})


def real_positions(outputs, batch, task):
    """The outputs that belong to tokens: logits of each row, or the QA logits of the
    unpadded positions."""
    if task == "classification":
        return [outputs[0]]
    keep = batch["attention_mask"].numpy() == 1
    return [o[keep] for o in outputs]


@pytest.mark.slow
def test_graph_has_named_int64_inputs_and_dynamic_batch_and_sequence_axes(exported):
    task, out, report, _ = exported
    graph = onnx.load(str(out / export.MODEL_FILE)).graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in graph.input] == ["input_ids", "token_type_ids", "attention_mask"]
    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert dims(value) == ["batch", "sequence"]
    expected = (
        {"start_logits": ["batch", "sequence"], "end_logits": ["batch", "sequence"]}
        if task == "squad"
        else {"logits": ["batch", LABELS]}
    )
    assert {o.name: dims(o) for o in graph.output} == expected
    assert [o["name"] for o in report["outputs"]] == list(expected)
    assert report["inputs"][2] == {
        "name": "attention_mask",
        "dtype": "int64",
        "shape": ["batch", "sequence"],
    }


@pytest.mark.slow
def test_onnxruntime_reproduces_pytorch_on_a_padded_batch(exported):
    task, out, _, model = exported
    batch = padded_batch(model.config.vocab_size)
    onnx_out = run_onnx(out / export.MODEL_FILE, batch)
    with torch.no_grad():
        torch_out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    assert len(onnx_out) == len(torch_out)
    for o, t in zip(onnx_out, torch_out, strict=True):
        np.testing.assert_allclose(o, t.numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_tokens_under_padding_do_not_change_the_outputs(exported):
    """The mask is in the graph: other ids where attention_mask is 0 change nothing,
    while another id at a real token does (the check can see a change)."""
    task, out, _, model = exported
    batch = padded_batch(model.config.vocab_size)
    before = real_positions(run_onnx(out / export.MODEL_FILE, batch), batch, task)
    under_padding = dict(batch, input_ids=batch["input_ids"].clone())
    under_padding["input_ids"][batch["attention_mask"] == 0] = 9
    after = real_positions(run_onnx(out / export.MODEL_FILE, under_padding), batch, task)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    real_token = dict(batch, input_ids=batch["input_ids"].clone())
    real_token["input_ids"][:, 1] = (batch["input_ids"][:, 1] + 1) % model.config.vocab_size
    changed = real_positions(run_onnx(out / export.MODEL_FILE, real_token), batch, task)
    assert max(np.abs(c - b).max() for c, b in zip(changed, before, strict=True)) > 1e-6


@pytest.mark.slow
def test_report_holds_parity_versions_and_source(exported, checkpoints):
    task, out, report, _ = exported
    assert json.loads((out / export.REPORT_FILE).read_text(encoding="utf-8")) == report
    parity = report["parity"]
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    shapes = {(b["rows"], b["tokens"], b["padded"]) for b in parity["batches"]}
    assert {rows for rows, _, _ in shapes} >= {1, 3}
    assert {padded for _, _, padded in shapes} == {False, True}
    assert len({tokens for _, tokens, _ in shapes}) >= 2
    assert report["opset"] == export.DEFAULT_OPSET
    assert report["max_seq_length"] == POSITIONS
    assert report["source"] == str(checkpoints[task].resolve())
    assert set(report["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert report["versions"]["torch"] == torch.__version__
    assert (out / "vocab.txt").read_bytes() == (checkpoints[task] / "vocab.txt").read_bytes()


@pytest.mark.slow
def test_int8_report_has_its_drift_and_argmax_agreement(classification_export):
    out, report, printed = classification_export
    int8 = report["int8"]
    assert (out / export.INT8_FILE).stat().st_size == int8["bytes"] > 0
    assert int8["bytes"] < report["bytes"]
    assert 0 < int8["max_abs_diff"] < 0.1  # logits of the tiny model are ~0.1
    assert 50 <= int8["argmax_agreement"] <= 100
    assert int8["decisions"] == sum(b["rows"] for b in report["parity"]["batches"])
    assert "drift" in printed and f"{int8['argmax_agreement']:.1f}%" in printed
    assert "model.onnx" in printed and "max abs difference" in printed


@pytest.mark.slow
def test_export_without_int8_deletes_an_earlier_int8_file(squad_export):
    out, report = squad_export
    assert report["int8"] is None
    assert not (out / export.INT8_FILE).exists()


@pytest.mark.slow
def test_parity_failure_writes_nothing(checkpoints, tmp_path, monkeypatch, capsys):
    reference = export.torch_outputs

    def noisy(model, batch):
        return [o + 1e-2 for o in reference(model, batch)]

    monkeypatch.setattr(export, "torch_outputs", noisy)
    out = tmp_path / "onnx"
    argv = [str(checkpoints["squad"]), str(out), "--task", "squad", "--int8"]
    assert export.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "differ from PyTorch's by 0.01" in lines[0] and "nothing written" in lines[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "source, task, named",
    [
        ("missing", "squad", "does not exist"),
        ("pretraining", "squad", "qa_outputs"),  # never fine-tuned: the head would be random
        ("squad", "classification", "classifier"),
    ],
)
def test_unusable_checkpoint_is_one_line_error_naming_it(
    checkpoints, tmp_path, capsys, source, task, named
):
    folder = checkpoints.get(source, tmp_path / "missing")
    out = tmp_path / "onnx"
    assert export.main([str(folder), str(out), "--task", task]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and str(folder) in lines[0] and named in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--task", "squad", "--opset", "23"], "--opset 23"),
        (["--task", "squad", "--opset", "17"], "--opset 17"),
        (["--task", "squad", "--num_labels", "3"], "--num_labels"),
        (["--task", "ner"], "--task"),
    ],
)
def test_bad_flags_are_refused_before_any_work(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as exit:
        export.parse_args([str(tmp_path / "missing"), str(tmp_path / "onnx"), *flags])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]


def test_a_graph_without_the_attention_mask_input_is_refused():
    """What the TorchScript exporter writes when traced on an example without padding."""
    inputs = [
        {"name": name, "dtype": "int64", "shape": ["batch", "sequence"]}
        for name in ("input_ids", "token_type_ids")
    ]
    outputs = [{"name": "logits", "dtype": "float", "shape": ["batch", 2]}]
    problem = export.graph_problem(inputs, outputs, ("logits",))
    assert problem is not None and "attention_mask" in problem


# ------------------------------------------------------------- the Triton model repository

# What each export's repository must hold (squad_export: defaults; classification_export:
# MRPC_FLAGS, on CPUs).
TRITON = {
    "squad": {
        "models": ["bert_squad_onnx", "bert_squad_libtorch", "bert_squad_trt"],
        "max_batch": 8,
        "preferred": [4, 8],
        "delay": 100,
        "instances": [{"count": 1, "kind": "KIND_GPU"}],
        "outputs": [("start_logits", [-1]), ("end_logits", [-1])],
    },
    "classification": {
        "models": ["mrpc_onnx", "mrpc_libtorch"],
        "max_batch": 16,
        "preferred": [2, 16],
        "delay": 500,
        "instances": [{"count": 2, "kind": "KIND_CPU"}],
        "outputs": [("logits", [LABELS])],
    },
}
PLATFORMS = {"onnx": "onnxruntime_onnx", "libtorch": "pytorch_libtorch", "trt": "tensorrt_plan"}


def triton_repo(report):
    return Path(report["triton"]["repository"])


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def run_torchscript(module, batch):
    with torch.inference_mode():
        out = module(*(batch[name] for name in export.INPUT_NAMES))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def docker_command(readme):
    """The command of a TRT README, as words: (docker's, trtexec's)."""
    command = readme[readme.index("docker run") :].split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(command)
    at = words.index(export.TRTEXEC)
    return words[:at], words[at:]


@pytest.fixture(params=["squad", "classification"])
def torchscript(request, checkpoints, tmp_path):
    """(task, the PyTorch model, what trace_torchscript saved, loaded back), without ONNX."""
    model = export.load_model(checkpoints[request.param], request.param)
    path = tmp_path / export.TORCHSCRIPT_FILE
    export.trace_torchscript(model, path)
    return request.param, model, torch.jit.load(str(path))


@pytest.mark.slow
def test_triton_repository_holds_onnx_libtorch_and_trt_models(squad_export):
    _, report = squad_export
    assert files_under(triton_repo(report)) == [
        "bert_squad_libtorch",
        "bert_squad_libtorch/1",
        "bert_squad_libtorch/1/model.pt",
        "bert_squad_libtorch/config.pbtxt",
        "bert_squad_onnx",
        "bert_squad_onnx/1",
        "bert_squad_onnx/1/model.onnx",
        "bert_squad_onnx/config.pbtxt",
        "bert_squad_trt",
        "bert_squad_trt/1",  # empty: trtexec writes model.plan there
        "bert_squad_trt/README.txt",
        "bert_squad_trt/config.pbtxt",
    ]


@pytest.mark.slow
def test_triton_kind_cpu_writes_no_trt_model_and_removes_an_earlier_one(classification_export):
    _, report, _ = classification_export
    assert files_under(triton_repo(report)) == [
        "mrpc_libtorch",
        "mrpc_libtorch/1",
        "mrpc_libtorch/1/model.pt",
        "mrpc_libtorch/config.pbtxt",
        "mrpc_onnx",
        "mrpc_onnx/1",
        "mrpc_onnx/1/model.onnx",
        "mrpc_onnx/config.pbtxt",
    ]


@pytest.mark.slow
def test_triton_configs_hold_platform_batching_instances_and_tensors(exported):
    task, _, report, _ = exported
    want = TRITON[task]
    assert report["triton"]["models"] == want["models"]
    for model in want["models"]:
        config = read_config(triton_repo(report) / model / "config.pbtxt")
        suffix = model.rsplit("_", 1)[1]
        assert config["name"] == model
        assert config["platform"] == PLATFORMS[suffix]
        assert config["max_batch_size"] == want["max_batch"]
        assert config["dynamic_batching"] == {
            "preferred_batch_size": want["preferred"],
            "max_queue_delay_microseconds": want["delay"],
        }
        assert config["instance_group"] == want["instances"]
        # The libtorch backend binds by position: INPUT__<i>, OUTPUT__<i> in forward's order.
        inputs = [f"INPUT__{i}" for i in range(3)] if suffix == "libtorch" else export.INPUT_NAMES
        outputs = [
            (f"OUTPUT__{i}" if suffix == "libtorch" else name, dims)
            for i, (name, dims) in enumerate(want["outputs"])
        ]
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
            (name, "TYPE_INT64", [-1]) for name in inputs
        ]
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
            (name, "TYPE_FP32", dims) for name, dims in outputs
        ]
        params = {"INFERENCE_MODE": {"string_value": "true"}} if suffix == "libtorch" else None
        assert config.get("parameters") == params


@pytest.mark.slow
def test_triton_onnx_model_is_the_exported_graph(exported):
    _, out, report, _ = exported
    copy = triton_repo(report) / TRITON[exported[0]]["models"][0] / "1" / export.MODEL_FILE
    assert copy.read_bytes() == (out / export.MODEL_FILE).read_bytes()


@pytest.mark.slow
def test_triton_torchscript_reproduces_pytorch_on_a_padded_batch(exported):
    task, _, report, model = exported
    path = triton_repo(report) / TRITON[task]["models"][1] / "1" / export.TORCHSCRIPT_FILE
    module = torch.jit.load(str(path))
    batch = padded_batch(model.config.vocab_size)
    for got, want in zip(
        run_torchscript(module, batch), run_torchscript(model.eval(), batch), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert 0 <= report["triton"]["torchscript"]["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_trt_readme_is_the_report_command_with_the_export_shapes(squad_export):
    _, report = squad_export
    readme = (triton_repo(report) / "bert_squad_trt" / export.TRT_README).read_text()
    _, trtexec = docker_command(readme)
    assert trtexec == report["triton"]["trtexec"]
    flags = dict(word.removeprefix("--").split("=", 1) for word in trtexec[1:])
    assert (
        flags["maxShapes"]
        == f"input_ids:8x{POSITIONS},token_type_ids:8x{POSITIONS},attention_mask:8x{POSITIONS}"
    )


@pytest.mark.slow
def test_summary_names_the_triton_models(classification_export):
    _, report, printed = classification_export
    assert report["triton"]["trtexec"] is None
    assert f"wrote mrpc_onnx, mrpc_libtorch to {triton_repo(report)}" in printed


def test_torchscript_reproduces_pytorch_on_a_padded_batch(torchscript):
    _, model, module = torchscript
    batch = padded_batch(model.config.vocab_size)
    for got, want in zip(
        run_torchscript(module, batch), run_torchscript(model, batch), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_torchscript_ignores_tokens_under_padding(torchscript):
    """Traced on a padded example, the mask is in the graph: other ids under padding change
    nothing, another id at a real token does."""
    task, model, module = torchscript
    batch = padded_batch(model.config.vocab_size)
    before = real_positions(run_torchscript(module, batch), batch, task)
    under_padding = dict(batch, input_ids=batch["input_ids"].clone())
    under_padding["input_ids"][batch["attention_mask"] == 0] = 9
    after = real_positions(run_torchscript(module, under_padding), batch, task)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    real_token = dict(batch, input_ids=batch["input_ids"].clone())
    real_token["input_ids"][:, 1] = (batch["input_ids"][:, 1] + 1) % model.config.vocab_size
    changed = real_positions(run_torchscript(module, real_token), batch, task)
    assert max(np.abs(c - b).max() for c, b in zip(changed, before, strict=True)) > 1e-6


def test_torchscript_takes_the_device_of_its_inputs(torchscript):
    """No device is written into the graph (the tracer would write the CPU for the
    position ids): Triton can run it on a GPU."""
    _, _, module = torchscript
    nodes = list(module.inlined_graph.nodes())
    fixed = [
        n for n in nodes if n.kind() == "prim::Constant" and "Device" in str(n.output().type())
    ]
    assert fixed == []
    assert "prim::device" in {n.kind() for n in nodes}


def test_torchscript_refuses_more_tokens_than_positions(torchscript):
    """BertModel's own check is Python, which the tracer drops; on a GPU the position
    lookup would end in a device-side assert instead of an error for the request."""
    _, _, module = torchscript
    ids = torch.zeros(1, POSITIONS + 1, dtype=torch.long)
    with pytest.raises(torch.jit.Error, match=f"{POSITIONS + 1} tokens, more than the model's"):
        module(ids, ids, torch.ones_like(ids))
    longest = ids[:, :POSITIONS]
    assert module(longest, longest, torch.ones_like(longest)) is not None


@requires_cuda
def test_torchscript_runs_on_a_gpu(torchscript):
    """As Triton's libtorch backend loads it for a KIND_GPU instance."""
    _, model, module = torchscript
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    on_gpu = torch.jit.load(buffer, map_location="cuda")
    batch = padded_batch(model.config.vocab_size)
    with torch.inference_mode():
        out = on_gpu(*(batch[name].cuda() for name in export.INPUT_NAMES))
    got = [o.cpu().numpy() for o in (out if isinstance(out, tuple) else (out,))]
    for g, want in zip(got, run_torchscript(model, batch), strict=True):
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("preferred, opt", [((4, 8), 8), ((2,), 2), ((), 16)])
def test_trt_readme_gives_the_trtexec_command_with_min_opt_max_shapes(preferred, opt):
    options = export.TritonOptions(max_batch=16, preferred=preferred)
    docker, trtexec = docker_command(export.trt_readme("bert_squad", options, 384))
    assert docker == [
        "docker", "run", "--rm", "--gpus", "all", "-v", "$PWD:/models",
        "nvcr.io/nvidia/tritonserver:<yy.mm>-py3",
    ]  # fmt: skip

    def shapes(rows, tokens):
        return f"input_ids:{rows}x{tokens},token_type_ids:{rows}x{tokens},attention_mask:{rows}x{tokens}"

    assert trtexec == [
        "/usr/src/tensorrt/bin/trtexec",
        "--onnx=/models/bert_squad_onnx/1/model.onnx",
        "--saveEngine=/models/bert_squad_trt/1/model.plan",
        f"--minShapes={shapes(1, 1)}",
        f"--optShapes={shapes(opt, 384)}",
        f"--maxShapes={shapes(16, 384)}",
    ]


def test_an_earlier_plan_is_kept_only_for_the_same_graph_and_command(tmp_path):
    graph, torchscript_file = tmp_path / "model.onnx", tmp_path / "model.pt"
    torchscript_file.write_bytes(b"TorchScript")
    repo = tmp_path / "repo"
    plan = repo / "bert_squad_trt" / "1" / export.PLAN_FILE

    def write(options, graph_bytes):
        graph.write_bytes(graph_bytes)
        models = export.triton_models("squad", None, options)
        readme = export.trt_readme("bert_squad", options, POSITIONS)
        export.write_triton_repository(repo, "bert_squad", models, graph, torchscript_file, readme)

    write(export.TritonOptions(), b"graph")
    plan.write_bytes(b"built")
    write(export.TritonOptions(), b"graph")
    assert plan.read_bytes() == b"built"
    write(export.TritonOptions(max_batch=16), b"graph")  # another trtexec command
    assert not plan.exists()
    plan.write_bytes(b"built")
    write(export.TritonOptions(max_batch=16), b"another graph")
    assert not plan.exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--triton-preferred", "4,16"], "--triton-preferred"),  # over --triton-max-batch 8
        (["--triton-preferred", "4,x"], "--triton-preferred"),
        (["--triton-max-batch", "0"], "--triton-max-batch"),
        (["--triton-queue-delay-us", "-1"], "--triton-queue-delay-us"),
        (["--triton-kind", "tpu"], "--triton-kind"),
        (["--triton-instances", "0"], "--triton-instances"),
        (["--triton-name", "../squad"], "--triton-name"),
    ],
)
def test_bad_triton_flags_are_refused_before_any_work(tmp_path, capsys, flags, named):
    argv = [str(tmp_path / "missing"), str(tmp_path / "onnx"), "--task", "squad"]
    with pytest.raises(SystemExit) as exit:
        export.parse_args([*argv, "--triton-repo", str(tmp_path / "repo"), *flags])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]


def test_a_triton_repo_that_is_a_file_is_refused_before_any_work(checkpoints, tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.write_text("not a folder")
    argv = [str(checkpoints["squad"]), str(tmp_path / "onnx"), "--task", "squad"]
    assert export.main([*argv, "--triton-repo", str(repo)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--triton-repo" in lines[0] and "not a folder" in lines[0]
    assert not (tmp_path / "onnx").exists()


def test_bad_triton_settings_through_the_api_are_refused_before_any_work(checkpoints, tmp_path):
    with pytest.raises(UserError, match="max_batch_size"):
        export.export_bert(
            checkpoints["squad"],
            tmp_path / "onnx",
            triton_repo=tmp_path / "repo",
            triton=export.TritonOptions(max_batch=0, preferred=()),
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the mistake under test
def test_torchscript_traced_without_padding_is_refused_and_nothing_written(
    checkpoints, tmp_path, monkeypatch, capsys
):
    """Traced on an unpadded example the model leaves out the mask: padded rows come out
    wrong, which the parity check catches before anything is written."""

    def trace_unpadded(model, path):
        example = export.make_batch(model.config, 2, 16, False, torch.Generator().manual_seed(0))
        traced = torch.jit.trace(model, tuple(example[name] for name in export.INPUT_NAMES))
        torch.jit.save(traced, str(path))

    monkeypatch.setattr(export, "trace_torchscript", trace_unpadded)
    out, repo = tmp_path / "onnx", tmp_path / "repo"
    argv = [str(checkpoints["squad"]), str(out), "--task", "squad", "--triton-repo", str(repo)]
    assert export.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "TorchScript model differs from PyTorch" in lines[0]
    assert list(out.iterdir()) == [] and not repo.exists()
