"""Runs that never mix, never overwrite each other and never give a silently wrong result:
a folder holding a run is refused unless resumed or started over, and a vocabulary other
than the model's own is refused."""

import pytest
import torch

from bert import run_glue
from bert.model import BertForPreTraining
from bert.tiny import tiny_config
from common import cli
from common.checkpoint import Checkpointer, CheckpointError, load_model_weights, read_checkpoint
from gnmt import checkpoints as gnmt_checkpoints
from gnmt import translate
from gnmt.model import GNMT, config_dict
from gnmt.tokenizer import Tokenizer
from tests.bert_finetune_fixtures import glue_flags, separable_task
from transformer_xl import checkpoints as txl_checkpoints


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return separable_task(tmp_path_factory.mktemp("sst2"), train=64, dev=16, test=8)


def test_fine_tuning_refuses_a_vocabulary_other_than_the_models_own(task, tmp_path, capsys):
    words = (task / "vocab.txt").read_text().splitlines()
    words[10], words[11] = words[11], words[10]  # same size, two words renumbered
    shuffled = tmp_path / "vocab.txt"
    shuffled.write_text("\n".join(words) + "\n")
    args = glue_flags(task, tmp_path / "out", "--do_eval", "--vocab_file", str(shuffled))
    assert run_glue.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --vocab_file ") and str(shuffled) in err
    assert "line 11 differs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "dllogger.json").exists()  # refused before any work
    same = glue_flags(task, tmp_path / "same", "--do_eval", "--vocab_file", str(task / "vocab.txt"))
    assert run_glue.main(same) == 0  # the model's own vocabulary, named explicitly


def test_fine_tuning_into_a_folder_holding_a_run_is_refused(task, tmp_path, capsys):
    out = tmp_path / "run"
    first = glue_flags(task, out, "--do_train", "--num_train_epochs", "1")
    assert run_glue.main(first) == 0
    log = (out / "dllogger.json").read_text()
    assert run_glue.main(first) == 1
    err = capsys.readouterr().err
    assert f"error: {out} holds another run" in err and "--overwrite" in err
    assert (out / "dllogger.json").read_text() == log  # nothing of the first run touched
    assert run_glue.main([*first, "--overwrite"]) == 0
    fresh = (out / "dllogger.json").read_text()  # the old log went: one run's records
    assert fresh.count('"PARAMETER"') == log.count('"PARAMETER"')


def test_a_folder_given_for_a_checkpoint_file_names_the_checkpoints_in_it(tmp_path):
    Checkpointer(tmp_path, prefix="model", suffix=".pth", is_main=True).save(
        3, {"model": torch.nn.Linear(2, 2)}, is_best=True
    )
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path} is a folder, not a checkpoint file")
    assert "model_best.pth, model_last.pth, model_step00000003.pth" in message
    with pytest.raises(CheckpointError, match="is a folder.*model_best.pth"):
        gnmt_checkpoints.load_model(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"holds no \.pt/\.pth/\.bin file"):
        read_checkpoint(empty)


def test_another_models_checkpoint_says_which_model_it_is(tmp_path):
    gnmt = GNMT(40, hidden_size=8, num_layers=4)
    tokenizer = Tokenizer([f"w{i}" for i in range(36)], None, "en", "de")
    Checkpointer(tmp_path, prefix="model", suffix=".pth", is_main=True).save(
        1, {"tokenizer": tokenizer, "model": gnmt}, extra={"model_config": config_dict(gnmt)}
    )
    path = tmp_path / "model_last.pth"
    with pytest.raises(CheckpointError, match=r"is a GNMT checkpoint, not a BERT one"):
        BertForPreTraining.from_pretrained(path, config=tiny_config(vocab_size=40))
    with pytest.raises(CheckpointError, match=r"is a GNMT checkpoint, not a Transformer-XL one"):
        txl_checkpoints.load_model(path)
    # Loading into a model of another shape: one line, with counts and examples.
    with pytest.raises(CheckpointError) as err:
        load_model_weights(
            torch.nn.Linear(2, 2), gnmt.state_dict(), source=str(path),
            checkpoint=read_checkpoint(path),
        )  # fmt: skip
    message = str(err.value)
    assert "(it is a GNMT checkpoint)" in message and "\n" not in message
    assert "2 weights missing (bias, weight)" in message and "unexpected (" in message


def test_translate_checks_its_output_path_before_loading_the_model(tmp_path, capsys):
    source = tmp_path / "in.en"
    source.write_text("a house\n")
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    nowhere = tmp_path / "missing_model.pth"  # never reached: the output is checked first
    args = ["--model", str(nowhere), "--input", str(source), "--device", "cpu"]
    assert translate.main([*args, "--output", str(blocker / "out.de")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: --output {blocker / 'out.de'} cannot be written: {blocker} is not a folder"
    )
    assert translate.main([*args, "--output", str(tmp_path)]) == 1
    assert f"--output {tmp_path} is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in.en"]  # nothing left


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(capsys):
    def work():
        raise KeyboardInterrupt  # what the stop-signal handler raises on a second Ctrl-C

    assert cli.run_main(work) == 130
    assert capsys.readouterr().err == "interrupted: the last checkpoint saved is kept\n"
