"""Named-entity recognition for BERT: the token-classification head against a float64
reference and against transformers, CoNLL reading and its errors, WordPiece alignment,
sliding windows and their join, the predictions file, conlleval's entity counting on
hand-computed cases, and run_ner end to end on a generated biomedical-style corpus (not
BC5CDR)."""

import json
import random

import pytest
import torch

from bert import ner, run_ner
from bert.model import BertConfig, BertForPreTraining, BertForTokenClassification
from bert.tiny import build_vocab, save_tiny_bert
from bert.tokenization import FullTokenizer
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from tests.test_bert_model import (
    B,
    S,
    batch,
    f64_state,
    hf_config,
    make,
    needs_transformers,
    ref_bert,
    ref_linear,
    run64,
    same_outputs,
    transformers,
)

TAGS = ["O", "B-Chemical", "B-Disease", "I-Chemical", "I-Disease"]

# ------------------------------------------------------------------------------- model


def test_token_classification_logits_match_reference_without_pooler():
    model = make(BertForTokenClassification, labels=TAGS)
    ids, types, mask = batch()
    logits = run64(model, ids, types, mask)
    sd = f64_state(model, "bert.")
    sequence, _ = ref_bert(sd, ids, types, mask, model.config)
    assert logits.shape == (B, S, len(TAGS)) and model.bert.pooler is None
    torch.testing.assert_close(logits, ref_linear(sd, "classifier", sequence), rtol=0, atol=1e-12)


def test_labels_name_the_classifier_rows_and_must_agree_with_num_labels():
    assert make(BertForTokenClassification, num_labels=3).labels == [
        "LABEL_0",
        "LABEL_1",
        "LABEL_2",
    ]
    with pytest.raises(ValueError, match="num_labels 4 differs from the 5 labels"):
        make(BertForTokenClassification, num_labels=4, labels=TAGS)
    with pytest.raises(ValueError, match="repeat"):
        make(BertForTokenClassification, labels=["O", "O"])


def test_fine_tuning_from_pretraining_starts_a_new_classifier_and_drops_the_pooler(tmp_path):
    make(BertForPreTraining).save_pretrained(tmp_path)
    model = BertForTokenClassification.from_pretrained(tmp_path, labels=TAGS)
    assert model.labels == TAGS
    assert model.load_report.newly_initialized == ["classifier.bias", "classifier.weight"]
    assert "bert.pooler.dense.weight" in model.load_report.unused


def test_saved_tags_come_back_and_keep_the_checkpoint_order(tmp_path):
    model = make(BertForTokenClassification, labels=TAGS)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"]["2"] == "B-Disease" and config["label2id"]["I-Disease"] == 4
    loaded = BertForTokenClassification.from_pretrained(tmp_path)
    assert loaded.labels == TAGS and loaded.load_report.newly_initialized == []
    same_outputs(model, loaded, *batch(), atol=0)
    # the same tags in another order (as another training file may list them): the
    # checkpoint's order, so that each classifier row keeps its tag
    again = BertForTokenClassification.from_pretrained(tmp_path, labels=sorted(TAGS))
    assert again.labels == TAGS
    other = BertForTokenClassification.from_pretrained(tmp_path, labels=["O", "B", "I"])
    assert other.labels == ["O", "B", "I"]
    assert other.load_report.newly_initialized == ["classifier.bias", "classifier.weight"]


@needs_transformers
def test_loads_hugging_face_token_classification_with_its_tags(tmp_path):
    id2label = dict(enumerate(TAGS))
    torch.manual_seed(2)
    config = hf_config(id2label=id2label, label2id={t: i for i, t in id2label.items()})
    hf = transformers.BertForTokenClassification(config).eval()
    hf.save_pretrained(tmp_path)
    ours = BertForTokenClassification.from_pretrained(tmp_path)
    assert ours.labels == TAGS and ours.load_report.newly_initialized == []
    ids, types, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        torch.testing.assert_close(ours(ids, types, mask), expected, rtol=0, atol=1e-5)


@needs_transformers
def test_our_save_pretrained_loads_in_transformers_with_same_logits(tmp_path):
    ours = make(BertForTokenClassification, labels=TAGS)
    ours.save_pretrained(tmp_path)
    hf, info = transformers.BertForTokenClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == dict(enumerate(TAGS))
    ids, types, mask = batch()
    with torch.no_grad():
        got = hf.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        torch.testing.assert_close(got, ours(ids, types, mask), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- reading


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


CONLL_2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_2003_columns_docstart_and_blank_lines(tmp_path):
    data = ner.read_conll(write(tmp_path / "eng.train", CONLL_2003))
    assert [(s.words, s.tags, s.lines) for s in data.sentences] == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], [2, 3, 4]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], [6, 7]),
    ]
    assert data.lines == CONLL_2003.splitlines()


def test_blue_tab_separated_files_take_the_last_column_as_the_tag(tmp_path):
    text = (
        "Naloxone\t227508.txt\t0\tB\nreverses\t227508.txt\t9\tO\n\nclonidine\t227508.txt\t20\tB\n"
    )
    data = ner.read_conll(write(tmp_path / "train.tsv", text))
    assert [s.words for s in data.sentences] == [["Naloxone", "reverses"], ["clonidine"]]
    assert data.tags == [["B", "O"], ["B"]]
    assert ner.label_list(data.sentences) == ["O", "B"]


def test_label_list_puts_o_first_then_sorts_any_scheme():
    bioes = ner.Sentence(["a"] * 5, ["S-Gene", "B-Gene", "E-Gene", "O", "I-Gene"], [0] * 5)
    assert ner.label_list([bioes]) == ["O", "B-Gene", "E-Gene", "I-Gene", "S-Gene"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("aspirin\tB-Chemical\nworks\n", 2, r"no tag in 'works'"),
        ("aspirin B-Chemical\n\nnew york B-LOC\n", 3, r"3 columns where line 1 has 2"),
        ("aspirin\tO\n\tO\n", 2, r"no token"),
    ],
)
def test_lines_without_a_tag_or_with_other_columns_name_file_and_line(
    tmp_path, text, line, message
):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(ner.NerError, match=rf"bad\.tsv, line {line}: {message}"):
        ner.read_conll(path)


def test_missing_empty_and_non_utf8_files_are_clear_errors(tmp_path):
    with pytest.raises(ner.NerError, match="does not exist"):
        ner.read_conll(tmp_path / "none.tsv")
    with pytest.raises(ner.NerError, match="holds no tagged tokens"):
        ner.read_conll(write(tmp_path / "empty.tsv", "\n-DOCSTART- O\n\n"))
    (tmp_path / "latin.tsv").write_bytes(b"fever\tO\ncaf\xe9\tO\n")
    with pytest.raises(ner.NerError, match=r"latin\.tsv, line 2: not UTF-8"):
        ner.read_conll(tmp_path / "latin.tsv")


# -------------------------------------------------------------------------- alignment

WORD_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "patient", "has"]
WORD_VOCAB += ["nephro", "##toxic", "##ity", "fever", *"abcdefghijklmnopqrstuvwxyz"]


@pytest.fixture
def tokenizer(tmp_path):
    path = write(tmp_path / "vocab.txt", "".join(t + "\n" for t in WORD_VOCAB))
    return FullTokenizer(path)


def test_a_words_tag_goes_on_its_first_piece_and_the_others_are_ignored(tokenizer):
    sentence = ner.Sentence(
        ["The", "patient", "has", "nephrotoxicity", "\u200b"],
        ["O", "O", "O", "B-Disease", "O"],
        [0, 1, 2, 3, 4],
    )
    features = ner.make_features([sentence], tokenizer, 16, 8, ["O", "B-Disease"])
    pieces = "[CLS] the patient has nephro ##toxic ##ity [UNK] [SEP]"
    ids = tokenizer.convert_tokens_to_ids(pieces.split(" "))
    row = features.tensors["input_ids"][0]
    assert row[:9].tolist() == ids and row[9:].eq(0).all()  # a word of no piece is [UNK]
    assert features.tensors["labels"][0, :9].tolist() == [-100, 0, 0, 0, 1, -100, -100, 0, -100]
    assert features.tensors["attention_mask"][0].sum() == 9
    assert features.positions == [[(0, 1), (0, 2), (0, 3), (0, 4), (0, 7)]]


def letters(n):
    """A sentence of `n` one-piece words (a, b, c, ...) tagged O."""
    words = list("abcdefghijklmnopqrstuvwxyz"[:n])
    return ner.Sentence(words, ["O"] * n, list(range(n)))


def test_long_sentences_are_read_from_the_window_where_a_word_is_farthest_from_an_edge(
    tokenizer,
):
    # 10 pieces, windows of 6 (max_seq_length 8), 2 apart: pieces 0-5, 2-7, 4-9.
    # Piece 3 sits 3 from the left and 2 from the right edge of the first window, 1 and 4
    # in the second: the first wins. Piece 4: 1 / 2 / 0 from the nearer edge: the second.
    assert ner.window_spans(10, 6, 2) == [(0, 6), (2, 6), (4, 6)]
    spans = ner.window_spans(10, 6, 2)
    assert [ner.best_window(p, spans) for p in range(10)] == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    features = ner.make_features([letters(10)], tokenizer, 8, 2, ["O"])
    assert [(w.start, w.length) for w in features.windows] == spans
    assert [row for row, _ in features.positions[0]] == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    # every word is labelled exactly once, where it is read
    labels = features.tensors["labels"]
    assert (labels != -100).sum() == 10
    assert all(labels[row, col] == 0 for row, col in features.positions[0])


def test_windows_no_word_is_read_from_are_left_out(tokenizer):
    # pieces a nephro ##toxic ##ity b c d; windows of 4, 1 apart: 0-3, 1-4, 2-5, 3-6.
    # Words start at pieces 0, 1, 4, 5, 6, best read from windows 0, 0, 2, 3, 3: the
    # window 1-4 centres on pieces of "nephrotoxicity" that are not its first.
    sentence = ner.Sentence(["a", "nephrotoxicity", "b", "c", "d"], ["O"] * 5, list(range(5)))
    features = ner.make_features([sentence], tokenizer, 6, 1)
    assert [(w.start, w.length) for w in features.windows] == [(0, 4), (2, 4), (3, 4)]
    assert [row for row, _ in features.positions[0]] == [0, 0, 1, 2, 2]


def test_word_predictions_join_windows_into_one_tag_per_word(tokenizer):
    """A tagger that reads each piece alone gives the same tags whatever the windows."""
    sentences = [letters(10), letters(3), letters(7)]
    labels = ["O", "B-X", "I-X"]
    by_piece = lambda ids: [[i % 3 for i in row] for row in ids]  # noqa: E731
    long = ner.make_features(sentences, tokenizer, 32, 16)
    short = ner.make_features(sentences, tokenizer, 6, 2)
    assert len(long.windows) == 3 and len(short.windows) > 6
    tags = ner.word_predictions(long, by_piece(long.tensors["input_ids"].tolist()), labels)
    assert [len(t) for t in tags] == [10, 3, 7]
    assert (
        ner.word_predictions(short, by_piece(short.tensors["input_ids"].tolist()), labels) == tags
    )


# ----------------------------------------------------------------------------- output


def test_predictions_keep_every_input_line_and_add_the_tag_as_a_last_column(tmp_path):
    data = ner.read_conll(write(tmp_path / "eng.testb", CONLL_2003 + "\n\n"))
    tags = [["B-ORG", "O", "O"], ["B-PER", "B-PER"]]
    path = ner.write_predictions(data, tags, tmp_path / "out.txt")
    assert path.read_text().splitlines() == [
        "-DOCSTART- -X- -X- O O",
        "",
        "EU NNP B-NP B-ORG B-ORG",
        "rejects VBZ B-VP O O",
        "German JJ B-NP B-MISC O",
        "",
        "Peter NNP B-NP B-PER B-PER",
        "Blackburn NNP I-NP I-PER B-PER",
        "",
        "",
    ]
    blue = ner.read_conll(write(tmp_path / "test.tsv", "fever\t1\tB\n\ncough\t2\tO\n"))
    ner.write_predictions(blue, [["B"], ["B"]], tmp_path / "blue.txt")
    assert (tmp_path / "blue.txt").read_text() == "fever\t1\tB\tB\n\ncough\t2\tO\tB\n"


# ---------------------------------------------------------------------------- metrics


def test_entity_scores_count_as_conlleval_does():
    gold = [
        ["B-Disease", "I-Disease", "O", "B-Chemical"],  # 2 entities
        ["O", "B-Disease", "I-Disease", "I-Disease"],  # 1
        ["B-Chemical", "O", "B-Disease", "I-Disease"],  # 2
    ]
    predicted = [
        # right span, wrong type: a false positive (Chemical) and a miss (Disease); the
        # chemical is found
        ["B-Chemical", "I-Chemical", "O", "B-Chemical"],
        # partial span: a false positive and a miss
        ["O", "B-Disease", "I-Disease", "O"],
        # I- without B- starts an entity (conlleval), so both are found
        ["I-Chemical", "O", "I-Disease", "I-Disease"],
    ]
    # Disease: gold 3, predicted 2, found 1; Chemical: gold 2, predicted 3, found 2
    scores = ner.entity_scores(gold, predicted)
    assert scores["per_type"] == {
        "Chemical": {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2},
        "Disease": {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3},
    }
    assert scores["precision"] == pytest.approx(3 / 5) and scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(3 / 5)
    assert (scores["gold_entities"], scores["predicted_entities"]) == (5, 5)
    assert scores["accuracy"] == pytest.approx(7 / 12)  # tags equal word by word: 2 + 3 + 2


def test_entity_scores_of_other_schemes_and_no_entities():
    # BIOES: E- ends an entity, S- is one of a single word. Gold: words 0-1 and 2;
    # predicted: 0, 1 and 2, so one of three predicted and one of two gold entities match.
    gold = [["B-Gene", "E-Gene", "S-Gene"]]
    bioes = ner.entity_scores(gold, [["S-Gene", "S-Gene", "S-Gene"]])
    assert (bioes["precision"], bioes["recall"]) == (1 / 3, 1 / 2)
    # untyped B/I/O (as in BLUE's files) scores under type "_"
    untyped = ner.entity_scores([["B", "I", "O", "B"]], [["B", "I", "O", "O"]])
    assert untyped["per_type"]["_"]["recall"] == 0.5 and untyped["precision"] == 1.0
    empty = ner.entity_scores([["O", "O"]], [["O", "O"]])
    assert (empty["f1"], empty["per_type"], empty["accuracy"]) == (0.0, {}, 1.0)


# ------------------------------------------------------------------ generated corpus

FILLER = "the patient was treated for with after developed severe acute signs of in and a"
FILLER += " rats mice dose showed no risk"
DISEASES = ["hepatitis", "nephrotoxicity", "breast cancer", "heart failure", "seizures",
            "type 2 diabetes", "hypertension", "parkinson disease"]  # fmt: skip
CHEMICALS = ["cisplatin", "lithium", "haloperidol", "nicotine", "valproic acid"]


def tagged_sentence(rng):
    """Filler words with one to three mentions of diseases and chemicals, BIO-tagged."""
    words = [(w, "O") for w in rng.choices(FILLER.split(), k=rng.randint(4, 10))]
    for _ in range(rng.randint(1, 3)):
        kind, names = rng.choice([("Disease", DISEASES), ("Chemical", CHEMICALS)])
        name = rng.choice(names).split()
        mention = [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(name)]
        at = rng.randrange(len(words) + 1)
        words[at:at] = mention
    return words


def write_corpus(path, sentences, separator="\t"):
    lines = []
    for sentence in sentences:
        lines += [f"{w}{separator}{t}" for w, t in sentence] + [""]
    return write(path, "\n".join(lines))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """train.tsv / devel.tsv / test.tsv in BLUE's names, vocab.txt (rarer words cut into
    pieces) and two tiny BERTs, without and with dropout."""
    folder = tmp_path_factory.mktemp("bioner")
    rng = random.Random(0)
    splits = {"train.tsv": 320, "devel.tsv": 80, "test.tsv": 40}
    texts = []
    for name, n in splits.items():
        sentences = [tagged_sentence(rng) for _ in range(n)]
        texts += [" ".join(w for w, _ in s) for s in sentences]
        write_corpus(folder / name, sentences)
    vocab = build_vocab(texts, folder / "vocab.txt", vocab_size=90)
    save_tiny_bert(folder / "tiny_bert", vocab, hidden_size=32, dropout=0.0)
    save_tiny_bert(folder / "tiny_bert_dropout", vocab, hidden_size=32, dropout=0.1)
    return folder


def ner_flags(data_dir, out, *extra, model=None):
    return [
        "--data_dir", str(data_dir), "--init_checkpoint", str(model or data_dir / "tiny_bert"),
        "--output_dir", str(out), "--max_seq_length", "32", "--doc_stride", "16",
        "--train_batch_size", "16", "--learning_rate", "3e-3", "--log_freq", "10", *extra,
    ]  # fmt: skip


def chance_f1(gold, seed=0):
    """Entity F1 of tags drawn at random with their frequencies in `gold` (word by word)."""
    rng = random.Random(seed)
    pool = [t for s in gold for t in s]
    return ner.entity_scores(gold, [[rng.choice(pool) for _ in s] for s in gold])["f1"]


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_ner.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data_dir", "--train_file", "--doc_stride", "--do_predict", "--setup_file"):
        assert flag in text


@pytest.mark.slow
def test_tiny_bert_learns_to_tag_diseases_and_chemicals(corpus, tmp_path, capsys):
    """Chance: tags drawn word by word at random with the dev file's tag frequencies
    score an entity F1 of about 0.06 (`chance_f1`); tagging everything O, the most
    frequent tag, finds no entity and scores 0."""
    flags = ner_flags(corpus, tmp_path, "--do_train", "--do_eval", "--do_predict")
    assert run_ner.main([*flags, "--num_train_epochs", "3"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "eval_results.json").read_text())
    chance = chance_f1(ner.read_conll(corpus / "devel.tsv").tags)
    assert chance < 0.1 and results["f1"] > 0.8, f"F1 {results['f1']}, chance {chance}\n{out}"
    assert set(results["per_type"]) == {"Chemical", "Disease"}
    assert "dev: precision" in out and "training sequences/s:" in out
    config = json.loads((tmp_path / "config.json").read_text())
    assert list(config["id2label"].values()) == TAGS
    lines = (tmp_path / "test_predictions.txt").read_text().splitlines()
    source = (corpus / "test.tsv").read_text().splitlines()
    assert len(lines) == len(source)
    assert all(a.startswith(b + "\t") if b else a == "" for a, b in zip(lines, source, strict=True))
    logged = {k for r in read_dllogger(tmp_path / "dllogger.json") for k in r["data"]}
    assert {"dev_f1", "dev_Disease_f1", "test_f1", "e2e_train_time"} <= logged


def context_free_model(folder, vocab):
    """A tagger whose logits depend on the token alone: no layers, no positions."""
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    config = BertConfig(vocab_size=size, hidden_size=16, num_hidden_layers=0,
                        num_attention_heads=2, intermediate_size=32,
                        initializer_range=0.5)  # fmt: skip
    torch.manual_seed(0)
    model = BertForTokenClassification(config, labels=TAGS)
    torch.nn.init.zeros_(model.bert.embeddings.position_embeddings.weight)
    return model.save_pretrained(folder, vocab_file=vocab)


def test_windows_of_a_long_sentence_give_the_tags_of_one_long_window(corpus, tmp_path):
    rng = random.Random(1)
    long_sentence = [pair for _ in range(12) for pair in tagged_sentence(rng)]  # ~150 words
    short_sentence = tagged_sentence(rng)
    write_corpus(tmp_path / "test.tsv", [long_sentence, short_sentence], separator=" ")
    model = context_free_model(tmp_path / "model", corpus / "vocab.txt")
    tokenizer = FullTokenizer(corpus / "vocab.txt")
    data = ner.read_conll(tmp_path / "test.tsv")
    windows = ner.make_features(data.sentences, tokenizer, 32, 16).windows
    assert sum(w.sentence == 0 for w in windows) > 5
    outputs = []
    for name, length in (("windows", "32"), ("whole", "512")):
        flags = ner_flags(tmp_path, tmp_path / name, "--do_predict", model=model)
        assert run_ner.main([*flags, "--max_seq_length", length]) == 0
        outputs.append((tmp_path / name / "test_predictions.txt").read_text())
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()
    assert len(lines) == len(data.lines) == len(long_sentence) + 1 + len(short_sentence)
    assert len({line.split()[-1] for line in lines if line}) > 2  # not a constant tagger


def test_bad_dev_line_stops_the_run_before_training(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write(data / "devel.tsv", "fever\tB-Disease\n\nthe patient\n")
    train = ["--train_file", str(corpus / "train.tsv")]
    flags = ner_flags(data, tmp_path / "out", "--do_train", "--do_eval", *train)
    assert run_ner.main(flags) == 1
    assert capsys.readouterr().err == (
        f"error: {data / 'devel.tsv'}, line 3: no tag in 'the patient' (expected the token "
        "first and its tag in the last column)\n"
    )
    assert not (tmp_path / "out").exists()


def test_evaluating_a_model_without_a_token_classifier_is_refused(corpus, tmp_path, capsys):
    assert run_ner.main(ner_flags(corpus, tmp_path, "--do_eval")) == 1
    assert "has no token classifier" in capsys.readouterr().err


def test_flag_problems_are_one_line_errors(capsys):
    for flags, message in (
        (["--do_train"], "--do_train needs --train_file or --data_dir"),
        (["--data_dir", "x"], "nothing to do"),
        (["--do_eval", "--data_dir", "x", "--max_seq_length", "16", "--doc_stride", "15"],
         "--doc_stride 15 exceeds --max_seq_length 16 - 2"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            run_ner.parse_args(flags)
        assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_resumed_run_continues_exactly_as_an_uninterrupted_one(corpus, tmp_path, capsys):
    common = ["--do_train", "--num_train_epochs", "1", "--save_checkpoints_steps", "0"]
    model = corpus / "tiny_bert_dropout"  # the dropout noise must continue exactly too
    assert run_ner.main(ner_flags(corpus, tmp_path / "straight", *common, model=model)) == 0
    resumed = tmp_path / "resumed"
    assert run_ner.main(ner_flags(corpus, resumed, *common, "--max_steps", "7", model=model)) == 0
    capsys.readouterr()
    assert run_ner.main(ner_flags(corpus, resumed, *common, "--resume", model=model)) == 0
    assert "resumed from step 7 of 20" in capsys.readouterr().out
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "finetune_last.pt")["model"]
    again = read_checkpoint(resumed / "checkpoints" / "finetune_last.pt")["model"]
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)
