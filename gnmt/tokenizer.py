"""GNMT text <-> ids: Moses tokenization, joint BPE (subword-nmt) and the vocabulary.

    encode: raw text -> Moses tokens -> BPE pieces ("Haus@@ tür") -> ids with BOS/EOS
    decode: ids -> pieces -> joined words (the "@@ " separators removed) -> Moses
            detokenization -> raw text

The vocabulary file lists one BPE piece per line; four special tokens come first
(ids 0-3: PAD, UNK, BOS, EOS, spelled as NVIDIA's PyTorch GNMT spells them, so its
checkpoints decode the same), and the list may be padded with filler tokens to a
multiple of 8 for tensor-core friendly matrix shapes: training pads so in fp16 and bf16
and not in fp32 or tf32 (`vocab_multiple`), as NVIDIA's recipe pads in fp16 only, so an
fp32 run has its vocabulary and weights' shapes (4,129 entries for a 4,125-piece file,
not 4,136). Pieces not in the vocabulary map to UNK.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sacremoses
from subword_nmt.apply_bpe import BPE

from common.errors import UserError

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<s>", "<\\s>"
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)


class TokenizerError(UserError, ValueError):
    """Missing or malformed vocabulary / BPE codes; the message names the file."""


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise TokenizerError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TokenizerError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from exc
    if not text.strip():
        raise TokenizerError(f"{what} {path} is empty")
    return text


def read_vocab(path: str | os.PathLike) -> list[str]:
    """BPE pieces of a vocabulary file (one per line; a count column is ignored)."""
    path = Path(path)
    pieces = []
    for number, line in enumerate(_read_text(path, "vocabulary").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise TokenizerError(f"{path}:{number}: expected 'piece' or 'piece count'")
        pieces.append(fields[0])
    return pieces


def vocab_multiple(math: str) -> int:
    """What training pads the vocabulary to a multiple of, for precision `math`: 8 where
    the classifier runs on tensor cores in half precision, else 1 (no padding)."""
    return 8 if math in ("fp16", "bf16") else 1


def pad_vocab(tokens: list[str], multiple: int) -> list[str]:
    """`tokens` extended with filler tokens to a multiple of `multiple` entries."""
    filler = (-len(tokens)) % multiple
    return tokens + [f"madeupword{i:04d}" for i in range(filler)]


def _check_codes(codes: str, source: str) -> None:
    """subword-nmt reports a malformed merge line by exiting the process: check first."""
    for number, line in enumerate(codes.rstrip("\n").split("\n"), 1):
        if number == 1 and line.startswith("#version:"):
            continue
        if len(line.strip("\r\n ").split(" ")) != 2:
            raise TokenizerError(
                f"{source}:{number}: expected a merge 'left right' in a BPE codes file, "
                f"got {line!r}"
            )


def bpe_from_codes(codes: str, separator: str = "@@", source: str = "BPE codes", **kw: Any) -> BPE:
    """A subword-nmt BPE from the text of a codes file (`kw`: vocab, glossaries)."""
    _check_codes(codes, source)
    try:
        return BPE(io.StringIO(codes), separator=separator, **kw)
    except (ValueError, IndexError) as exc:
        raise TokenizerError(f"{source}: not a subword-nmt BPE codes file ({exc})") from exc


def bpe_codes_text(bpe: BPE) -> str:
    """The codes file of a BPE object (merges in priority order, version header first)."""
    merges = sorted(bpe.bpe_codes.items(), key=lambda item: item[1])
    header = "#version: " + ".".join(map(str, bpe.version)) + "\n"
    return header + "".join(f"{a} {b}\n" for (a, b), _ in merges)


class Tokenizer:
    """Raw text <-> ids for GNMT (one joint vocabulary for source and target)."""

    def __init__(
        self,
        tokens: Sequence[str],
        bpe: BPE | None,
        src_lang: str = "en",
        tgt_lang: str = "de",
        separator: str = "@@",
    ) -> None:
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            tokens = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.tokens = tokens
        self.index = {}
        for i, tok in enumerate(tokens):
            self.index.setdefault(tok, i)  # first occurrence wins
        self.bpe = bpe
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.separator = separator
        self._moses_tok = sacremoses.MosesTokenizer(lang=src_lang)
        self._moses_detok = sacremoses.MosesDetokenizer(lang=tgt_lang)

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        bpe_codes_path: str | os.PathLike | None,
        src_lang: str = "en",
        tgt_lang: str = "de",
        pad_to: int = 8,
    ) -> Tokenizer:
        """Vocabulary file (+ BPE codes file, needed to encode raw text)."""
        tokens = pad_vocab(list(SPECIALS) + read_vocab(vocab_path), pad_to)
        bpe = None
        if bpe_codes_path is not None:
            path = Path(bpe_codes_path)
            bpe = bpe_from_codes(_read_text(path, "BPE codes"), source=str(path))
        return cls(tokens, bpe, src_lang, tgt_lang)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # --- text -> ids -------------------------------------------------------------
    def moses_tokenize(self, text: str) -> str:
        return self._moses_tok.tokenize(text, return_str=True)

    def apply_bpe(self, tokenized: str) -> str:
        if self.bpe is None:
            raise TokenizerError("this tokenizer has no BPE codes: it cannot encode raw text")
        return self.bpe.process_line(tokenized)

    def segment(self, pieces: str) -> list[int]:
        """A line of space-separated BPE pieces -> [BOS, ids..., EOS]; unknown -> UNK."""
        get = self.index.get
        return [BOS, *(get(p, UNK) for p in pieces.split()), EOS]

    def encode(self, text: str) -> list[int]:
        """Raw text -> [BOS, ids..., EOS]."""
        return self.segment(self.apply_bpe(self.moses_tokenize(text)))

    # --- ids -> text -------------------------------------------------------------
    def join_bpe(self, ids: Iterable[int]) -> str:
        """Ids -> Moses-tokenized text: BPE pieces joined into words, BOS/EOS/PAD
        removed, UNK kept as `<unk>`. Specials are removed after the pieces are joined,
        as NVIDIA's recipe does, so `Haus@@ <s> tür` gives `Haus tür`."""
        text = " ".join(self.tokens[i] for i in ids)
        text = text.replace(self.separator + " ", "").replace(self.separator, "")
        for special in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN):
            text = text.replace(special, "")
        return text.strip()

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text."""
        return self._moses_detok.detokenize(self.join_bpe(ids).split())

    # --- persistence -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data only (strings and lists), so checkpoints load with weights_only."""
        return {
            "tokens": list(self.tokens),
            "bpe_codes": bpe_codes_text(self.bpe) if self.bpe is not None else None,
            "separator": self.separator,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A run's data is encoded with this tokenizer, so a checkpoint it resumes from
        must hold the same vocabulary: checked, never replaced."""
        saved = state["tokens"]
        real = [t for t in self.tokens if not t.startswith("madeupword")]
        if saved != self.tokens and [t for t in saved if not t.startswith("madeupword")] == real:
            raise TokenizerError(
                f"it was trained with this vocabulary padded to {len(saved)} entries (this "
                f"run pads to {self.vocab_size}: fp16 and bf16 pad to a multiple of 8, fp32 "
                "and tf32 do not): resume with the run's --math"
            )
        if saved != self.tokens:
            raise TokenizerError(
                f"it was trained with another vocabulary ({len(saved)} tokens; "
                f"this run's has {self.vocab_size})"
            )

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Tokenizer:
        codes = state.get("bpe_codes")
        separator = state.get("separator", "@@")
        bpe = bpe_from_codes(codes, separator, "checkpoint") if codes else None
        return cls(state["tokens"], bpe, state["src_lang"], state["tgt_lang"], separator)

    @classmethod
    def from_nvidia_state(cls, state: dict[str, Any]) -> Tokenizer:
        """The `tokenizer` entry of NVIDIA's GNMT checkpoints: its pickled subword-nmt
        BPE object, `idx2tok` (id -> token) and `lang` ({'src': .., 'tgt': ..})."""
        idx2tok = state["idx2tok"]
        size = state.get("vocab_size", len(idx2tok))
        # NVIDIA builds idx2tok by inverting tok2idx: a piece listed twice in its
        # vocabulary file keeps only its last id, and the earlier ids have no token.
        tokens = [idx2tok.get(i, UNK_TOKEN) for i in range(size)]
        lang = state.get("lang") or {"src": "en", "tgt": "de"}
        separator = state.get("separator", "@@")
        bpe = state.get("bpe")
        if bpe is not None:
            # Rebuilt from its merges, so a BPE pickled by another subword-nmt version
            # behaves as this version's (and as the codes in our own checkpoints).
            bpe = bpe_from_codes(
                bpe_codes_text(bpe),
                getattr(bpe, "separator", separator),
                "checkpoint",
                vocab=getattr(bpe, "vocab", None),
                glossaries=getattr(bpe, "glossaries", None),
            )
        return cls(tokens, bpe, lang["src"], lang["tgt"], separator)
