"""BERT WordPiece tokenization: the reference's rules one by one, vocabulary errors and
warnings, and the fast (`tokenizers`) path agreeing with the exact one."""

import logging
import sys
import unicodedata

import pytest

from bert.tokenization import (
    BasicTokenizer,
    FullTokenizer,
    VocabError,
    _fast_path_safe,
    _stable_char,
)

try:
    import tokenizers
except ImportError:
    tokenizers = None
try:
    import transformers
except ImportError:
    transformers = None
needs_tokenizers = pytest.mark.skipif(tokenizers is None, reason="needs the tokenizers library")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNCASED = SPECIALS + [
    "the", "un", "##aff", "##able", "want", "##ed", "##ing", "runn", "hello", "world", "cafe",
    "resume", "naive", "a", "##a", "b", "##b", "中", "国", "人", "$", ",", ".", "!", "?", "'",
    "¿", "—", "«", "»", "^", "`", "5", "##0", "€", "x", "##x",
]  # fmt: skip
CASED = SPECIALS + ["Hello", "hello", "World", "Café", "café", "un", "##aff", "##able", "!", "the"]


def write(path, tokens):
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


@pytest.fixture
def uncased(tmp_path):
    return FullTokenizer(write(tmp_path / "vocab.txt", UNCASED), do_lower_case=True, fast=False)


@pytest.fixture
def cased(tmp_path):
    return FullTokenizer(write(tmp_path / "vocab.txt", CASED), do_lower_case=False, fast=False)


# --------------------------------------------------------------------------- the rules


def test_wordpiece_takes_the_longest_vocabulary_piece_first(uncased):
    assert uncased.tokenize("unaffable wanted running") == [
        "un", "##aff", "##able", "want", "##ed", "runn", "##ing",
    ]  # fmt: skip


def test_word_that_cannot_be_fully_segmented_is_one_unk(uncased):
    assert uncased.tokenize("the unaffablez hello") == ["the", "[UNK]", "hello"]


def test_word_over_200_characters_is_unk_and_200_is_not(uncased):
    assert uncased.tokenize("a" * 200) == ["a"] + ["##a"] * 199
    assert uncased.tokenize("a" * 201 + " b") == ["[UNK]", "b"]


def test_lower_casing_strips_accents(uncased):
    assert uncased.tokenize("Café RÉSUMÉ Naïve HeLLo") == ["cafe", "resume", "naive", "hello"]


def test_cased_keeps_letter_case_and_accents(cased):
    assert cased.tokenize("Hello hello Café café HELLO") == [
        "Hello",
        "hello",
        "Café",
        "café",
        "[UNK]",
    ]


def test_cjk_ideographs_become_words_of_their_own(uncased):
    assert uncased.tokenize("中国人a中") == ["中", "国", "人", "a", "中"]
    # Hangul and Kana are not CJK ideographs: they stay inside their word.
    assert BasicTokenizer(do_lower_case=False).tokenize("한국어 カタカナ中") == [
        "한국어",
        "カタカナ",
        "中",
    ]


def test_ascii_symbols_and_unicode_punctuation_are_split_off(uncased):
    assert uncased.tokenize("hello,world! $5^`x") == [
        "hello",
        ",",
        "world",
        "!",
        "$",
        "5",
        "^",
        "`",
        "x",
    ]
    assert uncased.tokenize("¿hello—world?«a»") == ["¿", "hello", "—", "world", "?", "«", "a", "»"]


def test_unicode_symbols_that_are_not_punctuation_stay_in_the_word():
    assert BasicTokenizer().tokenize("50€ a+b x©y") == ["50€", "a", "+", "b", "x©y"]


def test_control_characters_nul_and_replacement_character_are_removed(uncased):
    text = "hel\x00lo\ufffd wor\x07ld\u200b the\x1b"  # NUL, U+FFFD, BEL (Cc), ZWSP (Cf), ESC
    assert uncased.tokenize(text) == ["hello", "world", "the"]


def test_tab_newline_and_unicode_spaces_separate_words(uncased):
    assert uncased.tokenize("hello\tworld\nthe\r\u00a0a\u3000b") == [
        "hello",
        "world",
        "the",
        "a",
        "b",
    ]


def test_empty_and_blank_texts_give_no_tokens(uncased):
    assert uncased.tokenize("") == [] and uncased.tokenize(" \t\n\x00") == []


def test_special_token_text_is_tokenized_like_any_text(uncased):
    assert uncased.tokenize("[CLS]") == ["[UNK]", "[UNK]", "[UNK]"]  # "[", "cls", "]"


def test_tokens_and_ids_convert_both_ways(uncased):
    tokens = uncased.tokenize("unaffable!")
    ids = uncased.convert_tokens_to_ids(tokens)
    assert ids == [6, 7, 8, 28]
    assert uncased.convert_ids_to_tokens(ids) == tokens
    assert uncased.vocab["[UNK]"] == 1 and uncased.inv_vocab[1] == "[UNK]"
    assert len(uncased) == len(UNCASED)
    with pytest.raises(KeyError, match="'zzz' is not in vocabulary"):
        uncased.convert_tokens_to_ids(["zzz"])


# ------------------------------------------------------------------ vocabulary files


def test_missing_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(VocabError, match=r"vocabulary .*nope.txt does not exist"):
        FullTokenizer(tmp_path / "nope.txt")


def test_non_utf8_vocabulary_names_the_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[UNK]\nhello\ncaf\xe9\n")
    with pytest.raises(VocabError, match=r"vocab.txt, line 3: not UTF-8"):
        FullTokenizer(path)


def test_empty_vocabulary_is_an_error(tmp_path):
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(VocabError, match="is empty"):
        FullTokenizer(tmp_path / "vocab.txt")


def test_lower_casing_with_a_cased_vocabulary_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        FullTokenizer(write(tmp_path / "vocab.txt", CASED), do_lower_case=True, fast=False)
    assert "upper-case letters, but do_lower_case=True" in caplog.text


def test_keeping_case_with_an_uncased_vocabulary_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        FullTokenizer(write(tmp_path / "vocab.txt", UNCASED), do_lower_case=False, fast=False)
    assert "no upper-case tokens, but do_lower_case=False" in caplog.text


def test_matching_case_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        FullTokenizer(write(tmp_path / "u.txt", UNCASED), do_lower_case=True, fast=False)
        FullTokenizer(write(tmp_path / "c.txt", CASED), do_lower_case=False, fast=False)
    assert caplog.text == ""


# ------------------------------------------------------------------------- fast path

SAMPLE = [
    "Hello, World! The quick brown fox -- jumped over 13 lazy dogs; didn't it?",
    "Café RÉSUMÉ naïve coöperate Ångström Øresund straße İstanbul ﬁnance",
    "中国人民 東京タワー 한국어 텍스트 mixed中文text",
    "tabs\tand\nnewlines\r\nand\u00a0no-break\u3000ideographic spaces",
    "control\x00chars\x07and\x1b[0m escape\ufffd zero\u200bwidth \u2028line sep",
    "unicode punctuation: ¿¡ «» „“ — – … ‹› 「」 ・ ؟ ।",
    "symbols $^`~|\\ 100€ ±×÷ ©® ™ ♥ 😀 𝔘𝔫𝔦",
    "a" * 201 + " " + "unaffable" * 20 + " " + "b" * 199,
    "unaffable unaffablez wanted runnings xxxx",
    "Ελληνικά ΟΔΟΣ Ὀδυσσεύς русский ТЕКСТ עברית العربية हिन्दी",
    "private\ue000use \U0002b820cjk-e \U000f0000 done",
    "[CLS] [SEP] [MASK] ##a ## #",
]


@pytest.fixture
def sample_vocab(tmp_path):
    """Every basic-tokenizer word of the sample plus a few pieces, so that differences in
    basic tokenization show in the tokens instead of hiding in [UNK]."""
    words = {
        w for lower in (True, False) for t in SAMPLE for w in BasicTokenizer(lower).tokenize(t)
    }
    return write(tmp_path / "vocab.txt", SPECIALS + sorted(words - set(SPECIALS)) + UNCASED[5:])


@needs_tokenizers
@pytest.mark.parametrize("lower", [True, False])
def test_fast_path_gives_the_exact_tokens_on_a_varied_sample(sample_vocab, lower):
    fast = FullTokenizer(sample_vocab, do_lower_case=lower, fast=True)
    slow = FullTokenizer(sample_vocab, do_lower_case=lower, fast=False)
    assert fast.fast and not slow.fast
    for text in SAMPLE:
        assert fast.tokenize(text) == slow.tokenize(text), text


@needs_tokenizers
def test_fast_path_hands_texts_it_would_change_to_the_exact_path():
    assert _fast_path_safe("plain ascii", True) and _fast_path_safe("Café 中国 ΟΔΟΣ", False)
    assert not _fast_path_safe("private\ue000use", True)  # Co: the Rust library drops it
    assert not _fast_path_safe("\U0002b820", True)  # CJK Ext. E, missing from its ranges
    assert not _fast_path_safe("ΟΔΟΣ", True)  # final sigma when lower-casing
    assert not _fast_path_safe("\u1734", False)  # category changed since Unicode 3.2


@needs_tokenizers
@pytest.mark.slow
@pytest.mark.parametrize("lower", [True, False])
def test_fast_path_agrees_on_every_code_point_it_admits(tmp_path, lower):
    """Each non-ASCII character the fast path admits, inside and between words."""
    admitted = [chr(c) for c in range(128, sys.maxunicode + 1) if _stable_char(chr(c))]
    texts = [
        " ".join(f"xA{c}Éb {c} a{c}{c}" for c in admitted[i : i + 500])
        for i in range(0, len(admitted), 500)
    ]
    basic = BasicTokenizer(lower)
    words = sorted({w for t in texts for w in basic.tokenize(t)} - set(SPECIALS))
    vocab = write(tmp_path / "vocab.txt", SPECIALS + words)
    fast = FullTokenizer(vocab, do_lower_case=lower, fast=True)
    slow = FullTokenizer(vocab, do_lower_case=lower, fast=False)
    for text in texts:
        assert fast.tokenize(text) == slow.tokenize(text)


@pytest.mark.skipif(transformers is None, reason="needs Hugging Face transformers")
@pytest.mark.parametrize("lower", [True, False])
def test_matches_transformers_bert_tokenizer(sample_vocab, lower):
    """Hugging Face drops every C* character (we keep private-use ones, as the reference
    does), keeps [CLS]-like text whole and lower-cases a word-final "Σ" to "σ" (Python's
    str.lower, which the reference uses, gives "ς"): the sample without those texts. Its
    WordPiece gives up on words over 100 characters by default, the reference over 200."""
    ours = FullTokenizer(sample_vocab, do_lower_case=lower, fast=False)
    theirs = transformers.BertTokenizer(str(sample_vocab), do_lower_case=lower)
    theirs._tokenizer.model.max_input_chars_per_word = 200
    for text in SAMPLE:
        if "[" in text or (lower and "Σ" in text):
            continue
        if any(unicodedata.category(c) in ("Co", "Cn") for c in text):
            continue
        assert ours.tokenize(text) == theirs.tokenize(text), text
