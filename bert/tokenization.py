"""BERT's WordPiece tokenization, with the rules of Google's reference tokenizer.

Basic tokenization of a text:
  1. clean: drop NUL, U+FFFD and control characters (Unicode Cc and Cf, except tab,
     newline and carriage return); every whitespace character (those three, space and
     Unicode Zs) becomes a space;
  2. put spaces around CJK ideographs, so each becomes a word of its own;
  3. split on whitespace;
  4. when lower-casing: lower-case, decompose (NFD) and drop non-spacing marks (Mn),
     which strips accents ("Café" -> "cafe");
  5. split off every punctuation character (ASCII 33-47, 58-64, 91-96, 123-126 and
     Unicode P*) as a word of its own.
WordPiece then cuts each word greedily into the longest vocabulary pieces from the left,
continuation pieces carrying "##". A word of more than 200 characters, or one that
cannot be cut completely into vocabulary pieces, becomes "[UNK]".

Fast path: with the `tokenizers` library (Rust) installed, texts go through its BERT
normalizer, pre-tokenizer and WordPiece model, configured to the same rules. Its Unicode
tables are not Python's: it drops every C* category as control (the reference only Cc and
Cf), misses part of CJK Extension E, and knows older categories and newer case mappings
than Python's `unicodedata`. So a text takes the fast path only when each of its
non-ASCII characters was already assigned in Unicode 3.2 with today's category and is
not private-use (see `_stable_char`): an old, unchanged character gets the same treatment
from every table since. One rule is contextual: Python lower-cases a word-final capital
sigma to final sigma, the Rust library does not, so lower-cased texts with a capital
sigma take the exact path too, as do all other texts. A test runs every character the
rule admits through both paths and finds identical tokens.
"""

from __future__ import annotations

import collections
import logging
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from common.errors import UserError

logger = logging.getLogger(__name__)

UNK = "[UNK]"
CONTINUATION = "##"
MAX_CHARS_PER_WORD = 200

# CJK Unified Ideographs and their extensions and compatibility blocks. Hangul, Hiragana
# and Katakana are not in here: those scripts separate words with spaces.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


class VocabError(UserError, ValueError):
    """A vocabulary file is missing, empty or not UTF-8."""


def load_vocab(vocab_file: str | os.PathLike) -> collections.OrderedDict[str, int]:
    """token -> id from a vocab.txt (one token a line, id = line number from 0).

    Tokens are stripped of surrounding whitespace; a repeated token keeps its last line's
    id, as in the reference.
    """
    path = Path(vocab_file)
    if not path.is_file():
        raise VocabError(f"vocabulary {path} does not exist")
    vocab: collections.OrderedDict[str, int] = collections.OrderedDict()
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            try:
                token = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise VocabError(
                    f"vocabulary {path}, line {index + 1}: not UTF-8 "
                    f"({exc.reason} at byte {exc.start} of the line)"
                ) from None
            vocab[token] = index
    if not vocab:
        raise VocabError(f"vocabulary {path} is empty")
    return vocab


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    # Tab, newline and carriage return are control characters that count as whitespace.
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    # Every ASCII character that is neither letter, digit nor space counts, "$", "^" and
    # "`" included, which Unicode calls symbols.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class BasicTokenizer:
    """Cleaning, CJK splitting, optional lower-casing and accent stripping, punctuation
    splitting (steps 1-5 of the module docstring)."""

    def __init__(self, do_lower_case: bool = True) -> None:
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str) -> list[str]:
        """Text -> words, e.g. "Héllo, wörld!" -> ["hello", ",", "world", "!"]."""
        words = []
        for word in self._clean(text).split():
            if self.do_lower_case:
                word = _strip_accents(word.lower())
            words.extend(_split_on_punctuation(word))
        return words

    @staticmethod
    def _clean(text: str) -> str:
        out = []
        for char in text:
            if char == "\x00" or char == "\ufffd" or _is_control(char):
                continue
            if _is_whitespace(char):
                out.append(" ")
            elif _is_cjk(char):
                out.append(f" {char} ")
            else:
                out.append(char)
        return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(word: str) -> list[str]:
    """ "a,b!" -> ["a", ",", "b", "!"]."""
    pieces: list[str] = []
    current: list[str] = []
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece over words already split by `BasicTokenizer`."""

    def __init__(
        self,
        vocab: dict[str, int],
        unk_token: str = UNK,
        max_input_chars_per_word: int = MAX_CHARS_PER_WORD,
    ) -> None:
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str) -> list[str]:
        """Whitespace-separated words -> word pieces, e.g. "unaffable" -> un ##aff ##able."""
        pieces: list[str] = []
        for word in text.split():
            pieces.extend(self._tokenize_word(word))
        return pieces

    def _tokenize_word(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.vocab:
                    break
            else:  # no vocabulary piece starts here: the whole word is unknown
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces


def _stable_char(char: str) -> bool:
    """Assigned in Unicode 3.2 with the category it has now; no private-use or surrogate."""
    category = unicodedata.category(char)
    return category not in ("Co", "Cs", "Cn") and unicodedata.ucd_3_2_0.category(char) == category


def _fast_path_safe(text: str, do_lower_case: bool) -> bool:
    """Whether the Rust tokenizer gives this text the reference's tokens (module docstring)."""
    if text.isascii():
        return True
    # Python lower-cases a word-final capital sigma to "ς", the Rust library always to "σ".
    if do_lower_case and "\u03a3" in text:
        return False
    return all(_stable_char(c) for c in set(text) if not c.isascii())


def _build_fast(vocab: dict[str, int], do_lower_case: bool):
    """A `tokenizers.Tokenizer` with BERT's rules, or None without the library."""
    try:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    except ImportError:
        return None
    fast = Tokenizer(
        models.WordPiece(
            vocab,
            unk_token=UNK,
            max_input_chars_per_word=MAX_CHARS_PER_WORD,
            continuing_subword_prefix=CONTINUATION,
        )
    )
    fast.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=do_lower_case,
        lowercase=do_lower_case,
    )
    fast.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return fast


def _check_case(vocab: dict[str, int], do_lower_case: bool, vocab_file: Path) -> None:
    """Warn when the vocabulary's letter case contradicts `do_lower_case`."""
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    cased = sum(1 for t in words if t != t.lower())
    has_letters = any(c.isalpha() for t in words for c in t)
    if do_lower_case and cased >= max(1, len(words) // 20):
        logger.warning(
            "vocabulary %s has %d tokens with upper-case letters, but do_lower_case=True "
            "lower-cases every text: a cased vocabulary needs do_lower_case=False",
            vocab_file,
            cased,
        )
    elif not do_lower_case and cased == 0 and has_letters:
        logger.warning(
            "vocabulary %s has no upper-case tokens, but do_lower_case=False keeps capitals: "
            "capitalised words will become [UNK]; an uncased vocabulary needs "
            "do_lower_case=True",
            vocab_file,
        )


class FullTokenizer:
    """vocab.txt -> text to WordPiece tokens and ids, with the reference's rules.

    fast: None uses the `tokenizers` library when it is importable (texts it would
    treat differently still take the exact path), True requires it, False never uses it.
    """

    def __init__(
        self, vocab_file: str | os.PathLike, do_lower_case: bool = True, fast: bool | None = None
    ) -> None:
        self.vocab_file = Path(vocab_file)
        self.do_lower_case = do_lower_case
        self.vocab = load_vocab(self.vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        _check_case(self.vocab, do_lower_case, self.vocab_file)
        self.basic_tokenizer = BasicTokenizer(do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)
        self._fast = None
        if fast is not False:
            if UNK in self.vocab:  # the Rust WordPiece needs its unknown token in the vocab
                self._fast = _build_fast(self.vocab, do_lower_case)
            if fast and self._fast is None:
                raise RuntimeError(
                    "fast=True needs the `tokenizers` library and a vocabulary with "
                    f"{UNK} ({self.vocab_file})"
                )

    @property
    def fast(self) -> bool:
        """Whether the `tokenizers` fast path is in use."""
        return self._fast is not None

    @property
    def vocab_size(self) -> int:
        """Number of ids (lines of vocab.txt)."""
        return max(self.vocab.values()) + 1

    def __len__(self) -> int:
        return self.vocab_size

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens, e.g. "Unaffable!" -> ["un", "##aff", "##able", "!"]."""
        if self._fast is not None and _fast_path_safe(text, self.do_lower_case):
            return self._fast.encode(text, add_special_tokens=False).tokens
        return [
            piece
            for word in self.basic_tokenizer.tokenize(text)
            for piece in self.wordpiece_tokenizer.tokenize(word)
        ]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        try:
            return [self.vocab[t] for t in tokens]
        except KeyError as exc:
            raise KeyError(
                f"token {exc.args[0]!r} is not in vocabulary {self.vocab_file}"
            ) from None

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        try:
            return [self.inv_vocab[int(i)] for i in ids]
        except KeyError as exc:
            raise KeyError(
                f"id {exc.args[0]} is outside vocabulary {self.vocab_file} ({self.vocab_size} ids)"
            ) from None
