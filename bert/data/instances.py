"""Masked LM + next-sentence-prediction instances from a text shard, written to HDF5.

Input: one sentence per line, a blank line after each document (what `shard.py` writes).
Each sentence is WordPiece-tokenized once; sentences without tokens and documents without
sentences are dropped.

Instances, with the rules of BERT's reference data generator (our own implementation):
- `dupe_factor` passes over the documents; each pass cuts every document anew (and masks
  anew). A document is cut into chunks of consecutive sentences of about
  `max_seq_length - 3` tokens; with probability `short_seq_prob` a document's target
  length is instead drawn uniformly from [2, max_seq_length - 3].
- A chunk of k >= 2 sentences is split after a uniform 1..k-1 sentences into A and B.
  With probability 0.5 (and always when the chunk has one sentence) B is replaced by
  sentences from a random start in another document, long enough to fill the target
  length, and the chunk's sentences after A go back to the document for its next chunk.
- While the pair is longer than `max_seq_length - 3` tokens, a token is removed from the
  longer side (B on a tie), at its front or back with equal probability.
- Instance: [CLS] A [SEP] B [SEP], segment ids 0 up to and including the first [SEP],
  1 after; padded with id 0 to `max_seq_length`. All instances of a file are shuffled.
- Masking (`mask_tokens`): as Google's create_pretraining_data, the instance gets
  min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob))) masked
  positions, where `tokens` is the whole instance, [CLS] and both [SEP]s included
  (round: half to even, as Python's), chosen among the tokens other than [CLS]/[SEP]
  (fewer when there are not that many); each becomes [MASK] with probability
  0.8, a uniformly random vocabulary id with 0.1, and stays with 0.1. Whole-word
  masking chooses words (a token and the "##" pieces after it) instead of tokens and
  skips a word that would overshoot the count. Positions come sorted.

HDF5 layout (the field layout of NVIDIA's BERT data, so either loads in either trainer):

    input_ids             [N, L] int32   token ids, 0-padded
    input_mask            [N, L] int8    1 for real tokens, 0 for padding
    segment_ids           [N, L] int8    0 for [CLS] A [SEP], 1 for B [SEP]
    masked_lm_positions   [N, P] int32   sorted positions of masked tokens, 0-padded
    masked_lm_ids         [N, P] int32   original ids at those positions, 0-padded
    next_sentence_labels  [N]    int8    1: B is a random segment, 0: B follows A
                                         (Google's and NVIDIA's convention, also that of
                                         Hugging Face's next_sentence_label)

L = max_seq_length, P = max_predictions_per_seq; position 0 ([CLS]) is never masked, so a
0 in masked_lm_positions marks padding. With masking off (`masking=False`) the two
masked_lm_* datasets are absent and the attribute `masked` is False: the trainer masks
each batch with `mask_tokens`. File attributes: max_seq_length, max_predictions_per_seq,
masked_lm_prob, short_seq_prob, dupe_factor, seed, do_lower_case, whole_word_masking,
masked, vocab_size, vocab_sha256 (of the vocabulary file's bytes), next_sentence_label
(the convention in words) and source (the input's folder and file name,
e.g. "training/shard_00000.txt").

Randomness: one numpy Generator per input file, seeded from (seed, CRC-32 of the input's
folder and file name, as in `source`), so a file's output depends only on its own content, name, the vocabulary and
the settings: never on the number of worker processes or on other files.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import hashlib
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bert.data import DataError, utf8_lines
from bert.tokenization import CONTINUATION, FullTokenizer
from common.atomic import replace_durably, temp_path
from common.logging import progress
from common.parallel import map_chunks

log = logging.getLogger(__name__)

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
NEXT_SENTENCE_LABEL = "1: B is a random segment, 0: B follows A"
ROWS_PER_WRITE = 4096
MASKED_FIELDS = ("masked_lm_positions", "masked_lm_ids")


@dataclass(frozen=True)
class InstanceConfig:
    """The settings of instance creation; defaults are BERT phase 1."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 5
    seed: int = 12345
    whole_word_masking: bool = False
    masking: bool = True
    do_lower_case: bool = True

    def __post_init__(self) -> None:
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length must be >= 5, got {self.max_seq_length}")
        if not 0 < self.max_predictions_per_seq <= self.max_seq_length - 3:
            raise ValueError(
                f"max_predictions_per_seq must be in [1, max_seq_length - 3], "
                f"got {self.max_predictions_per_seq}"
            )
        if not 0.0 < self.masked_lm_prob <= 1.0 or not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError("masked_lm_prob must be in (0, 1] and short_seq_prob in [0, 1]")
        if self.dupe_factor < 1 or self.seed < 0:
            raise ValueError(
                f"dupe_factor must be >= 1 and seed >= 0, got {self.dupe_factor}, {self.seed}"
            )


def output_dir_name(cfg: InstanceConfig) -> str:
    """NVIDIA's folder name for a dataset, e.g. hdf5_lower_case_1_seq_len_128_max_pred_20_
    masked_lm_prob_0.15_random_seed_12345_dupe_factor_5 (+ _whole_word_masking,
    + _unmasked)."""
    name = (
        f"hdf5_lower_case_{int(cfg.do_lower_case)}_seq_len_{cfg.max_seq_length}"
        f"_max_pred_{cfg.max_predictions_per_seq}_masked_lm_prob_{cfg.masked_lm_prob}"
        f"_random_seed_{cfg.seed}_dupe_factor_{cfg.dupe_factor}"
    )
    if cfg.whole_word_masking:
        name += "_whole_word_masking"
    if not cfg.masking:
        name += "_unmasked"
    return name


# --- masking ---------------------------------------------------------------------------


def word_start_table(vocab: dict[str, int]) -> np.ndarray:
    """[V] bool: whether token id v starts a word (is not a "##" continuation piece)."""
    table = np.ones(max(vocab.values()) + 1, dtype=bool)
    for token, index in vocab.items():
        if token.startswith(CONTINUATION):
            table[index] = False
    return table


def special_token_mask(input_ids: np.ndarray, input_mask: np.ndarray, special_ids) -> np.ndarray:
    """True where a token must never be masked: padding and the `special_ids` ([CLS], [SEP])."""
    return (np.asarray(input_mask) == 0) | np.isin(np.asarray(input_ids), list(special_ids))


def _choose_positions(
    candidates: np.ndarray, starts: np.ndarray | None, count: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` of the candidate positions, in whole words when `starts` is given."""
    if starts is None:
        return np.sort(candidates[rng.permutation(len(candidates))[:count]])
    # A unit is a word: a word-start token and the continuation pieces after it. A
    # candidate after a non-candidate ([CLS], [SEP]) opens a unit even if it is "##".
    opens = starts[candidates] | (np.diff(candidates, prepend=-2) != 1)
    unit_starts = np.flatnonzero(opens)
    unit_ends = np.append(unit_starts[1:], len(candidates))
    chosen: list[np.ndarray] = []
    total = 0
    for unit in rng.permutation(len(unit_starts)).tolist():
        if total >= count:
            break
        size = unit_ends[unit] - unit_starts[unit]
        if total + size > count:
            continue
        chosen.append(candidates[unit_starts[unit] : unit_ends[unit]])
        total += size
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _mask_rows(
    ids: np.ndarray,
    special: np.ndarray,
    vocab_size: int,
    rng: np.random.Generator,
    masked_lm_prob: float,
    max_predictions: int,
    mask_id: int,
    starts: np.ndarray | None,
    lengths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masked = ids.copy()
    positions = np.zeros((ids.shape[0], max_predictions), dtype=np.int32)
    labels = np.zeros((ids.shape[0], max_predictions), dtype=np.int32)
    for row in range(ids.shape[0]):
        candidates = np.flatnonzero(~special[row])
        if len(candidates) == 0:
            continue
        # The reference counts the whole instance ([CLS], [SEP]s included), not only the
        # candidates: shorter instances get one position more than a candidates' count.
        count = min(max_predictions, max(1, round(int(lengths[row]) * masked_lm_prob)))
        chosen = _choose_positions(candidates, None if starts is None else starts[row], count, rng)
        draw = rng.random(len(chosen))
        random_ids = rng.integers(0, vocab_size, len(chosen))
        originals = ids[row, chosen]
        replacement = np.where(draw < 0.8, mask_id, np.where(draw < 0.9, random_ids, originals))
        masked[row, chosen] = replacement
        positions[row, : len(chosen)] = chosen
        labels[row, : len(chosen)] = originals
    return masked, positions, labels


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x) -> np.ndarray | None:
    if x is None:
        return None
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


def mask_tokens(
    input_ids,
    special_mask,
    vocab_size: int,
    rng: np.random.Generator,
    masked_lm_prob: float,
    max_predictions: int,
    mask_id: int,
    whole_word_starts=None,
    lengths=None,
):
    """BERT's masking of a batch (module docstring), for instance creation and for masking
    at load time.

    input_ids [B, L] or [L] (numpy array or torch tensor); special_mask, whole_word_starts:
    bool of the same shape (True: never mask / token starts a word; see `special_token_mask`
    and `word_start_table`); whole_word_starts None masks tokens independently.
    lengths [B] or a number: each instance's tokens, [CLS] and [SEP]s included (its
    input_mask sum), which set the number of masked positions; None: every row is
    unpadded (its full length L).
    Returns (masked_ids like input_ids, positions [B, P], labels [B, P]) with P =
    max_predictions, positions sorted and 0-padded, labels the original ids (0-padded):
    numpy int32, or torch int64 on the input's device for a torch input. The same
    generator state gives the same result.
    """
    is_torch = _is_torch(input_ids)
    ids, special, starts = map(_to_numpy, (input_ids, special_mask, whole_word_starts))
    single = ids.ndim == 1
    if single:
        ids, special = ids[None], special[None]
        starts = None if starts is None else starts[None]
    lengths = np.broadcast_to(
        ids.shape[1] if lengths is None else _to_numpy(lengths), ids.shape[:1]
    )
    masked, positions, labels = _mask_rows(
        ids,
        special.astype(bool),
        vocab_size,
        rng,
        masked_lm_prob,
        max_predictions,
        mask_id,
        None if starts is None else starts.astype(bool),
        lengths,
    )
    if single:
        masked, positions, labels = masked[0], positions[0], labels[0]
    if is_torch:
        import torch

        device = input_ids.device
        return (
            torch.from_numpy(masked).to(device),
            torch.from_numpy(positions).long().to(device),
            torch.from_numpy(labels).long().to(device),
        )
    return masked, positions, labels


# --- documents -> segment pairs ----------------------------------------------------------


@dataclass
class TokenizedShard:
    """A shard's token ids back to back: sentence s is tokens[sentences[s]:sentences[s+1]],
    document d is sentences documents[d] .. documents[d+1] - 1."""

    tokens: np.ndarray  # [T] int32
    sentences: np.ndarray  # [S + 1] int64 token offsets
    documents: np.ndarray  # [D + 1] int64 sentence offsets


def tokenize_shard(path: str | os.PathLike, tokenizer: FullTokenizer) -> TokenizedShard:
    """Read and tokenize a shard; raises `DataError` when it holds no document."""
    tokens = array.array("i")  # 4 bytes a token: a shard has tens of millions
    sentence_ends: list[int] = []
    doc_starts = [0]
    for line in utf8_lines(path):
        if line.strip():
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
            if ids:
                tokens.extend(ids)
                sentence_ends.append(len(tokens))
        elif len(sentence_ends) > doc_starts[-1]:
            doc_starts.append(len(sentence_ends))
    if len(sentence_ends) > doc_starts[-1]:
        doc_starts.append(len(sentence_ends))
    if len(doc_starts) < 2:
        raise DataError(f"{path}: no documents (no sentence has a token)")
    return TokenizedShard(
        tokens=np.frombuffer(tokens, dtype=np.int32),
        sentences=np.asarray([0, *sentence_ends], dtype=np.int64),
        documents=np.asarray(doc_starts, dtype=np.int64),
    )


def _truncation(len_a: int, len_b: int, limit: int) -> tuple[int, int]:
    """Tokens to remove from A and from B to fit `limit`: always from the longer side, B
    on a tie (so the sides first even out, then alternate B, A, B, ...)."""
    excess = max(len_a + len_b - limit, 0)
    cut_a = min(max(len_a - len_b, 0), excess)
    cut_b = min(max(len_b - len_a, 0), excess - cut_a)
    rest = excess - cut_a - cut_b
    return cut_a + rest // 2, cut_b + (rest + 1) // 2


def _trim(lo: int, hi: int, cut: int, rng: np.random.Generator) -> tuple[int, int]:
    """Remove `cut` tokens from [lo, hi), each from the front or the back by a coin flip."""
    front = int(rng.binomial(cut, 0.5)) if cut else 0
    return lo + front, hi - (cut - front)


def _document_pairs(
    shard: TokenizedShard, doc: int, cfg: InstanceConfig, rng: np.random.Generator
) -> list[tuple[int, int, int, int, int]]:
    """One pass over document `doc`: (a_lo, a_hi, b_lo, b_hi, is_random_next) token spans."""
    sent, docs = shard.sentences, shard.documents
    n_docs = len(docs) - 1
    max_tokens = cfg.max_seq_length - 3
    target = max_tokens
    if rng.random() < cfg.short_seq_prob:
        target = int(rng.integers(2, max_tokens + 1))
    pairs = []
    first, end = int(docs[doc]), int(docs[doc + 1])
    chunk_start, i = first, first
    while i < end:
        if i == end - 1 or sent[i + 1] - sent[chunk_start] >= target:
            n_chunk = i + 1 - chunk_start
            a_sentences = int(rng.integers(1, n_chunk)) if n_chunk >= 2 else 1
            a_lo, a_hi = int(sent[chunk_start]), int(sent[chunk_start + a_sentences])
            if n_chunk == 1 or rng.random() < 0.5:
                is_random = 1
                other = doc
                if n_docs > 1:  # uniform over the other documents
                    other = int(rng.integers(0, n_docs - 1))
                    other += other >= doc
                j = int(rng.integers(docs[other], docs[other + 1]))
                b_lo = int(sent[j])
                while True:
                    j += 1
                    if j == docs[other + 1] or sent[j] - b_lo >= target - (a_hi - a_lo):
                        break
                b_hi = int(sent[j])
                i = chunk_start + a_sentences - 1  # the unused sentences go back
            else:
                is_random = 0
                b_lo, b_hi = a_hi, int(sent[i + 1])
            cut_a, cut_b = _truncation(a_hi - a_lo, b_hi - b_lo, max_tokens)
            a_lo, a_hi = _trim(a_lo, a_hi, cut_a, rng)
            b_lo, b_hi = _trim(b_lo, b_hi, cut_b, rng)
            pairs.append((a_lo, a_hi, b_lo, b_hi, is_random))
            chunk_start = i + 1
        i += 1
    return pairs


def create_pairs(
    shard: TokenizedShard, cfg: InstanceConfig, rng: np.random.Generator
) -> np.ndarray:
    """[N, 5] int64 (a_lo, a_hi, b_lo, b_hi, is_random_next) over `dupe_factor` passes,
    shuffled."""
    pairs = [
        pair
        for _ in range(cfg.dupe_factor)
        for doc in range(len(shard.documents) - 1)
        for pair in _document_pairs(shard, doc, cfg, rng)
    ]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 5)[rng.permutation(len(pairs))]


# --- pairs -> arrays -> HDF5 -------------------------------------------------------------


@dataclass
class Vocabulary:
    """What instance creation needs from the vocabulary."""

    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    word_starts: np.ndarray  # [V] bool
    sha256: str

    @classmethod
    def from_tokenizer(cls, tokenizer: FullTokenizer) -> Vocabulary:
        missing = [t for t in (CLS, SEP, MASK) if t not in tokenizer.vocab]
        if missing:
            raise DataError(f"vocabulary {tokenizer.vocab_file} lacks {', '.join(missing)}")
        return cls(
            size=tokenizer.vocab_size,
            cls_id=tokenizer.vocab[CLS],
            sep_id=tokenizer.vocab[SEP],
            mask_id=tokenizer.vocab[MASK],
            word_starts=word_start_table(tokenizer.vocab),
            sha256=hashlib.sha256(Path(tokenizer.vocab_file).read_bytes()).hexdigest(),
        )


def build_arrays(
    shard: TokenizedShard, pairs: np.ndarray, max_seq_length: int, vocab: Vocabulary
) -> dict[str, np.ndarray]:
    """input_ids, input_mask, segment_ids [n, L] and next_sentence_labels [n] of `pairs`."""
    n = len(pairs)
    input_ids = np.zeros((n, max_seq_length), dtype=np.int32)
    segment_ids = np.zeros((n, max_seq_length), dtype=np.int8)
    input_mask = np.zeros((n, max_seq_length), dtype=np.int8)
    for row, (a_lo, a_hi, b_lo, b_hi, _) in enumerate(pairs.tolist()):
        len_a, len_b = a_hi - a_lo, b_hi - b_lo
        sep_a, sep_b = len_a + 1, len_a + len_b + 2
        input_ids[row, 0] = vocab.cls_id
        input_ids[row, 1:sep_a] = shard.tokens[a_lo:a_hi]
        input_ids[row, sep_a] = vocab.sep_id
        input_ids[row, sep_a + 1 : sep_b] = shard.tokens[b_lo:b_hi]
        input_ids[row, sep_b] = vocab.sep_id
        segment_ids[row, sep_a + 1 : sep_b + 1] = 1
        input_mask[row, : sep_b + 1] = 1
    return {
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": segment_ids,
        "next_sentence_labels": pairs[:, 4].astype(np.int8),
    }


def file_attributes(cfg: InstanceConfig, vocab: Vocabulary, source: str) -> dict[str, Any]:
    attrs = dataclasses.asdict(cfg)
    attrs["masked"] = attrs.pop("masking")
    attrs.update(
        vocab_size=vocab.size,
        vocab_sha256=vocab.sha256,
        next_sentence_label=NEXT_SENTENCE_LABEL,
        source=source,
    )
    return attrs


def _differing_attributes(path: Path, expected: dict[str, Any]) -> list[str]:
    """Names of the attributes of HDF5 file `path` that differ from `expected`."""
    try:
        with h5py.File(path, "r") as f:
            found = dict(f.attrs)
    except OSError as exc:
        raise DataError(
            f"{path} exists but is not a readable HDF5 file ({exc}): delete it"
        ) from None
    return [key for key, value in expected.items() if key not in found or found[key] != value]


def _source_name(input_path: Path) -> str:
    """'training/shard_00000.txt': the input's folder and file name."""
    return f"{input_path.parent.name}/{input_path.name}"


def _rng_for(input_path: Path, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(_source_name(input_path).encode("utf-8"))])


def write_instances(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    tokenizer: FullTokenizer,
    cfg: InstanceConfig,
) -> int:
    """Create the instances of one text shard and write them to one HDF5 file (module
    docstring); returns their number. An existing output made with the same settings is
    kept (0 returned); one made with others raises `DataError`."""
    input_path, output_path = Path(input_path), Path(output_path)
    vocab = Vocabulary.from_tokenizer(tokenizer)
    attrs = file_attributes(cfg, vocab, _source_name(input_path))
    if output_path.exists():
        differing = _differing_attributes(output_path, attrs)
        if differing:
            raise DataError(
                f"{output_path} exists but was made with other settings ({', '.join(differing)}"
                "): delete it or choose another output folder"
            )
        return 0
    rng = _rng_for(input_path, cfg.seed)
    shard = tokenize_shard(input_path, tokenizer)
    pairs = create_pairs(shard, cfg, rng)
    n, length, preds = len(pairs), cfg.max_seq_length, cfg.max_predictions_per_seq
    shapes = {
        "input_ids": ((n, length), "i4"),
        "input_mask": ((n, length), "i1"),
        "segment_ids": ((n, length), "i1"),
        "masked_lm_positions": ((n, preds), "i4"),
        "masked_lm_ids": ((n, preds), "i4"),
        "next_sentence_labels": ((n,), "i1"),
    }
    if not cfg.masking:
        for field in MASKED_FIELDS:
            del shapes[field]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(output_path)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs)
            datasets = {
                name: f.create_dataset(name, shape, dtype, compression="gzip")
                for name, (shape, dtype) in shapes.items()
            }
            for lo in range(0, n, ROWS_PER_WRITE):
                block = build_arrays(shard, pairs[lo : lo + ROWS_PER_WRITE], length, vocab)
                if cfg.masking:
                    special = special_token_mask(
                        block["input_ids"], block["input_mask"], (vocab.cls_id, vocab.sep_id)
                    )
                    starts = (
                        vocab.word_starts[block["input_ids"]] if cfg.whole_word_masking else None
                    )
                    ids, positions, labels = mask_tokens(
                        block["input_ids"],
                        special,
                        vocab.size,
                        rng,
                        cfg.masked_lm_prob,
                        preds,
                        vocab.mask_id,
                        starts,
                        lengths=block["input_mask"].sum(1),
                    )
                    block.update(input_ids=ids, masked_lm_positions=positions, masked_lm_ids=labels)
                for name, values in block.items():
                    datasets[name][lo : lo + len(values)] = values
        replace_durably(tmp, output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("%s: %d instances -> %s", input_path, n, output_path)
    return n


def _make_writer(vocab_file: str, cfg: InstanceConfig) -> Callable[[list], list[int]]:
    tokenizer = FullTokenizer(vocab_file, do_lower_case=cfg.do_lower_case)
    return lambda tasks: [write_instances(i, o, tokenizer, cfg) for i, o in tasks]


def create_instance_files(
    inputs: list[Path],
    outputs: list[Path],
    vocab_file: str | os.PathLike,
    cfg: InstanceConfig,
    workers: int = 1,
) -> int:
    """`write_instances` for each (input, output) pair, in `workers` processes; returns
    the number of instances written (files already present count 0)."""
    missing = [p for p in inputs if not Path(p).is_file()]
    if missing:
        raise DataError(f"input shard {missing[0]} does not exist")
    make_fn = functools.partial(_make_writer, str(vocab_file), cfg)
    tasks = list(zip(inputs, outputs, strict=True))
    workers = min(workers, len(tasks))
    written = 0
    with progress(total=len(tasks), desc="creating instances", unit="shards") as bar:
        for counts in map_chunks(make_fn, tasks, workers, 1):
            written += sum(counts)
            bar.update(len(counts))
    return written
