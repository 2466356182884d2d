"""bert.download against a local HTTP server on 127.0.0.1 serving tiny fake files in the
real layouts (made up here, not SQuAD, GLUE or BERT data): files land in place, MRPC is
assembled in GLUE's layout, reruns make no request, corrupt bytes are refused."""

import hashlib
import io
import json
import subprocess
import zipfile

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from bert import download as bd
from common.download import read_manifest
from tests.file_server import serve_files
from tests.helpers import ROOT, clean_env

# --- fake files ----------------------------------------------------------------------------


def squad_json(version):
    article = {
        "title": "Fake",
        "paragraphs": [
            {
                "context": "A made-up paragraph.",
                "qas": [{"id": "q1", "question": "What?", "answers": []}],
            }
        ],
    }
    return json.dumps({"version": version, "data": [article]}).encode()


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


MSR_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
MSR_TRAIN_ROWS = [
    "1\t101\t102\tThe cat sat .\tA cat was sitting .",
    "0\t103\t104\tIt rained .\tThe sun shone .",
    "1\t105\t106\tHe left early .\tHe went home early .",
    "0\t107\t108\tPrices rose .\tPrices fell .",
    "1\t109\t110\tShe won .\tShe was the winner .",
]
MSR_TEST_ROWS = [
    "1\t201\t202\tOne test .\tA test .",
    "0\t203\t204\tTwo tests .\tNo tests .",
]
DEV_IDS = "103\t104\n109\t110\n"

TINY_CONFIG = json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1})
VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n"
SAFETENSORS = safetensors_bytes({"bert.embeddings.word_embeddings.weight": torch.zeros(6, 8)})


def torch_zip_bytes():
    buf = io.BytesIO()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(6, 8)}, buf)
    return buf.getvalue()


def hub(model, file):
    return f"/hub/{bd.MODELS[model]}/resolve/main/{file}"


FILES = {
    **{f"/squad/{s}-v{v}.json": squad_json(v) for v in ("1.1", "2.0") for s in ("train", "dev")},
    "/glue/CoLA.zip": zip_bytes(
        {"CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n", "CoLA/dev.tsv": ""}
    ),
    "/glue/SST-2.zip": zip_bytes({"SST-2/train.tsv": "sentence\tlabel\nfine film\t1\n"}),
    "/glue/MNLI.zip": zip_bytes({"MNLI/train.tsv": "index\n", "MNLI/dev_matched.tsv": "index\n"}),
    "/glue/msr_paraphrase_train.txt": (MSR_HEADER + "\r\n".join(MSR_TRAIN_ROWS) + "\r\n").encode(),
    "/glue/msr_paraphrase_test.txt": (MSR_HEADER + "\r\n".join(MSR_TEST_ROWS) + "\r\n").encode(),
    "/glue/mrpc_dev_ids.tsv": DEV_IDS.encode(),
    hub("bert-base-uncased", "config.json"): TINY_CONFIG.encode(),
    hub("bert-base-uncased", "vocab.txt"): VOCAB.encode(),
    hub("bert-base-uncased", "model.safetensors"): SAFETENSORS,
    # This one has only the older torch format on the (fake) Hub.
    hub("bert-large-uncased", "config.json"): TINY_CONFIG.encode(),
    hub("bert-large-uncased", "vocab.txt"): VOCAB.encode(),
    hub("bert-large-uncased", "pytorch_model.bin"): torch_zip_bytes(),
}


@pytest.fixture
def server():
    with serve_files(FILES) as srv:
        yield srv


@pytest.fixture(autouse=True)
def published(monkeypatch):
    """The fake files' digests stand in for the published ones."""
    for name in bd.SQUAD_SHA256:
        digest = hashlib.sha256(FILES[f"/squad/{name}"]).hexdigest()
        monkeypatch.setitem(bd.SQUAD_SHA256, name, digest)
    for name, (url, _) in bd.GLUE_FILES.items():
        digest = hashlib.sha256(FILES[f"/glue/{name}"]).hexdigest()
        monkeypatch.setitem(bd.GLUE_FILES, name, (url, digest))


def run(server, data_dir, *what, extra=()):
    """bert.download's main with every source pointed at the local server."""
    args = ["--data-dir", str(data_dir), *what, "--retries", "0"]
    for name, path in (("squad", "squad"), ("glue", "glue"), ("weights", "hub")):
        args += ["--base-url-override", f"{name}={server.url}/{path}"]
    return bd.main([*args, *extra])


def lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# --- SQuAD -----------------------------------------------------------------------------------


def test_squad_files_land_in_version_folders(server, tmp_path):
    assert run(server, tmp_path, "squad") == 0
    for version in ("1.1", "2.0"):
        for split in ("train", "dev"):
            path = tmp_path / "squad" / f"v{version}" / f"{split}-v{version}.json"
            assert path.read_bytes() == FILES[f"/squad/{split}-v{version}.json"]
    assert sorted(server.state.requests) == sorted(p for p in FILES if p.startswith("/squad/"))


def test_squad_file_not_matching_the_published_digest_is_refused(server, tmp_path, capsys):
    server.state.files["/squad/dev-v1.1.json"] = b'{"version": "1.1", "data": []}'
    assert run(server, tmp_path, "squad", extra=["--squad-versions", "1.1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{server.url}/squad/dev-v1.1.json" in err and "sha256 mismatch" in err
    assert not (tmp_path / "squad" / "v1.1" / "dev-v1.1.json").exists()


# --- GLUE ------------------------------------------------------------------------------------


def test_glue_archives_are_extracted_into_task_folders(server, tmp_path):
    assert run(server, tmp_path, "glue", extra=["--glue-tasks", "CoLA", "SST-2", "MNLI"]) == 0
    glue = tmp_path / "glue"
    assert lines(glue / "CoLA" / "train.tsv") == ["gj04\t1\t\tOur friends won't buy this analysis."]
    assert lines(glue / "SST-2" / "train.tsv") == ["sentence\tlabel", "fine film\t1"]
    assert (glue / "MNLI" / "dev_matched.tsv").is_file()
    assert (tmp_path / "downloads" / "CoLA.zip").read_bytes() == FILES["/glue/CoLA.zip"]


def test_mrpc_is_split_by_the_dev_ids_in_glue_layout(server, tmp_path):
    assert run(server, tmp_path, "glue", extra=["--glue-tasks", "MRPC"]) == 0
    mrpc = tmp_path / "glue" / "MRPC"
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    assert lines(mrpc / "train.tsv") == [header] + [MSR_TRAIN_ROWS[i] for i in (0, 2, 3)]
    assert lines(mrpc / "dev.tsv") == [header] + [MSR_TRAIN_ROWS[i] for i in (1, 4)]
    assert lines(mrpc / "test.tsv") == [
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String",
        "0\t201\t202\tOne test .\tA test .",
        "1\t203\t204\tTwo tests .\tNo tests .",
    ]


def test_mrpc_row_with_missing_fields_names_file_and_line(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(MSR_HEADER + MSR_TRAIN_ROWS[0] + "\n1\t105\t106\tonly one string\n")
    (tmp_path / "ids.tsv").write_text(DEV_IDS)
    with pytest.raises(bd.PrepareError, match=r"train\.txt, line 3: expected 5 tab-separated"):
        bd.build_mrpc(train, train, tmp_path / "ids.tsv", tmp_path / "MRPC")
    assert not (tmp_path / "MRPC").exists()


def test_mrpc_dev_ids_absent_from_the_training_file_are_refused(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(MSR_HEADER + "\n".join(MSR_TRAIN_ROWS) + "\n")
    (tmp_path / "ids.tsv").write_text(DEV_IDS + "998\t999\n")
    with pytest.raises(bd.PrepareError, match=r"ids\.tsv: 1 of its 3 pairs .*\(e\.g\. 998 999\)"):
        bd.build_mrpc(train, train, tmp_path / "ids.tsv", tmp_path / "MRPC")


def test_mrpc_tables_missing_after_an_interruption_are_rebuilt_without_requests(server, tmp_path):
    assert run(server, tmp_path, "glue", extra=["--glue-tasks", "MRPC"]) == 0
    dev = tmp_path / "glue" / "MRPC" / "dev.tsv"
    expected = dev.read_bytes()
    dev.unlink()
    server.state.requests.clear()
    assert run(server, tmp_path, "glue", extra=["--glue-tasks", "MRPC"]) == 0
    assert dev.read_bytes() == expected
    assert server.state.requests == []  # the sources on disk were verified, not fetched


# --- weights ---------------------------------------------------------------------------------


def test_weights_land_in_hf_layout_with_recorded_digests(server, tmp_path):
    assert run(server, tmp_path, "weights", extra=["--models", "bert-base-uncased"]) == 0
    folder = tmp_path / "weights" / "bert-base-uncased"
    assert (folder / "model.safetensors").read_bytes() == SAFETENSORS
    assert (folder / "vocab.txt").read_text() == VOCAB
    recorded = read_manifest(folder / "sha256.json")
    assert recorded["model.safetensors"] == hashlib.sha256(SAFETENSORS).hexdigest()
    assert sorted(recorded) == ["config.json", "model.safetensors", "vocab.txt"]


def test_weights_fall_back_to_pytorch_model_bin_when_the_hub_lacks_safetensors(server, tmp_path):
    assert run(server, tmp_path, "weights", extra=["--models", "bert-large-uncased"]) == 0
    folder = tmp_path / "weights" / "bert-large-uncased"
    assert zipfile.is_zipfile(folder / "pytorch_model.bin")
    assert not (folder / "model.safetensors").exists()
    server.state.requests.clear()
    assert run(server, tmp_path, "weights", extra=["--models", "bert-large-uncased"]) == 0
    assert server.state.requests == []  # the rerun does not ask for safetensors again


def test_corrupted_weights_served_again_are_refused(server, tmp_path, capsys):
    models = ["--models", "bert-base-uncased"]
    assert run(server, tmp_path, "weights", extra=models) == 0
    weights = tmp_path / "weights" / "bert-base-uncased" / "model.safetensors"
    weights.unlink()
    corrupt = bytearray(SAFETENSORS)
    corrupt[-1] ^= 0xFF
    server.state.files[hub("bert-base-uncased", "model.safetensors")] = bytes(corrupt)
    assert run(server, tmp_path, "weights", extra=models) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.safetensors" in err and "sha256 mismatch" in err
    assert not weights.exists()


def test_an_error_page_saved_as_config_is_refused_and_forgotten(server, tmp_path, capsys):
    models = ["--models", "bert-base-uncased"]
    page = hub("bert-base-uncased", "config.json")
    server.state.files[page] = b"<html>rate limited</html>"
    assert run(server, tmp_path, "weights", extra=models) == 1
    err = capsys.readouterr().err
    assert "config.json: not a JSON model configuration" in err
    folder = tmp_path / "weights" / "bert-base-uncased"
    assert "config.json" not in read_manifest(folder / "sha256.json")
    server.state.files[page] = FILES[page]
    assert run(server, tmp_path, "weights", extra=models) == 0
    assert (folder / "config.json").read_text() == TINY_CONFIG


# --- everything ------------------------------------------------------------------------------


def test_rerun_of_everything_makes_no_requests(server, tmp_path):
    models = ["--models", "bert-base-uncased", "bert-large-uncased"]
    assert run(server, tmp_path, extra=models) == 0
    assert server.state.requests
    server.state.requests.clear()
    assert run(server, tmp_path, extra=models) == 0
    assert server.state.requests == []


def test_shell_script_passes_data_dir_what_and_flags(server, tmp_path):
    mirror = f"weights={server.url}/hub"
    script = ROOT / "bert" / "scripts" / "download.sh"
    flags = ["--models", "bert-base-uncased", "--base-url-override", mirror, "--retries", "0"]
    proc = subprocess.run(
        ["bash", script, tmp_path / "data", "weights", "--", *flags],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "weights" / "bert-base-uncased" / "config.json").is_file()
