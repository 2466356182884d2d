"""GLUE for BERT: the real TSV layouts, bad rows, features, metrics against hand-computed
values, and run_glue end to end on a generated separable task (not GLUE data)."""

import json

import numpy as np
import pytest
import yaml

from bert import glue, run_glue
from bert.tiny import build_vocab
from bert.tokenization import FullTokenizer
from common.config import REPOSITORY
from tests.bert_finetune_fixtures import glue_flags, separable_task, write_tsv

# ------------------------------------------------------------------------------ metrics

# TP = 3, TN = 2, FP = 1, FN = 1
PREDICTED = np.array([1, 1, 1, 0, 0, 1, 0])
LABELS = np.array([1, 1, 1, 0, 0, 0, 1])


def test_matthews_correlation_from_the_confusion_matrix():
    # (3*2 - 1*1) / sqrt(4 * 4 * 3 * 3)
    assert glue.matthews_corrcoef(PREDICTED, LABELS) == pytest.approx(5 / 12)
    assert glue.matthews_corrcoef(np.ones(4), np.array([1, 0, 1, 0])) == 0.0  # undefined
    assert glue.matthews_corrcoef(LABELS, LABELS) == pytest.approx(1.0)


def test_f1_and_accuracy():
    assert glue.f1_positive(PREDICTED, LABELS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert glue.accuracy(PREDICTED, LABELS) == pytest.approx(5 / 7)
    assert glue.f1_positive(np.zeros(3), np.ones(3)) == 0.0


def test_each_task_reports_its_glue_metrics():
    assert set(glue.task_metrics(glue.get_task("CoLA"), PREDICTED, LABELS)) == {"mcc"}
    assert set(glue.task_metrics(glue.get_task("mrpc"), PREDICTED, LABELS)) == {"accuracy", "f1"}
    assert set(glue.task_metrics(glue.get_task("SST-2"), PREDICTED, LABELS)) == {"accuracy"}
    with pytest.raises(glue.GlueError, match="unknown GLUE task 'QQP'"):
        glue.get_task("QQP")


# ------------------------------------------------------------------------------ reading


def test_cola_has_no_header_and_the_sentence_in_column_four(tmp_path):
    path = write_tsv(
        tmp_path / "train.tsv",
        [["gj04", "1", "", "The cat sat."], ["gj04", "0", "*", "Cat the sat."]],
    )
    data = glue.read_tsv(path, glue.get_task("CoLA"), "train")
    assert [(e.text_a, e.text_b, e.label, e.line) for e in data.examples] == [
        ("The cat sat.", None, 1, 1),
        ("Cat the sat.", None, 0, 2),
    ]
    test = write_tsv(tmp_path / "test.tsv", [["index", "sentence"], ["0", "A dog ran."]])
    (row,) = glue.read_tsv(test, glue.get_task("CoLA"), "test").examples
    assert (row.index, row.text_a, row.label) == ("0", "A dog ran.", None)


def test_mrpc_pairs_and_sst2_sentences(tmp_path):
    mrpc = write_tsv(
        tmp_path / "dev.tsv",
        [
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            ["1", "7", "8", "He ran.", "He did run."],
        ],
    )
    (row,) = glue.read_tsv(mrpc, glue.get_task("MRPC"), "dev").examples
    assert (row.text_a, row.text_b, row.label) == ("He ran.", "He did run.", 1)
    sst = write_tsv(tmp_path / "sst.tsv", [["sentence", "label"], ["a fine film ", "1"]])
    (row,) = glue.read_tsv(sst, glue.get_task("SST-2"), "train").examples
    assert (row.text_a, row.label) == ("a fine film ", 1)


def test_mnli_train_and_dev_differ_in_columns_and_keep_the_gold_label_last(tmp_path):
    header = ["index", "promptID", "pairID", "genre", "s1_bin", "s2_bin", "s1_parse", "s2_parse"]
    header += ["sentence1", "sentence2"]
    train = write_tsv(
        tmp_path / "train.tsv",
        [
            header + ["label1", "gold_label"],
            ["0", "1", "2", "g", "", "", "", "", "P.", "H.", "x", "neutral"],
        ],
    )
    dev = write_tsv(
        tmp_path / "dev_matched.tsv",
        [
            header + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
            ["0", "1", "2", "g", "", "", "", "", "P.", "H.", "a", "b", "c", "d", "e", "entailment"],
        ],
    )
    task = glue.get_task("MNLI")
    (row,) = glue.read_tsv(train, task, "train").examples
    assert (row.text_a, row.text_b, task.labels[row.label]) == ("P.", "H.", "neutral")
    (row,) = glue.read_tsv(dev, task, "dev").examples
    assert task.labels[row.label] == "entailment"


def test_wrong_rows_are_skipped_in_training_and_errors_elsewhere(tmp_path):
    rows = [
        ["sentence", "label"],
        ["good", "1"],
        ["no label here"],
        ["bad label", "7"],
        ["ok", "0"],
    ]
    path = write_tsv(tmp_path / "train.tsv", rows)
    task = glue.get_task("SST-2")
    data = glue.read_tsv(path, task, "train")
    assert [e.text_a for e in data.examples] == ["good", "ok"]
    assert data.skipped == [
        (3, "1 columns where 2 are expected"),
        (4, "label '7' is not one of 0, 1"),
    ]
    assert data.skipped_summary(path) == (
        f"skipped 2 rows of {path}: line 3 (1 columns where 2 are expected); "
        "line 4 (label '7' is not one of 0, 1)"
    )
    for split in ("dev", "test"):
        with pytest.raises(glue.GlueError, match=r"train\.tsv, line 3: 1 columns where 2"):
            glue.read_tsv(path, task, split)


def test_missing_empty_and_non_utf8_files_are_clear_errors(tmp_path):
    task = glue.get_task("SST-2")
    with pytest.raises(glue.GlueError, match="does not exist"):
        glue.read_tsv(tmp_path / "none.tsv", task, "train")
    (tmp_path / "empty.tsv").write_text("\n")
    with pytest.raises(glue.GlueError, match="empty.tsv is empty"):
        glue.read_tsv(tmp_path / "empty.tsv", task, "train")
    (tmp_path / "latin.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(glue.GlueError, match=r"latin\.tsv, line 2: not UTF-8"):
        glue.read_tsv(tmp_path / "latin.tsv", task, "train")


def test_features_truncate_the_longer_text_first(tmp_path):
    vocab = build_vocab(["a b c d e f g h"], tmp_path / "vocab.txt", vocab_size=40)
    tok = FullTokenizer(vocab)
    pair = glue.GlueExample(1, "a b c d e f", "g h", 1)
    single = glue.GlueExample(2, "a b c d e f g h", None, 0)
    t = glue.make_tensors([pair, single], tok, max_seq_length=8)
    ids = lambda s: tok.convert_tokens_to_ids(s.split())  # noqa: E731
    assert t["input_ids"][0].tolist() == ids("[CLS] a b c [SEP] g h [SEP]")
    assert t["token_type_ids"][0].tolist() == [0] * 5 + [1] * 3
    assert t["input_ids"][1].tolist() == ids("[CLS] a b c d e f [SEP]")
    assert t["attention_mask"].sum(1).tolist() == [8, 8] and t["labels"].tolist() == [1, 0]


# ---------------------------------------------------------------------------- run_glue


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return separable_task(tmp_path_factory.mktemp("zebra"))


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_glue.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--task_name", "--data_dir", "--do_predict", "--warmup_proportion", "--setup"):
        assert flag in text


def test_each_task_has_its_recipe_and_named_setups():
    mrpc = run_glue.parse_args(["--task_name", "MRPC", "--setup", "dgxa100_8gpu_fp16"])
    assert (mrpc.train_batch_size, mrpc.learning_rate, mrpc.math) == (16, 2.4e-5, "fp16")
    assert (mrpc.num_train_epochs, mrpc.max_seq_length, mrpc.data_dir) == (
        3.0,
        128,
        REPOSITORY / "data" / "download" / "MRPC",  # a set-up's paths are the repository's
    )
    cola = run_glue.parse_args(["--task_name", "cola", "--setup", "dgx1_1gpu_fp32"])
    assert (cola.train_batch_size, cola.learning_rate, cola.math) == (32, 2e-5, "fp32")
    names = yaml.safe_load(run_glue.DEFAULT_CONFIG.read_text())["configs"]
    for name in names:
        for task in ("CoLA", "SST-2", "MRPC", "MNLI"):
            run_glue.parse_args(["--task_name", task, "--setup", name])


@pytest.mark.slow
def test_tiny_bert_learns_a_separable_task_and_predicts_the_test_set(task, tmp_path, capsys):
    flags = glue_flags(task, tmp_path, "--do_train", "--do_eval", "--do_predict")
    assert run_glue.main([*flags, "--num_train_epochs", "4"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["task"] == "SST-2" and results["dev_accuracy"] > 0.9, out
    assert "dev_accuracy = " in out and "training sequences/s:" in out
    lines = (tmp_path / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 41
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(40)]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}


def copy_task(task, folder, **replace):
    """The task's files in `folder` (models stay in `task`), some replaced by `replace`
    (file name -> text)."""
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (folder / name).write_text(replace.get(name.replace(".tsv", ""), (task / name).read_text()))
    return folder


def test_bad_dev_row_stops_the_run_before_training(task, tmp_path, capsys):
    data = copy_task(task, tmp_path / "data", dev="sentence\tlabel\nfine\t1\nthree\tcolumns\t0\n")
    flags = glue_flags(data, tmp_path / "out", "--do_train", "--do_eval", model=task / "tiny_bert")
    assert run_glue.main(flags) == 1
    assert capsys.readouterr().err == (
        f"error: {data / 'dev.tsv'}, line 3: 3 columns where 2 are expected\n"
    )
    assert not (tmp_path / "out").exists()


def test_skipped_training_rows_are_reported_and_counted(task, tmp_path, capsys):
    rows = (task / "train.tsv").read_text().splitlines()
    rows.insert(5, "no tab on this line")
    data = copy_task(task, tmp_path / "data", train="\n".join(rows) + "\n")
    flags = glue_flags(
        data, tmp_path / "out", "--do_train", "--max_steps", "1", model=task / "tiny_bert"
    )
    assert run_glue.main(flags) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 rows of {data / 'train.tsv'}: line 6 (1 columns where 2 are expected)" in out
