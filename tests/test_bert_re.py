"""ChemProt relation extraction for BERT: BLUE's TSV layout and its errors, entity markers
as single tokens, the micro F1 over the CPR classes against hand-computed values, and
run_re end to end on a generated ChemProt-style task (not ChemProt data)."""

import json
import random
import re

import numpy as np
import pytest

from bert import chemprot, run_re
from bert.chemprot import LABELS
from bert.tiny import build_vocab, save_tiny_bert
from bert.tokenization import FullTokenizer
from tests.bert_finetune_fixtures import write_tsv

HEADER = ["index", "sentence", "label"]


def ids(*labels):
    return np.array([LABELS.index(label) for label in labels])


def vocab_with_unused(texts, path, unused=range(3)):
    """A WordPiece vocabulary of `texts` with [unusedN] tokens after [PAD], as BERT's."""
    build_vocab(texts, path, vocab_size=120)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1:1] = [f"[unused{n}]" for n in unused]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- metric


def test_micro_scores_count_cpr_classes_and_leave_false_out():
    gold = ids("CPR:3", "CPR:3", "CPR:4", "false", "false", "CPR:9", "CPR:5")
    pred = ids("CPR:3", "CPR:4", "CPR:4", "CPR:3", "false", "false", "false")
    # TP: rows 0, 2. FP: row 1 (CPR:4 for CPR:3), row 3 (CPR:3 for false).
    # FN: row 1, row 5 and row 6 (a positive predicted false). Row 4 counts nowhere.
    micro, per_class = chemprot.micro_scores(pred, gold)
    assert micro.precision == pytest.approx(2 / 4)
    assert micro.recall == pytest.approx(2 / 5)
    assert micro.f1 == pytest.approx(4 / 9)  # 2TP / (2TP + FP + FN)
    assert (micro.gold, micro.predicted) == (5, 4)
    assert list(per_class) == ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]
    cpr3, cpr4 = per_class["CPR:3"], per_class["CPR:4"]
    assert (cpr3.precision, cpr3.recall, cpr3.f1, cpr3.gold, cpr3.predicted) == (
        0.5,
        0.5,
        0.5,
        2,
        2,
    )
    assert (cpr4.precision, cpr4.recall, cpr4.gold, cpr4.predicted) == (0.5, 1.0, 1, 2)
    assert cpr4.f1 == pytest.approx(2 / 3)
    assert per_class["CPR:9"].f1 == 0.0 and per_class["CPR:9"].gold == 1
    assert per_class["CPR:6"] == chemprot.Score(0.0, 0.0, 0.0, 0, 0)


def test_all_false_predictions_score_zero_not_nan():
    gold = ids("CPR:3", "CPR:6", "false")
    micro, per_class = chemprot.micro_scores(ids("false", "false", "false"), gold)
    assert (micro.precision, micro.recall, micro.f1) == (0.0, 0.0, 0.0)
    assert all(not np.isnan(s.f1) for s in per_class.values())
    nothing, _ = chemprot.micro_scores(ids("false", "false"), ids("false", "false"))
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_perfect_predictions_score_one():
    gold = ids("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false")
    micro, per_class = chemprot.micro_scores(gold, gold)
    assert (micro.precision, micro.recall, micro.f1) == (1.0, 1.0, 1.0)
    assert all(s.f1 == 1.0 for s in per_class.values())


def test_scores_flatten_for_logs_and_print_as_a_table():
    micro, per_class = chemprot.micro_scores(ids("CPR:4", "false"), ids("CPR:4", "CPR:3"))
    flat = chemprot.flat_scores("dev", micro, per_class)
    assert flat["dev_f1"] == pytest.approx(2 / 3) and flat["dev_CPR:4_precision"] == 1.0
    assert len(flat) == 3 + 5 * 3
    table = chemprot.report("dev", micro, per_class).splitlines()
    assert (
        table[0] == "dev: micro-average over CPR:3, CPR:4, CPR:5, CPR:6, CPR:9 ('false' excluded)"
    )
    assert table[-1].split() == ["micro", "1.0000", "0.5000", "0.6667", "2", "1"]


# ------------------------------------------------------------------------------ reading


def test_blue_layout_gives_index_sentence_and_label(tmp_path):
    path = write_tsv(
        tmp_path / "train.tsv",
        [HEADER, ["1.T1.T2", "@CHEMICAL$ blocks @GENE$ .", "CPR:4"], ["1.T3.T2", "x", "false"]],
    )
    rows = chemprot.read_tsv(path, "train")
    assert [(e.line, e.index, e.sentence, LABELS[e.label]) for e in rows] == [
        (2, "1.T1.T2", "@CHEMICAL$ blocks @GENE$ .", "CPR:4"),
        (3, "1.T3.T2", "x", "false"),
    ]


def test_test_file_may_come_with_or_without_labels(tmp_path):
    bare = write_tsv(tmp_path / "bare.tsv", [["index", "sentence"], ["7", "@GENE$ and @CHEMICAL$"]])
    (row,) = chemprot.read_tsv(bare, "test")
    assert (row.index, row.sentence, row.label) == ("7", "@GENE$ and @CHEMICAL$", None)
    labelled = write_tsv(tmp_path / "gold.tsv", [HEADER, ["7", "s", "CPR:9"]])
    (row,) = chemprot.read_tsv(labelled, "test")
    assert LABELS[row.label] == "CPR:9"


@pytest.mark.parametrize(
    ("rows", "split", "message"),
    [
        ([HEADER, ["1", "s", "false"], ["2", "no label"]], "train", r"line 3: 2 columns where 3"),
        ([HEADER, ["1", "s", "CPR:7"]], "dev", r"line 2: label 'CPR:7' is not one of CPR:3, "),
        ([HEADER, ["1", "s", "False"]], "train", r"line 2: label 'False' is not one of"),
        ([["index", "sentence"], ["1", "s"]], "dev", r"line 1: the header has 2 columns where 3"),
        ([["1", "s", "CPR:3"], ["2", "t", "false"]], "train", r"line 1: a data row where the head"),
        ([HEADER], "dev", r"has a header but no rows"),
        ([HEADER, ["1", "s", "false", "extra"]], "test", r"line 2: 4 columns where 3 are"),
    ],
)
def test_malformed_files_are_errors_naming_file_and_line(tmp_path, rows, split, message):
    path = write_tsv(tmp_path / f"{split}.tsv", rows)
    with pytest.raises(chemprot.ChemProtError, match=rf"{re.escape(str(path))}.*{message}"):
        chemprot.read_tsv(path, split)


def test_missing_and_empty_files_are_errors(tmp_path):
    with pytest.raises(chemprot.ChemProtError, match="none.tsv does not exist"):
        chemprot.read_tsv(tmp_path / "none.tsv", "train")
    (tmp_path / "empty.tsv").write_text("\n\n")
    with pytest.raises(chemprot.ChemProtError, match="empty.tsv is empty"):
        chemprot.read_tsv(tmp_path / "empty.tsv", "dev")


# ---------------------------------------------------------------------------- markers


@pytest.fixture
def tokenizer(tmp_path):
    vocab = vocab_with_unused(["the chemical inhibits a gene - induced ( )"], tmp_path / "v.txt")
    return FullTokenizer(vocab)


def test_each_marker_is_one_token_of_the_first_unused_ids(tokenizer):
    markers = chemprot.marker_tokens(tokenizer)
    assert markers == {"@CHEMICAL$": "[unused0]", "@GENE$": "[unused1]", "@CHEM-GENE$": "[unused2]"}
    tokens = chemprot.tokenize("The @CHEMICAL$-induced (@GENE$) @CHEM-GENE$", tokenizer, markers)
    assert tokens == ["the", "[unused0]", "-", "induced", "(", "[unused1]", ")", "[unused2]"]
    # Without the markers WordPiece would cut each into pieces.
    assert len(tokenizer.tokenize("@CHEMICAL$")) == 3


def test_cased_vocabularies_start_at_unused1_and_count_numerically(tmp_path):
    vocab = vocab_with_unused(["a b"], tmp_path / "v.txt", unused=[1, 10, 2, 3])
    markers = chemprot.marker_tokens(FullTokenizer(vocab, do_lower_case=False))
    assert list(markers.values()) == ["[unused1]", "[unused2]", "[unused3]"]


def test_a_vocabulary_without_unused_tokens_is_refused(tmp_path):
    vocab = vocab_with_unused(["a b"], tmp_path / "v.txt", unused=[0, 1])
    with pytest.raises(chemprot.ChemProtError, match=r"v\.txt has 2 \[unusedN\] tokens where 3"):
        chemprot.marker_tokens(FullTokenizer(vocab))


def test_features_put_marker_ids_between_cls_and_sep_and_count_cut_markers(tokenizer):
    rows = [
        chemprot.Example(2, "0", "@CHEMICAL$ inhibits @GENE$", LABELS.index("CPR:4")),
        chemprot.Example(3, "1", "the the the the @GENE$", LABELS.index("false")),
    ]
    tensors, lost = chemprot.make_tensors(rows, tokenizer, max_seq_length=6)
    expected = ["[CLS]", "[unused0]", "inhibits", "[unused1]", "[SEP]", "[PAD]"]
    assert tensors["input_ids"][0].tolist() == tokenizer.convert_tokens_to_ids(expected)
    assert tensors["attention_mask"].sum(1).tolist() == [5, 6]
    assert tensors["token_type_ids"].sum() == 0 and tensors["labels"].tolist() == [1, 5]
    assert lost == 1  # the second row's @GENE$ is past the cut


# ----------------------------------------------------------------------------- run_re

# The label is the cue word between the two markers; a cue of another class may stand
# outside them, so the markers' positions matter.
CUES = {
    "CPR:3": "activates",
    "CPR:4": "inhibits",
    "CPR:5": "agonizes",
    "CPR:6": "antagonizes",
    "CPR:9": "metabolizes",
    "false": "and",
}
FILLER = ["the", "a", "cell", "level", "in", "of", "rat", "liver", "assay", "was", "seen"]


def generated_chemprot(folder, seed=0, train=720, dev=180, test=60):
    """train/dev/test.tsv in BLUE's layout (test labelled), a vocabulary with [unusedN]
    tokens and a tiny BERT (hidden size 64: 32 learns six classes unreliably) without
    dropout. Returns the folder."""
    rng = random.Random(seed)

    def row(i, label):
        first, second = rng.sample(["@CHEMICAL$", "@GENE$"], 2)
        words = [*rng.choices(FILLER, k=rng.randint(0, 3)), first, CUES[label], second]
        words += rng.choices(FILLER, k=rng.randint(0, 3))
        if rng.random() < 0.5:
            decoy = CUES[rng.choice([c for c in LABELS if c not in (label, "false")])]
            words.insert(rng.choice([0, len(words)]), decoy)
        return [f"{i}.T1.T2", " ".join(words), label]

    folder.mkdir(parents=True, exist_ok=True)
    weights = [1, 1, 1, 1, 1, 3]  # "false" is the largest class, as in ChemProt
    for name, n in (("train", train), ("dev", dev), ("test", test)):
        rows = [row(i, label) for i, label in enumerate(rng.choices(LABELS, weights, k=n))]
        write_tsv(folder / f"{name}.tsv", [HEADER, *rows])
    texts = [*CUES.values(), *FILLER]
    vocab = vocab_with_unused(texts, folder / "vocab.txt")
    save_tiny_bert(folder / "tiny_bert", vocab, hidden_size=64, dropout=0.0)
    return folder


def re_flags(data_dir, out, *extra):
    return [
        "--data_dir", str(data_dir), "--init_checkpoint", str(data_dir / "tiny_bert"),
        "--output_dir", str(out), "--max_seq_length", "16", "--train_batch_size", "16",
        "--learning_rate", "7e-4", "--eval_batch_size", "64", "--log_freq", "15", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return generated_chemprot(tmp_path_factory.mktemp("chemprot"))


def test_help_lists_the_flags_and_the_recipe_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        run_re.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data_dir", "--do_predict", "--max_seq_length", "--resume"):
        assert flag in text
    args = run_re.parse_args([])
    assert (args.train_batch_size, args.learning_rate, args.max_seq_length) == (8, 2.4e-5, 512)
    assert (args.num_train_epochs, args.warmup_proportion, args.task_name) == (3.0, 0.1, "chemprot")


@pytest.mark.slow
def test_tiny_bert_learns_the_relation_between_the_markers(task, tmp_path, capsys):
    flags = re_flags(task, tmp_path, "--do_train", "--do_eval", "--do_predict")
    assert run_re.main([*flags, "--num_train_epochs", "15"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "eval_results.json").read_text())
    # A uniform guess scores about 0.14 here, "false" for every row 0.
    assert results["task"] == "ChemProt" and results["dev_f1"] > 0.9, out
    assert results["test_f1"] > 0.9 and set(results["dev_per_class"]) == set(LABELS[:5])
    assert "dev: micro-average over CPR:3" in out and "training sequences/s:" in out
    lines = (tmp_path / "test_predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tlabel" and len(lines) == 61
    assert [line.split("\t")[0] for line in lines[1:]] == [f"{i}.T1.T2" for i in range(60)]
    assert {line.split("\t")[1] for line in lines[1:]} <= set(LABELS)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "dllogger.json").is_file()


def test_bad_dev_row_stops_the_run_before_training(task, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text((task / "train.tsv").read_text())
    write_tsv(data / "dev.tsv", [HEADER, ["1", "s", "false"], ["2", "s", "CPR:2"]])
    flags = re_flags(data, tmp_path / "out", "--do_train", "--do_eval")
    flags[flags.index("--init_checkpoint") + 1] = str(task / "tiny_bert")
    assert run_re.main(flags) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data / 'dev.tsv'}, line 3: label 'CPR:2' is not one of")
    assert not (tmp_path / "out").exists()


def test_a_model_whose_vocabulary_has_no_unused_tokens_is_refused(task, tmp_path, capsys):
    plain = build_vocab([*CUES.values(), *FILLER], tmp_path / "vocab.txt", vocab_size=120)
    save_tiny_bert(tmp_path / "plain_bert", plain, hidden_size=32, dropout=0.0)
    flags = re_flags(task, tmp_path / "out", "--do_eval")
    flags[flags.index("--init_checkpoint") + 1] = str(tmp_path / "plain_bert")
    assert run_re.main(flags) == 1
    assert "has 0 [unusedN] tokens where 3 are needed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_training_resumes_from_its_checkpoint_and_a_used_folder_is_refused(task, tmp_path, capsys):
    flags = re_flags(task, tmp_path, "--do_train", "--save_checkpoints_steps", "10")
    assert run_re.main([*flags, "--max_steps", "20"]) == 0
    assert run_re.main([*flags, "--max_steps", "30"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert run_re.main([*flags, "--max_steps", "30", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 20 of 135" in out and "steps: 30/135" in out
