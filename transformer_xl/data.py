"""Transformer-XL data: vocabularies, encoded corpora and the language-model iterators.

    corpus = Corpus.load("data/wikitext-103", "wt103")     # builds cache-wt103.pt once
    it = corpus.iterator("train", batch_size=256, tgt_len=192, device="cuda",
                         world_size=env.world_size, rank=env.rank, epoch=1, start=0)
    for data, target, seq_len in it:                       # data, target: [T, b] (time-major)
        ...

Datasets (`DATASETS`) follow the reference recipe:

- wt103: word level, `<eos>` after every line, vocabulary counted on train.txt only;
- enwik8, text8: character level as written by `transformer_xl.getdata` (one token per
  byte / character, separated by spaces); no `<eos>` is added, so line breaks are not
  modelled, as in the reference; vocabulary counted on train, valid and test;
- lm1b: vocabulary read from `1b_word_vocab.txt`, every sentence wrapped in `<S> ... <S>`;
  training streams the ~100 shard files, one at a time (`LMMultiFileIterator`);
  valid.txt / test.txt are held in memory as sentences (`LMSentenceIterator`).

Vocabulary order: special symbols first, then by descending count, ties in order of
first occurrence (`collections.Counter.most_common`); adaptive-softmax cutoffs
(`cutoffs_for`) rely on that order.

Cache: `Corpus.load` writes `cache-<dataset>.pt` (plain tensors, vocabulary symbols and
the size and mtime of every source file; `torch.load(weights_only=True)` reads it)
atomically into the data folder. A later load uses it unless a source file changed.

Iterators are deterministic functions of (seed, epoch): shuffles, `roll` offsets and
`varlen` lengths come from generators seeded with them, never from global state. Each
iterator starts at batch `start` of its epoch, and the batches it yields from there are
exactly the tail of the full epoch, so a training run resumes mid-epoch by counting
batches. `batch_size` is always the global batch: rank r of `world_size` gets the
streams (batch columns) [r*b, (r+1)*b) with b = batch_size // world_size, so the global
batch is the same for any number of processes.
"""

from __future__ import annotations

import glob
import logging
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import distributed
from common.atomic import atomic_write
from common.errors import UserError
from common.logging import progress

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "Corpus",
    "DataError",
    "DatasetSpec",
    "LMMultiFileIterator",
    "LMOrderedIterator",
    "LMSentenceIterator",
    "Vocab",
    "count_file",
    "cutoffs_for",
    "encode_file",
    "encode_sentences",
    "tie_projs_for",
    "tokenize",
]

log = logging.getLogger(__name__)

EOS = "<eos>"
DOUBLE_EOS = "<S>"  # lm1b: the sentence boundary symbol, before and after each sentence
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
CACHE_FORMAT = "transformer_xl.corpus/1"

# --varlen, as in the reference: tgt_len (p=0.95) or tgt_len/2 as the mean of a normal
# draw with this std, clipped to [VARLEN_MIN, tgt_len + VARLEN_MAX_DEVIATION * std].
VARLEN_STD = 5
VARLEN_MIN = 5
VARLEN_MAX_DEVIATION = 3

# Independent random streams derived from (seed, epoch).
_ROLL, _VARLEN, _SHARDS, _SENTENCES = range(4)


class DataError(UserError, ValueError):
    """Bad or missing data; the message names the file and, where it applies, the line."""


# --- datasets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset's folder is read (the reference recipe's choices)."""

    special: tuple[str, ...] = ()  # symbols placed first in a counted vocabulary
    lower_case: bool = False
    add_eos: bool = True  # append <eos> to every line
    add_double_eos: bool = False  # wrap every line in <S> ... <S> (sentence-level data)
    vocab_splits: tuple[str, ...] = SPLITS  # splits counted to build the vocabulary
    vocab_file: str | None = None  # a fixed vocabulary instead of a counted one
    train_shards: str | None = None  # glob of a streamed training set, else train.txt


DATASETS: dict[str, DatasetSpec] = {
    "wt103": DatasetSpec(special=(EOS,), vocab_splits=("train",)),
    "lm1b": DatasetSpec(
        add_double_eos=True,
        vocab_splits=(),
        vocab_file="1b_word_vocab.txt",
        train_shards=(
            "1-billion-word-language-modeling-benchmark-r13output/"
            "training-monolingual.tokenized.shuffled/news.en-*"
        ),
    ),
    "enwik8": DatasetSpec(lower_case=True, add_eos=False),
    "text8": DatasetSpec(lower_case=True, add_eos=False),
}
DATASET_NAMES = tuple(DATASETS)

# Adaptive softmax of the reference: cutoffs, and whether the cluster projections are tied.
_ADAPTIVE = {
    "wt103": ([19997, 39997, 199997], True),
    "lm1b": ([59997, 99997, 639997], False),
}


def cutoffs_for(dataset: str, n_token: int) -> list[int]:
    """Adaptive-softmax cutoffs of the reference for `dataset` ([] for char-level data).

    Cutoffs not below `n_token` are dropped, so a small corpus in wt103 format gets a
    plain (or shorter adaptive) softmax.
    """
    cutoffs, _ = _ADAPTIVE.get(dataset, ([], False))
    return [c for c in cutoffs if c < n_token]


def tie_projs_for(dataset: str, n_token: int) -> list[bool]:
    """Projection tying per cluster: [False] for the head, then tied for wt103, not for lm1b."""
    _, tied = _ADAPTIVE.get(dataset, ([], False))
    return [False] + [tied] * len(cutoffs_for(dataset, n_token))


# --- reading text ------------------------------------------------------------------------


def _first_bad_utf8(path: Path) -> tuple[int, int]:
    """(line, byte column), both 1-based, of the first byte sequence that is not UTF-8."""
    with open(path, "rb") as f:
        # A newline byte never occurs inside a multi-byte UTF-8 sequence: lines decode alone.
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return lineno, err.start + 1
    return 0, 0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")


def _numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a UTF-8 file (universal newlines)."""
    path = Path(path)
    _check_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError:
        lineno, column = _first_bad_utf8(path)
        raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {column} of the line)") from None


def tokenize(line: str, lower_case: bool = False) -> list[str]:
    """Whitespace-separated symbols of one line."""
    line = line.strip()
    return (line.lower() if lower_case else line).split()


# --- vocabulary --------------------------------------------------------------------------


class Vocab:
    """Symbols and their ids (the position in `symbols`).

    `unk` is the symbol that unknown words map to; it is None when `symbols` lacks it,
    and then an unknown word is an error.
    """

    def __init__(self, symbols: Iterable[str], unk: str | None = UNK):
        self.symbols: list[str] = list(symbols)
        self._ids: dict[str, int] = {}
        for i, sym in enumerate(self.symbols):
            if sym in self._ids:
                raise DataError(
                    f"vocabulary symbol {sym!r} appears twice (ids {self._ids[sym]}, {i})"
                )
            self._ids[sym] = i
        self.unk: str | None = unk if unk in self._ids else None
        self.unk_id: int | None = self._ids[unk] if self.unk is not None else None

    @classmethod
    def build(
        cls,
        counter: Counter,
        special: Sequence[str] = (EOS,),
        min_freq: int = 0,
        max_size: int | None = None,
        unk: str | None = UNK,
    ) -> Vocab:
        """`special` first, then the `max_size` most common symbols with count >= `min_freq`."""
        symbols = dict.fromkeys(special)
        for sym, count in counter.most_common(max_size):
            if count < min_freq:
                break
            symbols.setdefault(sym)
        return cls(symbols, unk)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocab:
        """One symbol per line, in id order (first column; later columns such as counts are
        ignored; blank lines skipped). The unknown symbol is `<unk>` or lm1b's `<UNK>`."""
        symbols: dict[str, None] = {}
        for _, line in _numbered_lines(path):
            fields = line.split()
            if fields:
                symbols.setdefault(fields[0])
        if not symbols:
            raise DataError(f"{path}: vocabulary file is empty")
        return cls(symbols, unk=UNK if UNK in symbols else "<UNK>")

    def __len__(self) -> int:
        return len(self.symbols)

    def state_dict(self) -> dict[str, Any]:
        return {"symbols": list(self.symbols), "unk": self.unk}

    def load_state_dict(self, state: dict[str, Any] | list[str]) -> None:
        """The corpus is numbered with this vocabulary, so a checkpoint it resumes from must
        hold the same symbols: checked, never replaced (version 1 saved the bare list)."""
        saved = state["symbols"] if isinstance(state, dict) else state
        if saved != self.symbols:
            raise DataError(
                f"it was trained with another vocabulary ({len(saved)} symbols; "
                f"this corpus has {len(self)})"
            )

    def __contains__(self, sym: str) -> bool:
        return sym in self._ids

    def index(self, sym: str) -> int:
        """Id of `sym`; the unknown symbol's id for a word outside the vocabulary."""
        i = self._ids.get(sym, self.unk_id)
        if i is None:
            raise DataError(f"symbol {sym!r} is not in the vocabulary, which has no unknown symbol")
        return i

    def _special_id(self, sym: str) -> int:
        i = self._ids.get(sym)
        if i is None:
            raise DataError(f"the vocabulary has no {sym!r} symbol")
        return i

    def encode(
        self, symbols: list[str], add_eos: bool = True, add_double_eos: bool = False
    ) -> list[int]:
        """Ids of `symbols`, wrapped in <S> ... <S> (`add_double_eos`) or followed by <eos>."""
        if self.unk_id is not None:
            get, unk = self._ids.get, self.unk_id
            ids = [get(sym, unk) for sym in symbols]
        else:
            try:
                ids = [self._ids[sym] for sym in symbols]
            except KeyError as err:
                self.index(err.args[0])  # raises the DataError naming the symbol
                raise
        if add_double_eos:
            s = self._special_id(DOUBLE_EOS)
            return [s, *ids, s]
        if add_eos:
            ids.append(self._special_id(EOS))
        return ids

    def encode_line(
        self,
        line: str,
        add_eos: bool = True,
        add_double_eos: bool = False,
        lower_case: bool = False,
    ) -> list[int]:
        """Ids of one line of text (see `encode`)."""
        return self.encode(tokenize(line, lower_case), add_eos, add_double_eos)

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.symbols):
                raise DataError(f"id {i} is outside the vocabulary of {len(self.symbols)} symbols")
            out.append(self.symbols[i])
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocab:
        return cls(state["symbols"], state.get("unk", UNK))


# --- counting and encoding files ---------------------------------------------------------


def _reading(path: str | Path, doing: str) -> Iterator[tuple[int, str]]:
    """`_numbered_lines(path)` with progress in bytes (a bar, or lines in a log file)."""
    size = Path(path).stat().st_size if Path(path).is_file() else None
    with progress(total=size, desc=f"{doing} {Path(path).name}", unit="B", unit_scale=True) as bar:
        for number, line in _numbered_lines(path):
            yield number, line
            bar.update(len(line.encode("utf-8")) + 1)


def _empty(path: str | Path) -> DataError:
    return DataError(f"{path}: file is empty (no tokens)")


def count_file(
    path: str | Path, lower_case: bool = False, add_eos: bool = True, counter: Counter | None = None
) -> Counter:
    """Symbol counts of a text file, streamed line by line (added to `counter` if given)."""
    counter = Counter() if counter is None else counter
    n_tokens = 0
    for _, line in _reading(path, "counting"):
        symbols = tokenize(line, lower_case)
        n_tokens += len(symbols)
        if add_eos:
            symbols.append(EOS)
        counter.update(symbols)
    if not n_tokens:
        raise _empty(path)
    return counter


def _encode_lines(
    path: str | Path,
    vocab: Vocab,
    add_eos: bool,
    add_double_eos: bool,
    lower_case: bool,
    lengths: array | None,
) -> torch.Tensor:
    ids = array("q")
    n_tokens = 0
    for lineno, line in _reading(path, "encoding"):
        symbols = tokenize(line, lower_case)
        n_tokens += len(symbols)
        try:
            encoded = vocab.encode(symbols, add_eos, add_double_eos)
        except DataError as err:
            raise DataError(f"{path}:{lineno}: {err}") from None
        ids.extend(encoded)
        if lengths is not None:
            lengths.append(len(encoded))
    if not n_tokens:
        raise _empty(path)
    return torch.from_numpy(np.frombuffer(ids, dtype=np.int64))


def encode_file(
    path: str | Path,
    vocab: Vocab,
    add_eos: bool = True,
    add_double_eos: bool = False,
    lower_case: bool = False,
) -> torch.Tensor:
    """All lines of a text file as one LongTensor [N] of ids, in file order."""
    return _encode_lines(path, vocab, add_eos, add_double_eos, lower_case, None)


def encode_sentences(
    path: str | Path,
    vocab: Vocab,
    add_eos: bool = True,
    add_double_eos: bool = False,
    lower_case: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N], lengths [S]): every line a sentence; the ids of all, and each one's length."""
    lengths = array("q")
    ids = _encode_lines(path, vocab, add_eos, add_double_eos, lower_case, lengths)
    return ids, torch.from_numpy(np.frombuffer(lengths, dtype=np.int64))


# --- iterators: shared pieces ------------------------------------------------------------


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([k % 2**64 for k in keys])


def _local_columns(batch_size: int, world_size: int, rank: int) -> range:
    """The global batch columns that `rank` owns."""
    if batch_size < 1 or world_size < 1 or batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of world_size {world_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    local = batch_size // world_size
    return range(rank * local, (rank + 1) * local)


def _check_lengths(tgt_len: int, ext_len: int, start: int) -> None:
    if tgt_len < 1:
        raise ValueError(f"tgt_len must be >= 1, got {tgt_len}")
    if ext_len < 0:
        raise ValueError(f"ext_len must be >= 0, got {ext_len}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")


class LMOrderedIterator:
    """One ordered token stream cut into `batch_size` parallel streams of segments.

    The data (1-D, N tokens) is cut to n_step * batch_size tokens and viewed as
    batch_size contiguous streams of n_step tokens: column j of the time-major
    [n_step, batch_size] matrix holds tokens [j*n_step, (j+1)*n_step). This rank keeps
    its columns (see the module docstring). A batch at position i is

        data   [seq_len + ctx, b]: the ctx = min(ext_len, i) tokens before i, then i..i+seq_len-1
        target [seq_len, b]:       tokens i+1..i+seq_len (data shifted by one)

    Fixed length: i = 0, tgt_len, 2*tgt_len, ...; the last batch may be shorter.
    `varlen`: each batch's length is drawn as in the reference (see VARLEN_*), from a
    generator seeded by (seed, epoch). `roll`: every stream is rotated by its own
    random offset in [0, n_step), drawn per epoch from (seed, epoch), over the global
    columns, so the global batch still does not depend on the world size.

    Iterating yields (data, target, seq_len) for batches start .. n_batch-1, every time.
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        tgt_len: int,
        device: str | torch.device = "cpu",
        ext_len: int = 0,
        world_size: int = 1,
        rank: int = 0,
        roll: bool = False,
        varlen: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        name: str = "data",
    ):
        if data.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D tensor of ids, got shape {tuple(data.shape)}")
        _check_lengths(tgt_len, ext_len, start)
        columns = _local_columns(batch_size, world_size, rank)
        self.batch_size, self.tgt_len, self.ext_len = batch_size, tgt_len, ext_len
        self.device, self.epoch, self.start = device, epoch, start
        self.n_step = data.numel() // batch_size
        if self.n_step < tgt_len + 1:
            raise DataError(
                f"{name}: {data.numel()} tokens are fewer than one segment of batch_size "
                f"{batch_size} x (tgt_len {tgt_len} + 1) = {batch_size * (tgt_len + 1)} tokens; "
                "lower the batch size or tgt_len"
            )
        streams = data[: self.n_step * batch_size].view(batch_size, self.n_step)
        streams = streams[columns.start : columns.stop]
        if roll:
            shifts = _rng(seed, epoch, _ROLL).integers(0, self.n_step, size=batch_size)
            self.data = self._rolled(streams, shifts[columns.start : columns.stop].tolist())
        else:
            self.data = streams.t().contiguous()  # [n_step, b]
        self.plan = self._plan(varlen, seed, epoch)  # (position, length) of every batch
        self.n_batch = len(self.plan)
        if start > self.n_batch:
            raise ValueError(
                f"{name}: start {start} is past the {self.n_batch} batches of an epoch"
            )

    @staticmethod
    def _rolled(streams: torch.Tensor, shifts: list[int]) -> torch.Tensor:
        """[n_step, b] with stream j starting at its token shifts[j] and wrapping around."""
        n_step = streams.size(1)
        out = torch.empty(n_step, streams.size(0), dtype=streams.dtype)
        for j, s in enumerate(shifts):
            out[: n_step - s, j] = streams[j, s:]
            out[n_step - s :, j] = streams[j, :s]
        return out

    def _plan(self, varlen: bool, seed: int, epoch: int) -> list[tuple[int, int]]:
        last = self.n_step - 1  # positions before `last` have a target
        if not varlen:
            return [(i, self.tgt_len) for i in range(0, last, self.tgt_len)]
        rng = _rng(seed, epoch, _VARLEN)
        max_len = self.tgt_len + VARLEN_MAX_DEVIATION * VARLEN_STD
        plan, i = [], 0
        while i < last:
            mean = self.tgt_len if rng.random() < 0.95 else self.tgt_len / 2
            length = min(max_len, max(VARLEN_MIN, int(rng.normal(mean, VARLEN_STD))))
            plan.append((i, length))
            i += length
        return plan

    def get_batch(
        self, i: int, tgt_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(data [ctx + seq_len, b], target [seq_len, b], seq_len) for the segment at position i."""
        seq_len = min(tgt_len or self.tgt_len, self.n_step - 1 - i)
        begin = max(0, i - self.ext_len)
        data = self.data[begin : i + seq_len].to(self.device)
        target = self.data[i + 1 : i + 1 + seq_len].to(self.device)
        return data, target, seq_len

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for i, length in self.plan[self.start :]:
            yield self.get_batch(i, length)


# --- iterators over sentences ------------------------------------------------------------

# One piece of a stream: (sentence id, offset of its first input token, number of tokens).
Piece = tuple[int, int, int]


def _pack_plan(
    lengths: Sequence[int], order: Iterable[int], batch_size: int, tgt_len: int, own: range
) -> Iterator[list[list[Piece]]]:
    """Lay sentences end to end in `batch_size` streams, batch after batch.

    As in the reference, the columns of a batch fill in turn, each taking the next
    sentence in `order` when its current one is used up; a sentence of n tokens gives
    n - 1 (input, target) pairs, so the boundary symbol that ends one sentence is never
    asked to predict the one that starts the next. The batch that finds no sentence
    left is dropped and the plan ends. Yields, per batch, the pieces of the `own`
    columns; the others are only counted, which is what makes skipping cheap.
    """
    sentences = iter(order)
    current = [0] * batch_size  # sentence id per column
    offset = [0] * batch_size  # its next input token
    left = [0] * batch_size  # tokens from `offset` to its end
    while True:
        pieces: list[list[Piece]] = [[] for _ in own]
        for col in range(batch_size):
            need = tgt_len
            while need:
                if left[col] <= 1:
                    sid = next(sentences, None)
                    if sid is None:
                        return
                    current[col], offset[col], left[col] = sid, 0, lengths[sid]
                    continue
                n = min(left[col] - 1, need)
                if col in own:
                    pieces[col - own.start].append((current[col], offset[col], n))
                offset[col] += n
                left[col] -= n
                need -= n
        yield pieces


def _count_batches(
    lengths: Sequence[int], order: Iterable[int], batch_size: int, tgt_len: int
) -> int:
    return sum(1 for _ in _pack_plan(lengths, order, batch_size, tgt_len, range(0)))


def _packed_batches(
    plans: Iterator[list[list[Piece]]],
    sentence: Callable[[int], np.ndarray],
    start: int,
    tgt_len: int,
    ext_len: int,
    device: str | torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Tensors for the plans from index `start` on: (data [ctx + tgt_len, b], target [tgt_len, b]).

    The context (ext_len > 0) is the last ext_len rows of the previous batch's data, as
    in the reference; to rebuild it on a resume the few batches before `start` are
    materialised too.
    """
    rebuild_from = start - (math.ceil(ext_len / tgt_len) if ext_len else 0)
    cache: dict[int, np.ndarray] = {}  # sentences in use, encoded once
    previous = None
    for j, pieces in enumerate(plans):
        if j < rebuild_from:
            continue
        inp = np.empty((tgt_len, len(pieces)), dtype=np.int64)
        target = np.empty_like(inp)
        for col, col_pieces in enumerate(pieces):
            row = 0
            for sid, off, n in col_pieces:
                ids = cache.get(sid)
                if ids is None:
                    ids = cache[sid] = sentence(sid)
                inp[row : row + n, col] = ids[off : off + n]
                target[row : row + n, col] = ids[off + 1 : off + 1 + n]
                if off + n + 1 >= len(ids):
                    del cache[sid]
                row += n
        data = inp
        if ext_len and previous is not None:
            data = np.concatenate([previous[-min(len(previous), ext_len) :], inp])
        previous = data
        if j >= start:
            yield torch.from_numpy(data).to(device), torch.from_numpy(target).to(device), tgt_len


class LMSentenceIterator:
    """Sentences held in memory packed into `batch_size` streams (lm1b valid and test).

    `tokens` [N] holds the sentences end to end, `lengths` [S] their lengths. Sentences
    are taken in file order (or shuffled per (seed, epoch) with `shuffle`) and laid end
    to end in the streams (see `_pack_plan`); every batch is (data [ctx + tgt_len, b],
    target [tgt_len, b], tgt_len). Iterating yields batches start .. n_batch-1.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        batch_size: int,
        tgt_len: int,
        device: str | torch.device = "cpu",
        ext_len: int = 0,
        world_size: int = 1,
        rank: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        name: str = "data",
    ):
        _check_lengths(tgt_len, ext_len, start)
        self.columns = _local_columns(batch_size, world_size, rank)
        self.batch_size, self.tgt_len, self.ext_len = batch_size, tgt_len, ext_len
        self.device, self.epoch, self.start = device, epoch, start
        self.tokens = tokens.numpy()
        self.lengths = lengths.tolist()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).tolist()
        n = len(self.lengths)
        self.order = _rng(seed, epoch, _SENTENCES).permutation(n).tolist() if shuffle else range(n)
        self.n_batch = _count_batches(self.lengths, self.order, batch_size, tgt_len)
        if self.n_batch == 0:
            raise DataError(
                f"{name}: {len(self.tokens)} tokens in {n} sentences do not fill one batch of "
                f"batch_size {batch_size} x tgt_len {tgt_len}; lower the batch size or tgt_len"
            )
        if start > self.n_batch:
            raise ValueError(
                f"{name}: start {start} is past the {self.n_batch} batches of an epoch"
            )

    def _sentence(self, sid: int) -> np.ndarray:
        return self.tokens[self.offsets[sid] : self.offsets[sid + 1]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        plans = _pack_plan(self.lengths, self.order, self.batch_size, self.tgt_len, self.columns)
        yield from _packed_batches(
            plans, self._sentence, self.start, self.tgt_len, self.ext_len, self.device
        )


class LMMultiFileIterator:
    """A training set in many shard files (lm1b), streamed one shard at a time.

    Per epoch the shard order is shuffled with (seed, epoch), and the sentences of each
    shard with (seed, epoch, shard). Each shard is packed on its own (see `_pack_plan`;
    the streams restart at every shard and its last partial batch is dropped, as in the
    reference). Every rank reads every shard but builds only its own columns, so ranks
    see disjoint streams, yield the same number of batches, and the global batch does
    not depend on the world size. A shard's sentences are encoded lazily, only those
    that land in this rank's columns.

    Resuming: `start` counts batches from the beginning of the epoch. Skipping needs
    only sentence lengths, which are cached per shard file in `lengths_cache` (pass the
    same dict to the next epoch's iterator; `Corpus` does), so a resume costs one pass
    of counting, not of training. `n_batch` (computed on first use) needs the lengths
    of every shard: the first call reads all of them.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        vocab: Vocab,
        batch_size: int,
        tgt_len: int,
        device: str | torch.device = "cpu",
        ext_len: int = 0,
        world_size: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        add_eos: bool = False,
        add_double_eos: bool = True,
        lower_case: bool = False,
        lengths_cache: dict | None = None,
        name: str = "train",
    ):
        if not paths:
            raise DataError(f"{name}: no shard files")
        _check_lengths(tgt_len, ext_len, start)
        self.columns = _local_columns(batch_size, world_size, rank)
        self.paths = [Path(p) for p in paths]
        self.vocab = vocab
        self.batch_size, self.tgt_len, self.ext_len = batch_size, tgt_len, ext_len
        self.device, self.seed, self.epoch, self.start = device, seed, epoch, start
        self.shuffle, self.name = shuffle, name
        self.encoding = (add_eos, add_double_eos, lower_case)
        self.lengths_cache = {} if lengths_cache is None else lengths_cache
        n = len(self.paths)
        self.order = (
            _rng(seed, epoch, _SHARDS).permutation(n).tolist() if shuffle else list(range(n))
        )
        self._n_batch: int | None = None

    def _key(self, shard: int) -> tuple:
        stat = self.paths[shard].stat()
        return (str(self.paths[shard]), stat.st_size, stat.st_mtime_ns, self.encoding)

    def _read(self, shard: int) -> tuple[list[str], list[int]]:
        """The shard's lines and the length of each encoded sentence."""
        add_eos, add_double_eos, _ = self.encoding
        extra = 2 if add_double_eos else int(add_eos)
        lines = [line for _, line in _numbered_lines(self.paths[shard])]
        words = [len(line.split()) for line in lines]
        if not any(words):
            raise _empty(self.paths[shard])
        lengths = [n + extra for n in words]
        self.lengths_cache[self._key(shard)] = lengths
        return lines, lengths

    def _lengths(self, shard: int) -> list[int]:
        cached = self.lengths_cache.get(self._key(shard))
        return cached if cached is not None else self._read(shard)[1]

    def _sentence_order(self, shard: int, n: int) -> list[int] | range:
        if not self.shuffle:
            return range(n)
        return _rng(self.seed, self.epoch, _SENTENCES, shard).permutation(n).tolist()

    def _shard_batches(self, shard: int, lengths: list[int]) -> int:
        order = self._sentence_order(shard, len(lengths))
        return _count_batches(lengths, order, self.batch_size, self.tgt_len)

    @property
    def n_batch(self) -> int:
        """Batches in this epoch (reads every shard's lengths the first time)."""
        if self._n_batch is None:
            self._n_batch = sum(self._shard_batches(s, self._lengths(s)) for s in self.order)
        return self._n_batch

    def _encoder(self, shard: int, lines: list[str]) -> Callable[[int], np.ndarray]:
        add_eos, add_double_eos, lower_case = self.encoding
        path = self.paths[shard]

        def sentence(sid: int) -> np.ndarray:
            try:
                ids = self.vocab.encode_line(lines[sid], add_eos, add_double_eos, lower_case)
            except DataError as err:
                raise DataError(f"{path}:{sid + 1}: {err}") from None
            return np.asarray(ids, dtype=np.int64)

        return sentence

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        skip = self.start
        yielded = False
        for shard in self.order:
            if skip:
                n = self._shard_batches(shard, self._lengths(shard))
                if skip >= n:
                    skip -= n
                    continue
            lines, lengths = self._read(shard)
            order = self._sentence_order(shard, len(lengths))
            plans = _pack_plan(lengths, order, self.batch_size, self.tgt_len, self.columns)
            encoder = self._encoder(shard, lines)
            for batch in _packed_batches(
                plans, encoder, skip, self.tgt_len, self.ext_len, self.device
            ):
                yielded = True
                yield batch
            skip = 0
        if skip:
            raise ValueError(
                f"{self.name}: start {self.start} is past the end of epoch {self.epoch}"
            )
        if not yielded and self.start == 0:
            raise DataError(
                f"{self.name}: no shard holds enough sentences for one batch of batch_size "
                f"{self.batch_size} x tgt_len {self.tgt_len}; lower the batch size or tgt_len"
            )


# --- corpus ------------------------------------------------------------------------------


def _fingerprint(paths: dict[str, Path]) -> dict[str, list[int]]:
    out = {}
    for key, path in paths.items():
        _check_file(path)
        stat = path.stat()
        out[key] = [stat.st_size, stat.st_mtime_ns]
    return out


def _to_int32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32)  # halves the cache; every vocabulary here fits


class Corpus:
    """One dataset: its vocabulary and encoded splits.

    `train`, `valid`, `test`: LongTensor [N] of ids in file order; for lm1b, `train` is
    the sorted list of shard files and `valid`/`test` hold sentences end to end, with
    their lengths in `lengths[split]`.
    """

    def __init__(
        self,
        dataset: str,
        data_dir: Path,
        vocab: Vocab,
        train: torch.Tensor | list[Path],
        valid: torch.Tensor,
        test: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ):
        self.dataset, self.data_dir, self.spec = dataset, data_dir, DATASETS[dataset]
        self.vocab, self.train, self.valid, self.test = vocab, train, valid, test
        self.lengths = lengths or {}
        self._shard_lengths: dict = {}  # shared by the training iterators of every epoch

    def unknown_rate(self, split: str) -> float | None:
        """The share of `split`'s tokens that are the unknown symbol (text outside the
        vocabulary); None when the vocabulary has no unknown symbol."""
        ids = getattr(self, split)
        if self.vocab.unk_id is None or not isinstance(ids, torch.Tensor) or not len(ids):
            return None
        return (ids == self.vocab.unk_id).sum().item() / len(ids)

    @classmethod
    def load(
        cls, data_dir: str | Path, dataset: str, cache: bool = True, vocab: Vocab | None = None
    ) -> Corpus:
        """Read `data_dir` (the layout `transformer_xl.getdata` writes) for `dataset`.

        With `cache`, `cache-<dataset>.pt` in `data_dir` is used when its source files are
        unchanged, else (re)built. With `vocab` (e.g. a checkpoint's), the splits are
        encoded with it; the cache is used only when it holds the same vocabulary and is
        not rewritten. Under a process group rank 0 loads first and the others then read
        its cache.
        """
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        spec = DATASETS[dataset]
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(
                f"{data_dir}: data folder not found (transformer_xl/scripts/getdata.sh fetches it)"
            )
        sources = {split: data_dir / f"{split}.txt" for split in SPLITS}
        shards: list[Path] = []
        if spec.train_shards:
            del sources["train"]
            pattern = str(data_dir / spec.train_shards)
            shards = sorted(Path(p) for p in glob.glob(pattern))
            if not shards:
                raise DataError(f"{pattern}: no training shard files match")
        if spec.vocab_file:
            sources["vocab"] = data_dir / spec.vocab_file
        fingerprint = _fingerprint(sources)
        cache_path = data_dir / f"cache-{dataset}.pt"

        waits = cache and distributed.is_initialized()
        if waits and distributed.get_rank() != 0:
            distributed.barrier()  # rank 0 writes the cache first
        state = cls._read_cache(cache_path, dataset, fingerprint) if cache else None
        if state is not None and vocab is not None and state["symbols"] != vocab.symbols:
            log.info("%s holds another vocabulary; encoding with the given one", cache_path)
            state = None
        if state is None:
            state = cls._build(spec, sources, vocab)
            state.update(format=CACHE_FORMAT, dataset=dataset, sources=fingerprint)
            if cache and vocab is None:
                try:
                    with atomic_write(cache_path, "wb") as f:
                        torch.save(state, f)
                    log.info("wrote %s", cache_path)
                except OSError as err:  # e.g. a read-only data mount: work without a cache
                    log.warning("cannot write %s (%s); the corpus is not cached", cache_path, err)
        if waits and distributed.get_rank() == 0:
            distributed.barrier()

        splits = {name: t.long() for name, t in state["splits"].items()}
        return cls(
            dataset,
            data_dir,
            vocab if vocab is not None else Vocab(state["symbols"], state["unk"]),
            shards if spec.train_shards else splits["train"],
            splits["valid"],
            splits["test"],
            {name: t.long() for name, t in state["lengths"].items()},
        )

    @staticmethod
    def _read_cache(path: Path, dataset: str, fingerprint: dict) -> dict | None:
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a foreign or damaged file: rebuild rather than fail
            log.warning("ignoring unreadable cache %s (%s)", path, err)
            return None
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            log.warning("ignoring %s: not a corpus cache of this version", path)
            return None
        if state.get("dataset") != dataset or state.get("sources") != fingerprint:
            log.info("%s is stale (source files changed); rebuilding", path)
            return None
        return state

    @staticmethod
    def _build(spec: DatasetSpec, sources: dict[str, Path], vocab: Vocab | None) -> dict:
        if vocab is None and spec.vocab_file:
            vocab = Vocab.from_file(sources["vocab"])
        elif vocab is None:
            counter: Counter = Counter()
            for split in spec.vocab_splits:
                # <eos> is a special symbol where it is used: it need not be counted.
                count_file(sources[split], spec.lower_case, add_eos=False, counter=counter)
            vocab = Vocab.build(counter, special=spec.special)
        log.info("vocabulary: %d symbols", len(vocab))
        splits, lengths = {}, {}
        for split in SPLITS:
            if split not in sources:
                continue
            options = (spec.add_eos, spec.add_double_eos, spec.lower_case)
            if spec.train_shards:  # sentence-level dataset: keep sentence boundaries
                ids, lens = encode_sentences(sources[split], vocab, *options)
                lengths[split] = _to_int32(lens)
            else:
                ids = encode_file(sources[split], vocab, *options)
            splits[split] = _to_int32(ids)
            log.info("%s: %d tokens", sources[split], ids.numel())
        return {"symbols": vocab.symbols, "unk": vocab.unk, "splits": splits, "lengths": lengths}

    def iterator(
        self,
        split: str,
        batch_size: int,
        tgt_len: int,
        device: str | torch.device = "cpu",
        ext_len: int = 0,
        **kw: Any,
    ) -> LMOrderedIterator | LMSentenceIterator | LMMultiFileIterator:
        """The iterator the reference uses for `split` (keyword arguments pass through:
        world_size, rank, seed, epoch, start, and roll / varlen for ordered datasets)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        data = getattr(self, split)
        if isinstance(data, torch.Tensor) and split not in self.lengths:
            return LMOrderedIterator(data, batch_size, tgt_len, device, ext_len, name=split, **kw)
        for option in ("roll", "varlen"):
            if kw.pop(option, False):
                raise ValueError(f"--{option} applies to ordered datasets, not {self.dataset}")
        if split == "train":
            spec = self.spec
            return LMMultiFileIterator(
                data,
                self.vocab,
                batch_size,
                tgt_len,
                device,
                ext_len,
                add_eos=spec.add_eos,
                add_double_eos=spec.add_double_eos,
                lower_case=spec.lower_case,
                lengths_cache=self._shard_lengths,
                name=split,
                **kw,
            )
        return LMSentenceIterator(
            data, self.lengths[split], batch_size, tgt_len, device, ext_len, name=split, **kw
        )
