"""Every BERT entry point refuses a bad flag value or combination while parsing, before any
data is read or model built: exit status 2 and one line on stderr that names the flag.
Parse-only: no data, no model."""

import pytest

from bert import (
    benchmark,
    download,
    pretraining_data,
    run_glue,
    run_pretraining,
    run_squad,
    squad_eval,
    toy_squad,
)

SQUAD = ["--do_train", "--train_file", "t.json", "--setup_file", ""]
GLUE = ["--task_name", "SST-2", "--setup_file", ""]
PRETRAIN = ["--input_dir", "shards", "--setup_file", ""]
PARSERS = {
    "run_squad": run_squad.parse_args,
    "run_glue": run_glue.parse_args,
    "run_pretraining": run_pretraining.parse_args,
    "benchmark": benchmark.parse_args,
    "pretraining_data": pretraining_data.parse_args,
    "toy_squad": toy_squad.parse_args,
    "download": download.parse_args,
    "squad_eval": squad_eval.parse_args,
}

BAD = [
    # run_squad: -2 looped forever, 0 divided by zero, the predict batch failed after training
    ("run_squad", [*SQUAD, "--train_batch_size", "-2"], "argument --train_batch_size"),
    ("run_squad", [*SQUAD, "--train_batch_size", "0"], "argument --train_batch_size"),
    ("run_squad", [*SQUAD, "--predict_batch_size", "0"], "argument --predict_batch_size"),
    ("run_squad", [*SQUAD, "--max_seq_length", "64"], "--max_seq_length 64 leaves no room"),
    ("run_squad", [*SQUAD, "--max_seq_length", "0"], "argument --max_seq_length"),
    ("run_squad", [*SQUAD, "--max_query_length", "0"], "argument --max_query_length"),
    ("run_squad", [*SQUAD, "--doc_stride", "0"], "argument --doc_stride"),
    ("run_squad", [*SQUAD, "--n_best_size", "0"], "argument --n_best_size"),
    ("run_squad", [*SQUAD, "--max_answer_length", "-1"], "argument --max_answer_length"),
    ("run_squad", [*SQUAD, "--null_score_diff_threshold", "inf"], "--null_score_diff_threshold"),
    ("run_squad", [*SQUAD, "--gradient_accumulation_steps", "0"],
     "argument --gradient_accumulation_steps"),
    ("run_squad", [*SQUAD, "--train_batch_size", "8", "--gradient_accumulation_steps", "3"],
     "--train_batch_size 8 must be a multiple of --gradient_accumulation_steps 3"),
    ("run_squad", [*SQUAD, "--learning_rate", "0"], "argument --learning_rate"),
    ("run_squad", [*SQUAD, "--learning_rate", "-1"], "argument --learning_rate"),
    ("run_squad", [*SQUAD, "--learning_rate", "nan"], "argument --learning_rate"),
    ("run_squad", [*SQUAD, "--num_train_epochs", "0"], "argument --num_train_epochs"),
    ("run_squad", [*SQUAD, "--max_steps", "0"], "argument --max_steps"),
    ("run_squad", [*SQUAD, "--warmup_proportion", "1.5"], "argument --warmup_proportion"),
    ("run_squad", [*SQUAD, "--weight_decay", "-0.1"], "argument --weight_decay"),
    ("run_squad", [*SQUAD, "--adam_epsilon", "0"], "argument --adam_epsilon"),
    ("run_squad", [*SQUAD, "--max_grad_norm", "-1"], "argument --max_grad_norm"),
    ("run_squad", [*SQUAD, "--seed", "-1"], "argument --seed"),
    ("run_squad", [*SQUAD, "--log_freq", "0"], "argument --log_freq"),
    ("run_squad", [*SQUAD, "--save_checkpoints_steps", "-1"], "argument --save_checkpoints_steps"),
    ("run_squad", [*SQUAD, "--keep_checkpoints", "0"], "argument --keep_checkpoints"),
    ("run_squad", [*SQUAD, "--threads", "0"], "argument --threads"),
    ("run_squad", [*SQUAD, "--resume", "--overwrite"], "--resume conflicts with --overwrite"),
    ("run_squad", [*SQUAD, "--fp16", "--precision", "bf16"], "--precision bf16 conflicts with --fp16"),
    ("run_squad", ["--setup_file", ""], "nothing to do: give --do_train"),
    ("run_squad", ["--do_train", "--setup_file", ""], "--do_train needs --train_file"),
    ("run_squad", ["--do_eval", "--setup_file", ""], "--do_eval needs --predict_file"),
    ("run_squad", ["--do_predict", "--setup_file", ""], "--do_predict needs --predict_file"),
    # run_glue
    ("run_glue", [*GLUE, "--train_batch_size", "0"], "argument --train_batch_size"),
    ("run_glue", [*GLUE, "--eval_batch_size", "0"], "argument --eval_batch_size"),
    ("run_glue", [*GLUE, "--max_seq_length", "0"], "argument --max_seq_length"),
    ("run_glue", [*GLUE, "--learning_rate", "0"], "argument --learning_rate"),
    ("run_glue", [*GLUE, "--resume", "--overwrite"], "--resume conflicts with --overwrite"),
    ("run_glue", ["--task_name", "QQP"], "argument --task_name: unknown GLUE task 'QQP'"),
    # run_pretraining
    ("run_pretraining", [*PRETRAIN, "--train_batch_size", "0"], "argument --train_batch_size"),
    ("run_pretraining", [*PRETRAIN, "--gradient_accumulation_steps", "0"],
     "argument --gradient_accumulation_steps"),
    ("run_pretraining", [*PRETRAIN, "--max_seq_length", "0"], "argument --max_seq_length"),
    ("run_pretraining", [*PRETRAIN, "--max_predictions_per_seq", "0"],
     "argument --max_predictions_per_seq"),
    ("run_pretraining", [*PRETRAIN, "--max_steps", "0"], "argument --max_steps"),
    ("run_pretraining", [*PRETRAIN, "--steps_this_run", "0"], "argument --steps_this_run"),
    ("run_pretraining", [*PRETRAIN, "--decay_steps", "0"], "argument --decay_steps"),
    ("run_pretraining", [*PRETRAIN, "--warmup_steps", "-1"], "argument --warmup_steps"),
    ("run_pretraining", [*PRETRAIN, "--learning_rate", "-1"], "argument --learning_rate"),
    ("run_pretraining", [*PRETRAIN, "--init_loss_scale", "0"], "argument --init_loss_scale"),
    ("run_pretraining", [*PRETRAIN, "--log_freq", "0"], "argument --log_freq"),
    ("run_pretraining", [*PRETRAIN, "--eval_batch_size", "0"], "argument --eval_batch_size"),
    ("run_pretraining", [*PRETRAIN, "--max_eval_steps", "0"], "argument --max_eval_steps"),
    ("run_pretraining", [*PRETRAIN, "--keep_checkpoints", "0"], "argument --keep_checkpoints"),
    ("run_pretraining", [*PRETRAIN, "--threads", "-1"], "argument --threads"),
    ("run_pretraining", [*PRETRAIN, "--resume_from_checkpoint", "--overwrite"],
     "--resume_from_checkpoint conflicts with --overwrite"),
    ("run_pretraining", ["--setup_file", ""], "--input_dir is required"),
    # benchmark
    ("benchmark", ["--batch-size", "0"], "argument --batch-size"),
    ("benchmark", ["--seq-len", "128,0"], "argument --seq-len"),
    ("benchmark", ["--steps", "0"], "argument --steps"),
    ("benchmark", ["--warmup", "-1"], "argument --warmup"),
    ("benchmark", ["--num-labels", "0"], "argument --num-labels"),
    ("benchmark", ["--peak-size", "0"], "argument --peak-size"),
    ("benchmark", ["--threads", "0"], "argument --threads"),
    ("benchmark", ["--seq-len", "1024"], "--seq-len 1024 exceeds"),
    # generators: refuse rather than write empty files
    ("pretraining_data", ["out", "--num_shards", "0"], "argument --num_shards"),
    ("pretraining_data", ["out", "--samples_per_shard", "-1"], "argument --samples_per_shard"),
    ("pretraining_data", ["out", "--max_predictions_per_seq", "0"],
     "argument --max_predictions_per_seq"),
    ("pretraining_data", ["out", "--max_seq_length", "4"], "--max_seq_length 4 is too short"),
    ("pretraining_data", ["out", "--vocab_size", "5"], "--vocab_size 5 must be between"),
    ("pretraining_data", ["out", "--num_patterns", "1"], "--num_patterns 1 must be at least 2"),
    ("toy_squad", ["--train", "0"], "argument --train"),
    ("toy_squad", ["--dev", "-3"], "argument --dev"),
    ("toy_squad", ["--vocab_size", "0"], "argument --vocab_size"),
    ("toy_squad", ["--dropout", "1"], "argument --dropout"),
    ("toy_squad", ["--people_per_paragraph", "0"], "argument --people_per_paragraph"),
    ("download", ["--retries", "-1"], "argument --retries"),
    ("download", ["squad", "nope"], "unknown ['nope']"),
    ("squad_eval", ["gold.json", "pred.json", "--na-prob-thresh", "nan"],
     "argument --na-prob-thresh"),
    ("squad_eval", ["gold.json", "pred.json", "--version", "1.1", "--na-prob-file", "n.json"],
     "--version 1.1 conflicts with --na-prob-file"),
]  # fmt: skip


def refused(module: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        PARSERS[module](argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"python -m bert.{module}: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "module, argv, expected", BAD, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD]
)
def test_a_bad_flag_is_refused_in_one_line_naming_it(module, argv, expected, capsys):
    assert expected in refused(module, argv, capsys)


def test_the_window_must_hold_the_question_and_one_context_token(capsys):
    line = refused("run_squad", [*SQUAD, "--max_seq_length", "67"], capsys)
    assert "--max_query_length 64" in line and "--max_seq_length 68 or more" in line
    args = run_squad.parse_args([*SQUAD, "--max_seq_length", "68"])  # the smallest that fits
    assert (args.max_seq_length, args.max_query_length) == (68, 64)
    args = run_squad.parse_args([*SQUAD, "--max_seq_length", "64", "--max_query_length", "60"])
    assert args.max_seq_length == 64


def test_bad_values_in_a_named_setup_are_refused_naming_the_flag_and_the_setup(tmp_path, capsys):
    setups = tmp_path / "setups.yaml"
    setups.write_text(
        "phase1: {train_batch_size: 0}\nphase2: {}\n"
        "squad: {learning_rate: -1.0}\n"
        "configs:\n  default: {}\n  huge: {phase1: {bert_model: huge}}\n"
    )
    line = refused("run_pretraining", [*PRETRAIN, "--setup_file", str(setups)], capsys)
    assert "argument --train_batch_size: must be a positive integer, got '0'" in line
    assert f"--setup default of {setups}" in line
    line = refused(
        "run_pretraining",
        [*PRETRAIN, "--setup_file", str(setups), "--setup", "huge", "--train_batch_size", "2"],
        capsys,
    )
    assert "argument --bert_model: 'huge'" in line and "--setup huge" in line
    line = refused("run_squad", [*SQUAD, "--setup_file", str(setups)], capsys)
    assert "argument --learning_rate: must be a number > 0, got '-1.0'" in line
    # a flag given on the command line overrides the set-up's bad value
    args = run_pretraining.parse_args(
        [*PRETRAIN, "--setup_file", str(setups), "--train_batch_size", "2"]
    )
    assert args.train_batch_size == 2


def test_small_valid_values_still_parse():
    args = run_squad.parse_args(
        [*SQUAD, "--train_batch_size", "1", "--predict_batch_size", "1", "--learning_rate",
         "1e-9", "--max_steps", "1", "--warmup_proportion", "0", "--max_grad_norm", "0",
         "--save_checkpoints_steps", "0", "--null_score_diff_threshold", "-2.5", "--seed", "0"]
    )  # fmt: skip
    assert (args.train_batch_size, args.max_steps, args.null_score_diff_threshold) == (1, 1, -2.5)
    assert run_squad.parse_args(SQUAD).max_steps is None  # no limit: every epoch
    assert run_glue.parse_args([*GLUE, "--train_batch_size", "1"]).train_batch_size == 1
    args = run_pretraining.parse_args(
        [*PRETRAIN, "--train_batch_size", "1", "--warmup_steps", "0", "--max_steps", "1"]
    )
    assert (args.train_batch_size, args.warmup_steps, args.max_steps) == (1, 0, 1)
    assert benchmark.parse_args(["--batch-size", "1", "--warmup", "0"]).warmup == 0
    assert pretraining_data.parse_args(["o", "--num_shards", "1", "--vocab_size", "6"]).num_shards
    assert toy_squad.parse_args(["--train", "1", "--dev", "1", "--dropout", "0"]).train == 1
    assert download.parse_args(["squad", "--retries", "0"]).retries == 0
    assert squad_eval.parse_args(["g", "p", "-t", "-1"]).na_prob_thresh == -1.0


def test_the_defaults_are_unchanged():
    args = run_squad.parse_args([*SQUAD])
    assert (args.train_batch_size, args.learning_rate, args.predict_batch_size) == (32, 5e-5, 8)
    assert (args.max_seq_length, args.doc_stride, args.max_query_length) == (384, 128, 64)
    assert (args.gradient_accumulation_steps, args.warmup_proportion) == (1, 0.1)
    args = run_squad.parse_args(SQUAD[:3])  # with the default set-up file
    assert (args.num_train_epochs, args.learning_rate, args.train_batch_size) == (2.0, 4e-5, 32)
    args = run_pretraining.parse_args(PRETRAIN[:2])
    assert (args.train_batch_size, args.gradient_accumulation_steps, args.max_steps) == (
        64,
        128,
        7038,
    )


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_help_shows_how_to_run_the_module(module, capsys):
    with pytest.raises(SystemExit) as exc:
        PARSERS[module](["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m bert.{module} ")
    assert "(default: " in out


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_every_option_says_what_it_does(module, monkeypatch):
    from common import cli

    seen = []
    monkeypatch.setattr(cli.ArgumentParser, "print_help", lambda self, file=None: seen.append(self))
    with pytest.raises(SystemExit):
        PARSERS[module](["--help"])
    (parser,) = seen
    for action in parser._actions:
        assert action.help, action.option_strings or action.dest
        assert "(default:" not in action.help, action.help
