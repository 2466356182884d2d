"""The BioBERT recipe around the entry points: the scripts under bert/scripts/biobert take
NVIDIA's positional arguments and launch our flags; bert.biobert_download fetches
BLUE's archive once, records and checks its digest; the generated data and the demo
part show fine-tuning learning.

The scripts run with stand-ins for python, srun and scontrol on PATH that log each
command line instead of running it; every logged command line is also parsed by the
entry point's own argument parser, so a misspelt flag or a bad value fails here."""

import hashlib
import io
import json
import os
import re
import subprocess
import zipfile

import pytest

from bert import biobert_download as bd
from bert import ner, run_ner, run_pretraining, run_re, toy_biomed
from common.download import read_manifest
from scripts import demo
from tests.file_server import serve_files
from tests.helpers import ROOT, clean_env

SCRIPTS = ROOT / "bert" / "scripts" / "biobert"
PARSERS = {
    "bert.run_ner": run_ner.parse_args,
    "bert.run_re": run_re.parse_args,
    "bert.run_pretraining": run_pretraining.parse_args,
}
SHARDS = "masked_lm_prob_0.15_random_seed_12345_dupe_factor_5"

# --------------------------------------------------------------------------- dry runs

LOGGER = """#!/bin/sh
name=$(basename "$0")
if [ "$name" = scontrol ]; then echo node1; exit 0; fi
printf '%s' "$name" >> "$STUB_LOG"
for arg in "$@"; do printf '\\t%s' "$arg" >> "$STUB_LOG"; done
printf '\\n' >> "$STUB_LOG"
"""


@pytest.fixture
def stubs(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("python", "srun", "scontrol"):
        (folder / name).write_text(LOGGER)
        (folder / name).chmod(0o755)
    return folder


def script_run(stubs, tmp_path, script, *args, **env):
    """Run `script` with the stand-ins; (exit code, stderr, logged command lines)."""
    log = tmp_path / "commands.tsv"
    log.unlink(missing_ok=True)
    environment = clean_env(
        {
            "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(log),
            "RESULTS_DIR": str(tmp_path / "results"),
            "PUBMED_DIR": str(tmp_path / "pubmed"),  # no eval shards unless a test makes some
            **{k: str(v) for k, v in env.items()},
        }
    )
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script), *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, proc.stderr, calls


def as_flags(args):
    """{--flag: value, or True for a switch} of a flag list; each flag appears once."""
    flags, i = {}, 0
    while i < len(args):
        assert args[i].startswith("--") and args[i] not in flags, args
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        flags[args[i]] = args[i + 1] if takes_value else True
        i += 2 if takes_value else 1
    return flags


def launched(stubs, tmp_path, script, *args, **env):
    """(processes per node or None without torchrun, module, flags) of the script's one
    command; the module's own parser accepts the flags."""
    code, err, calls = script_run(stubs, tmp_path, script, *args, **env)
    assert code == 0 and len(calls) == 1, (err, calls)
    argv = calls[0]
    if argv[0] == "srun":  # scripts/slurm_run.sh: srun ... bash -c CMD WORKDIR MODULE ARGS
        argv = ["python", "-m", *argv[argv.index("-c") + 3 :]]
    assert argv[0] == "python" and argv[1] == "-m"
    processes = None
    if argv[2] == "torch.distributed.run":
        start = argv.index("-m", 3)
        launcher = argv[3:start]
        processes = int(launcher[launcher.index("--nproc_per_node") + 1])
        argv = ["python", *argv[start:]]
    module, flags = argv[2], argv[3:]
    PARSERS[module](flags)
    return processes, module, as_flags(flags)


def model_dir(path, vocab=True):
    path.mkdir(parents=True)
    if vocab:
        (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    return path


FINETUNING = {  # script: module, task folder, learning rate x 16 GPUs, length, eval batch, epochs
    "ner_bc5cdr-disease.sh": ("bert.run_ner", "BC5CDR/disease", "5e-05", "128", "8", "100.0"),
    "ner_bc5cdr-chem.sh": ("bert.run_ner", "BC5CDR/chem", "5e-05", "128", "8", "10.0"),
    "rel_chemprot.sh": ("bert.run_re", "chemprot", "2.4e-05", "512", "16", "3.0"),
}


@pytest.mark.parametrize("script", sorted(FINETUNING))
def test_fine_tuning_defaults_are_the_references(stubs, tmp_path, script):
    module, folder, rate, length, eval_batch, epochs = FINETUNING[script]
    processes, launched_module, flags = launched(stubs, tmp_path, script)
    assert (processes, launched_module) == (16, module)
    expected = {
        "--data_dir": f"data/biobert/{folder}",
        "--init_checkpoint": "results/biobert_pretraining/pretrained",
        "--train_batch_size": "8",
        "--learning_rate": rate,  # 3.125e-6 / 1.5e-6 per GPU
        "--do_lower_case": True,
        "--precision": "fp16",
        "--torch_compile": True,
        "--max_seq_length": length,
        "--bert_model": "base",
        "--eval_batch_size": eval_batch,
        "--num_train_epochs": epochs,
        "--do_train": True,
        "--do_eval": True,
        "--do_predict": True,
        "--resume": True,
        "--output_dir": str(tmp_path / "results"),
    }
    assert {k: flags.get(k) for k in expected} == expected


def test_fine_tuning_arguments_map_to_flags_in_the_references_order(stubs, tmp_path):
    checkpoint = model_dir(tmp_path / "biobert")
    # init_checkpoint train_batch_size learning_rate cased precision use_xla num_gpu
    # seq_length bert_model eval_batch_size epochs, then flags of our own
    processes, module, flags = launched(
        stubs, tmp_path, "ner_bc5cdr-chem.sh", checkpoint, 32, 1e-5, "true", "fp32", "false",
        2, 256, "large", 64, 5, "--seed", 7, BIOBERT_DATA=tmp_path / "blue",
    )  # fmt: skip
    assert (processes, module) == (2, "bert.run_ner")
    assert flags == {
        "--data_dir": str(tmp_path / "blue" / "BC5CDR" / "chem"),
        "--bert_model": "large",
        "--init_checkpoint": str(checkpoint),  # holds vocab.txt: no --vocab_file
        "--no-do_lower_case": True,
        "--do_train": True,
        "--do_eval": True,
        "--do_predict": True,
        "--resume": True,
        "--train_batch_size": "32",
        "--learning_rate": "2e-05",  # per GPU x 2
        "--precision": "fp32",
        "--max_seq_length": "256",
        "--num_train_epochs": "5",
        "--eval_batch_size": "64",
        "--output_dir": str(tmp_path / "results"),
        "--seed": "7",
    }


def test_a_checkpoint_without_vocabulary_takes_the_cased_google_one(stubs, tmp_path):
    checkpoint = model_dir(tmp_path / "weights_only", vocab=False)
    args = [checkpoint, 8, 1.5e-6, "true", "fp16", "true", 16]
    _, module, flags = launched(stubs, tmp_path, "rel_chemprot.sh", *args)
    assert module == "bert.run_re"
    assert flags["--vocab_file"] == "data/bert/weights/bert-base-cased/vocab.txt"
    _, _, flags = launched(
        stubs, tmp_path, "rel_chemprot.sh", *args, BERT_DIR=tmp_path / "google",
        DATASET_DIR=tmp_path / "my_chemprot",
    )  # fmt: skip
    assert flags["--vocab_file"] == str(tmp_path / "google" / "vocab.txt")
    assert flags["--data_dir"] == str(tmp_path / "my_chemprot")


def test_inference_scores_dev_and_test_in_one_process(stubs, tmp_path):
    checkpoint = model_dir(tmp_path / "fine_tuned")
    # task init_checkpoint bert_model cased precision use_xla batch_size
    processes, module, flags = launched(
        stubs, tmp_path, "run_biobert_finetuning_inference.sh", "rel_chemprot", checkpoint,
        "large", "true", "bf16", "false", 4,
    )  # fmt: skip
    assert (processes, module) == (None, "bert.run_re")
    assert flags == {
        "--data_dir": "data/biobert/chemprot",
        "--bert_model": "large",
        "--init_checkpoint": str(checkpoint),
        "--no-do_lower_case": True,
        "--do_eval": True,
        "--do_predict": True,
        "--eval_batch_size": "4",
        "--precision": "bf16",
        "--max_seq_length": "512",
        "--output_dir": str(tmp_path / "results"),
    }


def test_inference_defaults_are_the_references(stubs, tmp_path):
    processes, module, flags = launched(stubs, tmp_path, "run_biobert_finetuning_inference.sh")
    assert (processes, module) == (None, "bert.run_ner")
    assert flags["--data_dir"] == "data/biobert/BC5CDR/chem"
    assert flags["--init_checkpoint"] == "results/biobert_ner_bc5cdr-chem"
    assert (flags["--eval_batch_size"], flags["--max_seq_length"]) == ("16", "128")
    assert (flags["--precision"], flags["--torch_compile"], flags["--do_lower_case"]) == (
        "fp16", True, True,
    )  # fmt: skip
    assert "--do_train" not in flags


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("run_biobert_finetuning_inference.sh", ["ncbi_disease"],
         "task must be ner_bc5cdr-chem, ner_bc5cdr-disease or rel_chemprot, not 'ncbi_disease'"),
        ("ner_bc5cdr-disease.sh", ["x", 8, 3e-6, "yes"], "cased must be true or false, not 'yes'"),
        ("rel_chemprot.sh", ["x", 8, 3e-6, "false", "fp8"],
         "precision must be fp16, fp32, tf32, bf16 or amp, not 'fp8'"),
        ("run_pretraining_pubmed_base_phase_1.sh", [128, 1e-4, "false", "fp16", "maybe"],
         "use_xla must be true or false, not 'maybe'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_before_launching(stubs, tmp_path, script, args, message):
    code, err, calls = script_run(stubs, tmp_path, script, *args)
    assert (code, err.strip(), calls) == (2, message, [])


def test_phase_1_defaults_are_the_references(stubs, tmp_path):
    processes, module, flags = launched(stubs, tmp_path, "run_pretraining_pubmed_base_phase_1.sh")
    assert (processes, module) == (16, "bert.run_pretraining")
    shards = tmp_path / "pubmed" / f"hdf5_lower_case_1_seq_len_128_max_pred_20_{SHARDS}"
    assert flags == {
        "--optimizer": "lamb",
        "--precision": "fp16",
        "--num_steps_per_checkpoint": "5000",
        "--eval_batch_size": "80",
        "--output_dir": str(tmp_path / "results"),
        "--seed": "12439",
        "--resume_from_checkpoint": True,
        "--compile": True,
        "--bert_model": "base",
        "--vocab_file": "data/bert/weights/bert-base-uncased/vocab.txt",
        "--input_dir": str(shards / "training"),
        "--max_seq_length": "128",
        "--max_predictions_per_seq": "20",
        "--train_batch_size": "128",
        "--gradient_accumulation_steps": "32",
        "--learning_rate": "0.00154",  # 9.625e-5 x 16
        "--warmup_steps": "1953",
        "--max_steps": "19531",
        "--init_checkpoint": "data/bert/weights/bert-base-uncased",  # Google's BERT-base
    }


def test_phase_1_arguments_map_to_flags_in_the_references_order(stubs, tmp_path):
    shards = tmp_path / "pubmed" / f"hdf5_lower_case_0_seq_len_128_max_pred_20_{SHARDS}"
    (shards / "eval").mkdir(parents=True)
    # train_batch_size learning_rate cased precision use_xla num_gpus warmup_steps
    # train_steps num_accumulation_steps save_checkpoint_steps eval_batch_size
    processes, _, flags = launched(
        stubs, tmp_path, "run_pretraining_pubmed_base_phase_1.sh", 64, 1e-4, "true", "bf16",
        "false", 8, 100, 1000, 4, 50, 16, INIT_CHECKPOINT="",
    )  # fmt: skip
    assert processes == 8
    expected = {
        "--train_batch_size": "64",
        "--learning_rate": "0.0008",
        "--precision": "bf16",
        "--compile": None,
        "--warmup_steps": "100",
        "--max_steps": "1000",
        "--gradient_accumulation_steps": "4",
        "--num_steps_per_checkpoint": "50",
        "--eval_batch_size": "16",
        "--input_dir": str(shards / "training"),
        "--eval_dir": str(shards / "eval"),
        "--vocab_file": "data/bert/weights/bert-base-cased/vocab.txt",
        "--init_checkpoint": None,  # INIT_CHECKPOINT empty: from scratch
    }
    assert {k: flags.get(k) for k in expected} == expected


def test_phase_2_continues_from_phase_1_or_the_checkpoint_given(stubs, tmp_path):
    processes, _, flags = launched(stubs, tmp_path, "run_pretraining_pubmed_base_phase_2.sh")
    shards = tmp_path / "pubmed" / f"hdf5_lower_case_1_seq_len_512_max_pred_80_{SHARDS}"
    expected = {
        "--phase2": True,
        "--init_checkpoint": None,  # phase 1's last checkpoint in RESULTS_DIR
        "--input_dir": str(shards / "training"),
        "--max_seq_length": "512",
        "--max_predictions_per_seq": "80",
        "--train_batch_size": "16",
        "--gradient_accumulation_steps": "128",
        "--learning_rate": "0.00464",  # 2.9e-4 x 16
        "--warmup_steps": "434",
        "--max_steps": "4340",
        "--num_steps_per_checkpoint": "5000",
        "--eval_batch_size": "26",
        "--output_dir": str(tmp_path / "results"),
    }
    assert processes == 16 and {k: flags.get(k) for k in expected} == expected
    checkpoint = tmp_path / "phase1" / "ckpt_step00019531.pt"
    _, _, flags = launched(stubs, tmp_path, "run_pretraining_pubmed_base_phase_2.sh", checkpoint)
    assert flags["--init_checkpoint"] == str(checkpoint)


def test_run_sub_phase_1_takes_the_references_variables(stubs, tmp_path):
    _, module, flags = launched(stubs, tmp_path, "run.sub", SLURM_SUBMIT_DIR=ROOT, SLURM_NTASKS=64)
    assert module == "bert.run_pretraining"
    expected = {
        "--train_batch_size": "128",
        "--learning_rate": "0.002048",  # 3.2e-5 per GPU x 64 tasks
        "--gradient_accumulation_steps": "128",
        "--max_steps": "19531",
        "--warmup_steps": "1953",
        "--max_seq_length": "128",
        "--eval_batch_size": "8",
        "--num_steps_per_checkpoint": "5000",
        "--precision": "fp16",
        "--compile": True,
        "--bert_model": "base",
        "--phase2": None,
        "--init_checkpoint": None,  # random weights, as the reference's run_biobert.sub
        "--resume_from_checkpoint": True,
    }
    assert {k: flags.get(k) for k in expected} == expected


def test_run_sub_phase_2_with_overrides(stubs, tmp_path):
    _, _, flags = launched(
        stubs, tmp_path, "run.sub", SLURM_SUBMIT_DIR=ROOT, SLURM_NNODES=2, PHASE=2,
        BATCHSIZE=8, LEARNING_RATE=1e-5, NUM_ACCUMULATION_STEPS=64, DO_LOWER_CASE=0,
        DO_BERT_BASE=0, EXTRA_ARGS="--log_freq 10",
    )  # fmt: skip
    shards = tmp_path / "pubmed" / f"hdf5_lower_case_0_seq_len_512_max_pred_80_{SHARDS}"
    expected = {
        "--phase2": True,
        "--train_batch_size": "8",
        "--learning_rate": "0.00032",  # 1e-5 x 2 nodes x 16 tasks
        "--gradient_accumulation_steps": "64",
        "--max_steps": "4340",
        "--input_dir": str(shards / "training"),
        "--max_predictions_per_seq": "80",
        "--bert_model": "large",
        "--vocab_file": "data/bert/weights/bert-large-cased/vocab.txt",
        "--log_freq": "10",
    }
    assert {k: flags.get(k) for k in expected} == expected


# ---------------------------------------------------------------------------- download


def blue_archive(chemprot_label="CPR:4"):
    """A made-up bert_data.zip in BLUE's layout (not BLUE's data)."""
    ner_lines = "Cisplatin\tB\n-\tO\ninduced\tO\nnephrotoxicity\tB\n\n"
    chemprot = f"index\tsentence\tlabel\n1.T1.T2\t@CHEMICAL$ inhibits @GENE$ .\t{chemprot_label}\n"
    members = {
        **{f"bert_data/BC5CDR/{k}/{s}.tsv": ner_lines for k in ("chem", "disease")
           for s in ("train", "devel", "test")},
        **{f"bert_data/ChemProt/{s}.tsv": chemprot for s in ("train", "dev", "test")},
        "bert_data/hoc/train.tsv": "not wanted\n",
    }  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def blue():
    with serve_files({"/blue/bert_data.zip": blue_archive()}) as server:
        yield server


def fetch(server, data_dir):
    argv = ["--data-dir", str(data_dir), "--base-url", f"{server.url}/blue", "--retries", "0"]
    return bd.main(argv)


def test_task_files_land_in_place_and_the_digest_is_recorded(blue, tmp_path):
    assert fetch(blue, tmp_path) == 0
    assert blue.requests == ["/blue/bert_data.zip"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.tsv")) == [
        f"{folder}/{name}" for folder in ("BC5CDR/chem", "BC5CDR/disease", "chemprot")
        for name in (("dev.tsv", "test.tsv", "train.tsv") if folder == "chemprot"
                     else ("devel.tsv", "test.tsv", "train.tsv"))
    ]  # fmt: skip
    sentences = ner.read_conll(tmp_path / "BC5CDR" / "disease" / "devel.tsv").sentences
    assert sentences[0].tags == ["B", "O", "O", "B"]
    digest = hashlib.sha256(blue.files["/blue/bert_data.zip"]).hexdigest()
    assert read_manifest(tmp_path / "downloads" / "sha256.json") == {"bert_data.zip": digest}


def test_a_second_run_downloads_nothing_and_restores_from_the_archive(blue, tmp_path):
    assert fetch(blue, tmp_path) == 0
    blue.requests.clear()
    assert fetch(blue, tmp_path) == 0
    (tmp_path / "chemprot" / "dev.tsv").unlink()
    assert fetch(blue, tmp_path) == 0
    assert blue.requests == []  # the archive on disk was verified, not fetched again
    assert (tmp_path / "chemprot" / "dev.tsv").read_text().endswith("\tCPR:4\n")


def test_an_archive_changed_on_the_server_is_refused(blue, tmp_path, capsys):
    assert fetch(blue, tmp_path) == 0
    (tmp_path / "downloads" / "bert_data.zip").unlink()
    (tmp_path / "chemprot" / "dev.tsv").unlink()
    blue.files["/blue/bert_data.zip"] = blue_archive(chemprot_label="CPR:9")
    assert fetch(blue, tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sha256 mismatch" in err, err
    assert not (tmp_path / "downloads" / "bert_data.zip").exists()
    assert not (tmp_path / "chemprot" / "dev.tsv").exists()


def test_a_wrong_recorded_digest_is_refused(blue, tmp_path, capsys):
    manifest = tmp_path / "downloads" / "sha256.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"bert_data.zip": "0" * 64}))
    assert fetch(blue, tmp_path) == 1
    assert "sha256 mismatch: expected 000" in capsys.readouterr().err
    assert not (tmp_path / "BC5CDR").exists()


def test_an_error_page_is_refused_and_not_recorded(blue, tmp_path, capsys):
    blue.files["/blue/bert_data.zip"] = b"<html>rate limited</html>"
    assert fetch(blue, tmp_path) == 1
    assert "bert_data.zip: not a zip archive" in capsys.readouterr().err
    assert read_manifest(tmp_path / "downloads" / "sha256.json") == {}
    blue.files["/blue/bert_data.zip"] = blue_archive()
    assert fetch(blue, tmp_path) == 0


def test_an_archive_without_a_task_file_names_it(tmp_path):
    archive = tmp_path / "bert_data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bert_data/BC5CDR/chem/train.tsv", "a\tO\n")
    with pytest.raises(bd.PrepareError, match=r"no member ending in BC5CDR/chem/devel\.tsv"):
        bd.copy_out(archive, bd.task_files(tmp_path / "out"))


# ----------------------------------------------------------------- generated data, demo


def test_generated_data_is_deterministic_and_says_it_is_not_bc5cdr(tmp_path):
    toy_biomed.main(["--out_dir", str(tmp_path / "a"), "--train", "40", "--dev", "20",
                     "--test", "20"])  # fmt: skip
    toy_biomed.main(["--out_dir", str(tmp_path / "b"), "--train", "40", "--dev", "20",
                     "--test", "20"])  # fmt: skip
    for name in ("train.tsv", "devel.tsv", "test.tsv", "vocab.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "NOT BC5CDR" in (tmp_path / "a" / "README").read_text()
    train = ner.read_conll(tmp_path / "a" / "train.tsv")
    assert len(train.sentences) == 40
    assert ner.label_list(train.sentences) == ["O", "B-Chemical", "B-Disease", "I-Chemical",
                                               "I-Disease"]  # fmt: skip


def test_dev_and_test_hold_names_training_never_shows():
    def names(sentences):
        return {w for s in sentences for w, t in s if t.startswith("B-")}

    train, dev = names(toy_biomed.generate(2000, 0)), names(toy_biomed.generate(2000, 1, True))
    assert "fluazole" in dev - train  # flu (4) + azole (0): a held-out pair
    assert len(dev - train) > 0.15 * len(dev)


def test_chance_f1_is_low_and_perfect_tags_score_one():
    tags = [[t for _, t in s] for s in toy_biomed.generate(300, 5, True)]
    assert toy_biomed.chance_f1(tags) < 0.15
    assert ner.entity_scores(tags, tags)["f1"] == 1.0


@pytest.mark.slow
def test_demo_part_learns_well_above_chance(tmp_path, capsys):
    """About 6 s: generation, then 111 steps of run_ner.py in a subprocess."""
    assert demo.main(["--only", "biobert", "--out-dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    f1, chance = map(float, re.search(r"dev entity F1 (\S+) \(chance (\S+):", line).groups())
    assert chance < 0.15 and f1 > 0.7, line


@pytest.mark.slow
def test_ner_script_trains_and_the_inference_script_scores_for_real(tmp_path):
    """The scripts as a user runs them (real python, torchrun with one process, CPU):
    the fine-tuned folder of ner_bc5cdr-disease.sh is what the inference script reads."""
    data = tmp_path / "data"
    toy_biomed.write_toy_biomed(data, train=300, dev=60, test=60)
    env = clean_env({"DATASET_DIR": str(data), "OMP_NUM_THREADS": "1"})

    def bash(script, *args, results):
        proc = subprocess.run(
            ["bash", str(SCRIPTS / script), *map(str, args)],
            env={**env, "RESULTS_DIR": str(results)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    train, infer = tmp_path / "train", tmp_path / "infer"
    out = bash("ner_bc5cdr-disease.sh", data / "tiny_bert", 16, 3e-3, "false", "fp32", "false",
               1, 64, "base", 32, 3, "--doc_stride", 32, results=train)  # fmt: skip
    assert "dev: precision" in out and (train / "test_predictions.txt").is_file()
    bash("run_biobert_finetuning_inference.sh", "ner_bc5cdr-disease", train, "base", "false",
         "fp32", "false", 32, "--doc_stride", 32, results=infer)  # fmt: skip
    trained = json.loads((train / "test_results.json").read_text())
    scored = json.loads((infer / "test_results.json").read_text())
    assert scored["f1"] == pytest.approx(trained["f1"]) and scored["f1"] > 0.5
