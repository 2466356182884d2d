"""bert.export: ONNX graphs of fine-tuned tiny BERTs, checked here with onnxruntime."""

import contextlib
import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bert import export
from bert.model import BertForQuestionAnswering, BertForSequenceClassification
from bert.tiny import build_vocab, save_tiny_bert, tiny_config
from tests.bert_finetune_fixtures import WORDS

POSITIONS = 64  # max_position_embeddings of the tiny models
LABELS = 3


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
    """Through the API, into a folder holding an int8 file of an earlier export."""
    out = tmp_path_factory.mktemp("squad_onnx")
    (out / export.INT8_FILE).write_bytes(b"an earlier export")
    report = export.export_bert(checkpoints["squad"], out, task="squad")
    return out, report


@pytest.fixture(scope="module")
def classification_export(checkpoints, tmp_path_factory):
    """Through the command line, with --int8; (folder, report, what it printed)."""
    out = tmp_path_factory.mktemp("classification_onnx")
    argv = [str(checkpoints["classification"]), str(out), "--task", "classification"]
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
