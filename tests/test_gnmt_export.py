"""gnmt.export and translate --backend onnxruntime: the folder holds checked graphs with
batch and source length dynamic, a tokenizer and the parity measured; translations
through onnxruntime are the PyTorch ones token for token; a failed export leaves nothing.

The model is small and random, with weights scaled up so that different sources get
different translations (at the recipe's scale a random model says the same to all).
"""

import json

import pytest
import torch

from gnmt import export
from gnmt.export import main
from gnmt.model import GNMT
from gnmt.translate import main as translate_main
from gnmt.translate import parse_args as translate_args
from tests.gnmt_fixtures import make_tokenizer, save_our_checkpoint, toy_pairs

onnx = pytest.importorskip(
    "onnx", reason="the serve extra is not installed: requirements-serve.txt"
)
pytest.importorskip(
    "onnxruntime", reason="the serve extra is not installed: requirements-serve.txt"
)

PAIRS = toy_pairs(300)
EN = [en for en, _ in PAIRS[:9]]


def scaled_model(vocab_size, init_decoder_from_encoder=False):
    torch.manual_seed(0)
    model = GNMT(vocab_size, hidden_size=16, num_layers=4,
                 init_decoder_from_encoder=init_decoder_from_encoder).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("bpe"), PAIRS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("gnmt")
    return save_our_checkpoint(directory, scaled_model(tokenizer.vocab_size), tokenizer)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["--model", str(checkpoint), "--out-dir", str(out)]) == 0
    return out


def metadata(folder):
    return json.loads((folder / "export.json").read_text(encoding="utf-8"))


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_folder_holds_graphs_tokenizer_and_metadata(onnx_dir, tokenizer):
    files = sorted(p.name for p in onnx_dir.iterdir())
    assert files == ["decoder_step.onnx", "encoder.onnx", "export.json", "tokenizer.json"]
    meta = metadata(onnx_dir)
    assert meta["opset"] == export.OPSET and meta["vocab_size"] == tokenizer.vocab_size
    assert meta["special_tokens"] == {"pad": 0, "bos": 2, "eos": 3}
    assert {"python", "torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    saved = json.loads((onnx_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved == tokenizer.state_dict()


def test_parity_figures_are_within_tolerance(onnx_dir):
    parity = metadata(onnx_dir)["parity"]
    assert parity["tolerance"] == 1e-4 and len(parity["shapes"]) >= 3
    figures = parity["max_abs_diff"]
    assert set(figures) == {"keys", "projected_keys", "mask", "log_probs", "attention",
                            "decoder_state"}  # fmt: skip
    assert figures["mask"] == 0.0
    assert all(0.0 <= v <= 1e-4 for v in figures.values()), figures


def test_graphs_have_named_inputs_and_outputs_with_dynamic_batch_and_length(onnx_dir):
    encoder = onnx.load(onnx_dir / "encoder.onnx").graph
    assert [i.name for i in encoder.input] == ["src", "src_lengths"]
    assert [o.name for o in encoder.output] == ["keys", "projected_keys", "mask"]
    assert dims(encoder.input[0]) == ["batch", "source_length"]
    assert dims(encoder.output[0]) == ["batch", "source_length", 16]

    step = onnx.load(onnx_dir / "decoder_step.onnx").graph
    assert [i.name for i in step.input] == [
        "tokens", "hidden", "cell", "keys", "projected_keys", "mask"
    ]  # fmt: skip
    assert [o.name for o in step.output] == ["log_probs", "attention", "next_hidden", "next_cell"]
    shapes = {v.name: dims(v) for v in [*step.input, *step.output]}
    assert shapes["tokens"] == ["batch", 1]
    assert shapes["hidden"] == shapes["next_cell"] == [4, "batch", 16]
    assert shapes["mask"] == shapes["attention"] == ["batch", "source_length"]
    assert shapes["log_probs"][0] == "batch"


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("beam", ["1", "3"])
def test_onnxruntime_translations_are_the_pytorch_ones(checkpoint, onnx_dir, tmp_path, beam):
    # short, long and empty lines; batches of 3 sorted by length, so padded
    lines = [EN[0], " ".join(EN[1:4]), "", EN[4], "Hello.", " ".join(EN[5:7]), EN[7], EN[8]]
    src = write_lines(tmp_path / "in.en", lines)
    common = ["--input", str(src), "--batch-size", "3", "--beam-size", beam,
              "--max-length", "20", "--warmup", "0"]  # fmt: skip
    backends = {
        "pytorch": ["--model", str(checkpoint)],
        "onnxruntime": ["--backend", "onnxruntime", "--onnx-dir", str(onnx_dir)],
    }
    outputs = {}
    for name, args in backends.items():
        out = tmp_path / f"{name}.de"
        assert translate_main([*args, *common, "--output", str(out)]) == 0
        outputs[name] = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(outputs["pytorch"]) == len(lines)
    assert len({line for line in outputs["pytorch"] if line}) > 3  # the sources matter
    assert outputs["onnxruntime"] == outputs["pytorch"]


def test_decoder_started_from_the_encoder_exports_its_final_states(tokenizer, tmp_path):
    model = scaled_model(tokenizer.vocab_size, init_decoder_from_encoder=True)
    checkpoint = save_our_checkpoint(tmp_path / "ckpt", model, tokenizer)
    out = tmp_path / "onnx"
    assert main(["--model", str(checkpoint), "--out-dir", str(out)]) == 0
    meta = metadata(out)
    assert meta["encoder"]["outputs"] == ["keys", "projected_keys", "mask", "hidden", "cell"]
    assert meta["parity"]["max_abs_diff"]["encoder_state"] <= 1e-4


def test_bad_checkpoint_path_is_a_one_line_error(tmp_path, capsys):
    missing, out = tmp_path / "missing.pth", tmp_path / "onnx"
    assert main(["--model", str(missing), "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: checkpoint {missing} does not exist"]
    assert not out.exists()


def test_parity_failure_writes_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "measure_parity", lambda *_: {"keys": 0.0, "log_probs": 0.25})
    out = tmp_path / "onnx"
    assert main(["--model", str(checkpoint), "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.25 on log_probs" in err[0] and "nothing was written" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_replaced_only_with_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["--model", str(checkpoint), "--out-dir", str(out)])
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["--model", str(checkpoint), "--out-dir", str(out), "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / "export.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "onnxruntime"], "--backend onnxruntime needs --onnx-dir"),
        (["--backend", "onnxruntime", "--onnx-dir", "o", "--model", "m.pth"], "--model conflicts"),
        (["--backend", "onnxruntime", "--onnx-dir", "o", "--math", "fp16"], "--math fp16:"),
        (["--onnx-dir", "o", "--model", "m.pth"], "--onnx-dir is read only with"),
        ([], "--backend pytorch needs --model"),
    ],
)
def test_backend_flags_that_cannot_work_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        translate_args(["--input", "in.en", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_folder_not_from_gnmt_export_is_a_one_line_error(tmp_path, capsys):
    src = write_lines(tmp_path / "in.en", EN[:1])
    args = ["--backend", "onnxruntime", "--onnx-dir", str(tmp_path), "--input", str(src)]
    assert translate_main(args) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path} has no export.json: not a gnmt.export folder"
    ]
