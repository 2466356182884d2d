"""SQuAD for BERT: the official metrics (bert.squad_eval), reading with bad-input
reports, sliding-window features, answer post-processing, and run_squad end to end on
generated data with a tiny random BERT."""

import json

import numpy as np
import pytest
import yaml

from bert import run_squad, squad, squad_eval, toy_squad
from bert.tiny import build_vocab, save_tiny_bert
from bert.tokenization import FullTokenizer

# ------------------------------------------------------------------------- squad_eval


def squad_json(paragraphs, version="1.1"):
    """A SQuAD dict from [(context, [(id, question, [answer texts]), ...]), ...]; answer
    offsets are found in the context (-1 if absent)."""
    return {
        "version": version,
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": qid,
                                "question": question,
                                "answers": [
                                    {"text": a, "answer_start": context.find(a)} for a in answers
                                ],
                            }
                            for qid, question, answers in qas
                        ],
                    }
                    for context, qas in paragraphs
                ],
            }
        ],
    }


def test_normalisation_lowercases_drops_punctuation_articles_and_extra_spaces():
    assert squad_eval.normalize_answer("  The Cat's   hat,  a dog! ") == "cats hat dog"
    assert squad_eval.normalize_answer("An apple") == "apple"
    assert squad_eval.normalize_answer("theatre then") == "theatre then"  # whole words only
    assert squad_eval.normalize_answer("A-B") == "ab"


def test_f1_is_over_normalised_word_bags():
    # pred {big, red, dog}, gold {red, dog, barked}: 2 common, P = R = 2/3
    assert squad_eval.f1_score("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    assert squad_eval.f1_score("dog dog", "dog") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert squad_eval.f1_score("cat", "dog") == 0.0
    # Empty answers: 0 in v1.1, equality in v2.0.
    assert squad_eval.f1_score("the", "a") == 0.0
    assert squad_eval.f1_score("the", "a", version="2.0") == 1.0
    assert squad_eval.f1_score("", "dog", version="2.0") == 0.0


V1_DATA = squad_json(
    [
        ("Ada was born in Paris in 1815.", [("q1", "Where?", ["Paris", "in Paris"])]),
        (
            "The red dog barked loudly.",
            [("q2", "What?", ["red dog barked"]), ("q3", "Who?", ["dog"])],
        ),
    ]
)


def test_v1_scores_best_gold_per_question_and_missing_predictions_as_zero(capsys):
    predictions = {"q1": "in paris.", "q2": "the red dog"}  # q3 unanswered
    result = squad_eval.evaluate(V1_DATA, predictions)
    # q1: exact via "in Paris"; q2: F1 2*(1*2/3)/(1+2/3) = 0.8; q3: 0
    assert result == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 0.8) / 3})
    assert "1 questions have no prediction" in capsys.readouterr().err


V2_DATA = squad_json(
    [
        (
            "Ada was born in Paris in 1815.",
            [("a1", "Where?", ["Paris"]), ("a2", "When?", ["1815"]), ("n1", "Why?", [])],
        ),
        ("Nothing here.", [("n2", "Who?", [])]),
    ],
    version="v2.0",
)
V2_PREDICTIONS = {"a1": "Paris", "a2": "in 1815 Paris", "n1": "", "n2": "Ada"}


def test_v2_splits_answerable_and_unanswerable_questions():
    result = squad_eval.evaluate(V2_DATA, V2_PREDICTIONS)
    # a1: 1/1; a2: EM 0, F1 2 * (1/3 * 1) / (4/3) = 1/2; n1: "" == "" 1/1; n2: 0/0
    assert result == pytest.approx(
        {
            "exact": 50.0,
            "f1": 62.5,
            "total": 4,
            "HasAns_exact": 50.0,
            "HasAns_f1": 75.0,
            "HasAns_total": 2,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
            "NoAns_total": 2,
        }
    )


def test_v2_no_answer_probabilities_threshold_and_best_thresholds():
    na_probs = {"a1": 0.1, "a2": 0.6, "n1": 0.2, "n2": 0.9}
    result = squad_eval.evaluate(V2_DATA, V2_PREDICTIONS, na_probs=na_probs, na_prob_thresh=0.5)
    # Above 0.5 counts as "no answer": a2 -> 0, n2 -> 1.
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(75.0)
    # Sweeping: start at 2 (both unanswerable right); a1 +1 -> 3 at 0.1; n1 (empty) +0;
    # a2 +0 (exact) / +1/2 (F1) at 0.6; n2 answered -1.
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == pytest.approx(0.1)
    assert result["best_f1"] == pytest.approx(87.5)
    assert result["best_f1_thresh"] == pytest.approx(0.6)


def test_cli_prints_the_official_json(tmp_path, capsys):
    data, preds = tmp_path / "dev.json", tmp_path / "pred.json"
    data.write_text(json.dumps(V1_DATA))
    preds.write_text(json.dumps({"q1": "Paris", "q2": "red dog barked", "q3": "dog"}))
    assert squad_eval.main([str(data), str(preds)]) == 0
    out = capsys.readouterr().out
    assert out == '{"exact_match": 100.0, "f1": 100.0}\n'

    data.write_text(json.dumps(V2_DATA))
    preds.write_text(json.dumps(V2_PREDICTIONS))
    assert squad_eval.main([str(data), str(preds), "--version", "2.0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed)[:3] == ["exact", "f1", "total"] and printed["NoAns_total"] == 2


def test_cli_errors_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "dev.json"
    bad.write_text('{"data": [\n  {"paragraphs": ]}')
    preds = tmp_path / "p.json"
    preds.write_text("{}")
    assert squad_eval.main([str(bad), str(preds)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: SQuAD data") and "dev.json, line 2" in err
    no_answers = squad_json([("c", [("q9", "?", [])])])
    del no_answers["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    bad.write_text(json.dumps(no_answers))
    assert squad_eval.main([str(bad), str(preds)]) == 1
    assert "question q9 has no 'answers'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- reading


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_training_skips_and_counts_unusable_questions_with_their_ids(tmp_path):
    data = squad_json(
        [
            ("Ada was born in Paris.", [("ok", "Where was Ada born?", ["Paris"])]),
            ("Bob lives in Rome.", [("moved", "Where?", ["Rome"]), ("blank", "  ", ["Rome"])]),
            ("", [("nocontext", "Where?", [])]),
        ]
    )
    paragraphs = data["data"][0]["paragraphs"]
    paragraphs[1]["qas"][0]["answers"][0]["answer_start"] = 3  # "Rome" is not at 3
    paragraphs.append({"context": "x", "qas": [{"id": "noq", "answers": []}]})
    paragraphs.append({"context": "y"})  # no qas
    paragraphs.append({"context": "z", "qas": [{"id": "noa", "question": "?"}, {"question": "?"}]})
    path = write_json(tmp_path / "train.json", data)
    result = squad.read_squad(path, training=True, version_2=False)
    assert [e.qid for e in result.examples] == ["ok"]
    reasons = dict(result.skipped)
    assert reasons["moved"] == "answer 'Rome' does not occur at answer_start 3"
    assert reasons["blank"] == "empty question"
    assert reasons["nocontext"] == "empty context"
    assert reasons["noq"] == "no 'question' string"
    assert reasons["article 0 paragraph 4"] == "no 'qas' list"
    assert reasons["noa"] == "no 'answers'"
    assert reasons["article 0 paragraph 5 question 1"] == "no 'id'"
    summary = result.skipped_summary(path)
    assert summary.startswith(f"skipped 7 questions of {path}: moved (answer 'Rome'")


def test_prediction_errors_name_file_and_question_but_skips_empty_ones(tmp_path):
    data = squad_json([("Ada was born in Paris.", [("q1", "Where?", []), ("q2", "", [])])])
    path = write_json(tmp_path / "dev.json", data)
    result = squad.read_squad(path, training=False, version_2=False)
    assert [e.qid for e in result.examples] == ["q1"]
    assert result.question_ids == ["q1", "q2"] and result.skipped == [("q2", "empty question")]
    assert squad.complete_predictions({"q1": "Paris"}, result.question_ids) == {
        "q1": "Paris",
        "q2": "",
    }
    del data["data"][0]["paragraphs"][0]["qas"][0]["question"]
    write_json(path, data)
    with pytest.raises(squad_eval.SquadError, match=r"dev\.json: q1: no 'question' string"):
        squad.read_squad(path, training=False, version_2=False)
    path.write_text("not json")
    with pytest.raises(squad_eval.SquadError, match=r"dev\.json, line 1 column 1: malformed"):
        squad.read_squad(path, training=False, version_2=False)
    write_json(path, {"version": "1.1"})
    with pytest.raises(squad_eval.SquadError, match=r"dev\.json: no 'data' list"):
        squad.read_squad(path, training=True, version_2=False)


# --------------------------------------------------------------------------- features

LONG_SENTENCE = "The old clock in the square struck twelve times that night. "


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [LONG_SENTENCE, "Ada Lovelace was born in ( 1815 ). Where was Ada born? When?"]
    vocab = build_vocab(texts, tmp_path_factory.mktemp("vocab") / "vocab.txt", vocab_size=200)
    return FullTokenizer(vocab)


def example(context, question, answer=None, impossible=False):
    words, word_of_char = squad.split_words(context)
    ex = squad.SquadExample("id", question, words, is_impossible=impossible)
    if answer is not None:
        start = context.index(answer)
        ex.answers = [answer]
        ex.start_word = word_of_char[start]
        ex.end_word = word_of_char[start + len(answer) - 1]
    return ex


def test_split_words_maps_each_character_to_its_word():
    words, word_of_char = squad.split_words(" ab  c\td ")
    assert words == ["ab", "c", "d"]
    assert word_of_char == [-1, 0, 0, 0, 0, 1, 1, 2, 2]


def test_long_context_becomes_overlapping_windows_with_one_max_context_each(tokenizer):
    context = LONG_SENTENCE * 10 + "Ada Lovelace was born in 1815."
    ex = example(context, "When was Ada born?", "1815")
    features = squad.make_features(
        [ex], tokenizer, max_seq_length=48, doc_stride=16, max_query_length=8, training=True
    )
    pieces = tokenizer.tokenize(context)
    query = tokenizer.tokenize("When was Ada born?")
    offset = len(query) + 2
    window = 48 - len(query) - 3
    assert len(features) == 1 + -(-(len(pieces) - window) // 16)  # stride 16 until the end
    first_piece_seen = {}
    for i, f in enumerate(features):
        assert len(f.input_ids) <= 48 and f.tokens[:offset] == ["[CLS]", *query, "[SEP]"]
        assert f.tokens[-1] == "[SEP]"
        assert f.token_type_ids == [0] * offset + [1] * (len(f.tokens) - offset)
        span = f.tokens[offset:-1]
        assert span == pieces[16 * i : 16 * i + len(span)]
        for k in range(len(span)):
            if f.max_context[offset + k]:
                assert 16 * i + k not in first_piece_seen
                first_piece_seen[16 * i + k] = i
    assert sorted(first_piece_seen) == list(range(len(pieces)))  # each piece: one window
    # The answer lies in the last window only; elsewhere the target is [CLS].
    *others, last = features
    assert all(f.start_position == f.end_position == 0 for f in others)
    assert last.tokens[last.start_position : last.end_position + 1] == ["1815"]


def test_max_context_prefers_the_window_where_a_piece_is_most_central(tokenizer):
    spans = squad._windows(10, max_len=6, stride=2)
    assert spans == [(0, 6), (2, 6), (4, 6)]
    # piece 3: min(3, 2) in window 0, min(1, 4) in 1... -> window 0 (score 2.06)
    assert squad._best_window(spans, 10) == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_answer_inside_a_word_is_narrowed_to_its_pieces(tokenizer):
    context = "Ada Lovelace was born in (1815)."
    ex = example(context, "When was Ada born?", "1815")
    (f,) = squad.make_features([ex], tokenizer, 64, 16, 8, training=True)
    assert f.tokens[f.start_position : f.end_position + 1] == ["1815"]
    assert f.token_to_word[f.start_position] == 5  # the word "(1815)."


def test_impossible_questions_point_at_cls(tokenizer):
    ex = example(LONG_SENTENCE * 3, "When was Ada born?", impossible=True)
    features = squad.make_features([ex], tokenizer, 32, 8, 8, training=True)
    assert len(features) > 1
    assert all(f.start_position == f.end_position == 0 for f in features)
    tensors = squad.features_to_tensors(features, 32, training=True)
    assert tensors["input_ids"].shape == (len(features), 32)
    assert tensors["start_positions"].tolist() == [0] * len(features)


def test_question_too_long_for_the_sequence_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="leaves no room for the context"):
        squad.make_features([example("a b", "q")], tokenizer, 10, 4, max_query_length=64)


# ---------------------------------------------------------------------------- answers


def test_alignment_returns_the_original_spelling_of_the_predicted_words():
    assert squad.align_answer_text("1815", "(1815).", True) == "1815"
    assert squad.align_answer_text("ada lovelace", "Ada Lovelace's", True) == "Ada Lovelace"
    assert squad.align_answer_text("born in", "born  in", True) == "born  in"
    assert squad.align_answer_text("zzz", "Paris", True) == "Paris"  # not found: whole text


def hand_feature(tokens, context_from):
    """A feature whose tokens from `context_from` on are context words 0, 1, ... (the
    last token is [SEP])."""
    n = len(tokens)
    return squad.SquadFeature(
        example_index=0,
        tokens=tokens,
        token_to_word={i: i - context_from for i in range(context_from, n - 1)},
        max_context={i: True for i in range(context_from, n - 1)},
        input_ids=[0] * n,
        token_type_ids=[0] * n,
    )


def logits(n, values):
    out = np.full(n, -10.0)
    for i, v in values.items():
        out[i] = v
    return out


def test_best_span_and_nbest_probabilities_from_hand_set_logits():
    words = ["Ada", "was", "born", "in", "(1815)."]
    ex = squad.SquadExample("q", "When?", words)
    tokens = ["[CLS]", "when", "?", "[SEP]", "ada", "was", "born", "in", "(", "1815", ")", "."]
    tokens.append("[SEP]")
    f = hand_feature(tokens, 4)
    f.token_to_word = {4: 0, 5: 1, 6: 2, 7: 3, 8: 4, 9: 4, 10: 4, 11: 4}
    f.max_context = dict.fromkeys(f.token_to_word, True)
    start = logits(13, {9: 5.0, 4: 3.0, 1: 9.0})  # 1: in the question, never a start
    end = logits(13, {9: 4.0, 7: 2.0, 0: 8.0})
    preds, nbest, odds = squad.predict_answers([ex], [f], [start], [end], n_best_size=3)
    assert preds == {"q": "1815"} and odds == {}
    texts = [e["text"] for e in nbest["q"]]
    scores = [e["start_logit"] + e["end_logit"] for e in nbest["q"]]
    # (9, 9) = 9, (4, 9) = 7 (ends inside the word "(1815)."), (4, 7) = 5
    assert texts == ["1815", "Ada was born in (1815", "Ada was born in"]
    assert scores == [9.0, 7.0, 5.0]
    probs = np.exp(np.array(scores) - 9.0)
    assert [e["probability"] for e in nbest["q"]] == pytest.approx(list(probs / probs.sum()))


def test_spans_longer_than_max_answer_length_or_outside_max_context_are_skipped():
    ex = squad.SquadExample("q", "?", ["a", "b", "c", "d"])
    f = hand_feature(["[CLS]", "?", "[SEP]", "a", "b", "c", "d", "[SEP]"], 3)
    start = logits(8, {3: 9.0, 5: 2.0})
    end = logits(8, {6: 9.0, 5: 1.0})
    preds, _, _ = squad.predict_answers([ex], [f], [start], [end], max_answer_length=3)
    assert preds["q"] == "c d"  # (3, 6) = 18 is 4 pieces long; (5, 6) = 11
    f.max_context[5] = False
    preds, _, _ = squad.predict_answers([ex], [f], [start], [end], max_answer_length=3)
    assert preds["q"] == "a b c"  # (3, 5) = 10 is the best left


def test_v2_null_answer_wins_when_its_margin_exceeds_the_threshold():
    ex = squad.SquadExample("q", "?", ["a", "b"])
    f = hand_feature(["[CLS]", "?", "[SEP]", "a", "b", "[SEP]"], 3)
    start, end = logits(6, {0: 3.0, 3: 2.0}), logits(6, {0: 3.0, 4: 2.5})
    kwargs = {"version_2": True, "n_best_size": 5}
    preds, nbest, odds = squad.predict_answers([ex], [f], [start], [end], **kwargs)
    assert odds["q"] == pytest.approx(6.0 - 4.5) and preds["q"] == ""
    assert nbest["q"][0]["text"] == ""
    preds, _, _ = squad.predict_answers(
        [ex], [f], [start], [end], null_score_diff_threshold=2.0, **kwargs
    )
    assert preds["q"] == "a b"


# --------------------------------------------------------------------------- run_squad


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_squad")
    return toy_squad.write_toy_squad(out, train=1600, dev=120, seed=3)


def squad_flags(toy, out, *extra):
    return [
        "--setup_file", "", "--init_checkpoint", str(toy["model"]), "--output_dir", str(out),
        "--max_seq_length", "128", "--doc_stride", "64", "--train_batch_size", "16",
        "--learning_rate", "2e-3", "--predict_batch_size", "64", "--log_freq", "50",
        "--skip_cache", *extra,
    ]  # fmt: skip


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_squad.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--version_2_with_negative", "--doc_stride", "--null_score_diff_threshold"):
        assert flag in text
    assert "tokens between window starts (default: 128)" in text


def test_named_setups_hold_the_recipe_per_machine():
    base = ["--init_checkpoint", "m", "--do_train", "--train_file", "t.json"]
    args = run_squad.parse_args(base)
    assert (args.num_train_epochs, args.max_seq_length, args.doc_stride) == (2.0, 384, 128)
    assert (args.learning_rate, args.warmup_proportion, args.math) == (4e-5, 0.1, None)
    args = run_squad.parse_args([*base, "--setup", "dgxa100_8gpu_fp16"])
    assert (args.math, args.train_batch_size, args.learning_rate) == ("fp16", 32, 4e-5)
    args = run_squad.parse_args([*base, "--setup", "dgx1_1gpu_fp32", "--train_batch_size", "4"])
    assert (args.math, args.train_batch_size, args.learning_rate) == ("fp32", 4, 5e-6)
    names = yaml.safe_load(run_squad.DEFAULT_CONFIG.read_text())["configs"]
    for name in names:  # every set-up names only real flags
        run_squad.parse_args([*base, "--setup", name])


def test_vocabulary_that_does_not_fit_the_checkpoint_stops_before_training(toy, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]) + "\n")
    flags = squad_flags(toy, tmp_path / "out", "--do_train", "--train_file", str(toy["train"]))
    assert run_squad.main([*flags, "--vocab_file", str(vocab)]) == 1
    err = capsys.readouterr().err
    # the model folder has its own vocab.txt: another one is refused before anything else
    assert err.startswith(f"error: --vocab_file {vocab} is not the vocabulary of the model in")
    assert "(line 5 differs)" in err
    assert not (tmp_path / "out").exists()


def test_prediction_answers_every_question_and_writes_the_files(toy, tmp_path, capsys):
    dev = json.loads(toy["dev"].read_text())
    dev["data"][0]["paragraphs"][0]["qas"][0]["question"] = " "  # skipped, answered ""
    dev["data"][0]["paragraphs"][1]["context"] = LONG_SENTENCE * 40  # 10x the window
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    flags = squad_flags(toy, tmp_path, "--do_predict", "--predict_file", str(tmp_path / "dev.json"))
    assert run_squad.main(flags) == 0
    out = capsys.readouterr().out
    ids = [qa["id"] for a in dev["data"] for p in a["paragraphs"] for qa in p["qas"]]
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert list(predictions) == ids and predictions[ids[0]] == ""
    nbest = json.loads((tmp_path / "nbest_predictions.json").read_text())
    assert set(nbest) == set(ids[1:]) and set(nbest[ids[1]][0]) == {
        "text",
        "probability",
        "start_logit",
        "end_logit",
    }
    assert f"skipped 1 questions of {tmp_path / 'dev.json'}: {ids[0]} (empty question)" in out
    assert "e2e inference time:" in out and "inference sequences/s:" in out


def test_training_features_are_cached_per_data_vocabulary_and_options(toy, tmp_path, capsys):
    cache = tmp_path / "cache"
    flags = squad_flags(toy, tmp_path / "out", "--do_train", "--train_file", str(toy["train"]))
    flags = [f for f in flags if f != "--skip_cache"] + [
        "--cache_dir",
        str(cache),
        "--max_steps",
        "1",
    ]
    assert run_squad.main(flags) == 0
    assert "cached training features in" in capsys.readouterr().out
    again = [*flags, "--overwrite"]  # a new run in the same folder
    assert run_squad.main([*again, "--doc_stride", "32"]) == 0  # other features: a new file
    assert "cached training features in" in capsys.readouterr().out
    assert run_squad.main(again) == 0  # read back
    assert "cached training features" not in capsys.readouterr().out
    assert len(list(cache.glob("train-v1.1.json.*.features.pt"))) == 2


@pytest.mark.slow
def test_fine_tuning_a_tiny_bert_answers_generated_questions(toy, tmp_path, capsys):
    flags = squad_flags(
        toy, tmp_path, "--do_train", "--train_file", str(toy["train"]), "--num_train_epochs",
        "4", "--do_eval", "--predict_file", str(toy["dev"]),
    )  # fmt: skip
    assert run_squad.main(flags) == 0
    out = capsys.readouterr().out
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["f1"] > 60, out
    assert "e2e train time:" in out and "training sequences/s:" in out
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert len(predictions) == 120
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "vocab.txt").is_file()


@pytest.mark.slow
def test_v2_fine_tuning_writes_null_odds_and_scores_both_kinds(tmp_path, capsys):
    toy2 = toy_squad.write_toy_squad(tmp_path / "data", train=400, dev=60, version_2=True)
    flags = squad_flags(
        toy2, tmp_path, "--version_2_with_negative", "--do_train", "--train_file",
        str(toy2["train"]), "--num_train_epochs", "1", "--do_eval", "--predict_file",
        str(toy2["dev"]),
    )  # fmt: skip
    assert run_squad.main(flags) == 0
    out = capsys.readouterr().out
    scores = json.loads(out[out.rindex("{\n") :])
    assert scores["total"] == 60 and scores["HasAns_total"] + scores["NoAns_total"] == 60
    assert {"best_f1", "best_f1_thresh"} <= set(scores)
    odds = json.loads((tmp_path / "null_odds.json").read_text())
    assert len(odds) == 60


def test_tiny_bert_helper_saves_a_loadable_pretraining_model(tmp_path):
    vocab = build_vocab(["a b c"], tmp_path / "vocab.txt", vocab_size=20)
    out = save_tiny_bert(tmp_path / "m", vocab, hidden_size=32, num_hidden_layers=1)
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["architectures"] == ["BertForPreTraining"]
    assert (out / "vocab.txt").read_text() == vocab.read_text()
