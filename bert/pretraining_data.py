"""Pre-training batches from HDF5 shards: one shard in memory at a time, per-rank shards,
exact mid-epoch resume, optional dynamic masking.

Shard format (NVIDIA's layout; one `.hdf5` / `.h5` file per shard, integer datasets of
any width, cast to int64 on load):

    input_ids, input_mask, segment_ids   [N, L]   L = the phase's --max_seq_length
    masked_lm_positions, masked_lm_ids   [N, P]   P <= --max_predictions_per_seq; real
                                                  predictions first, then 0 (position 0
                                                  is [CLS], never a prediction)
    next_sentence_labels                 [N]      1 = segment B is a random one
    attributes (optional)                max_seq_length, max_predictions_per_seq

The masked_lm_* pair may be absent (bert.data writes it so with --no-masking): such
shards are masked at load time, as all are with `dynamic_masking=True` (statically
masked tokens are restored first). Each batch is masked with bert.data.instances'
`mask_tokens`, seeded by the batch's position, so a resumed run masks alike.
Shards with no samples are skipped; token ids beyond the vocabulary are an error.

Order of the stream. Each rank reads an endless stream of epochs. In epoch `e` the shard
files are shuffled with (seed, e) and shard `i` of that order belongs to rank
`i % world_size`; inside a shard the samples are shuffled with (seed, e, shard). With
fewer shards than ranks every rank reads every shard and takes every `world_size`-th
sample of its shuffled order instead, so no rank idles. Over one epoch the ranks
together see every sample exactly once; ranks with more samples per epoch than others
simply reach the next epoch later (training is counted in steps, not epochs).
Batches run across shard and epoch boundaries, so no sample is dropped.

A `Position` (epoch, index of the shard in this rank's order, sample offset in it)
names the next sample; `batches.position` after a batch, saved in a checkpoint and
passed back in, continues the exact same stream.

While a shard is consumed, a background thread reads the next one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from bert.data.instances import mask_tokens, special_token_mask
from common import cli
from common.errors import UserError

SEQUENCE_FIELDS = ("input_ids", "input_mask", "segment_ids")
MASK_FIELDS = ("masked_lm_positions", "masked_lm_ids")
LABEL_FIELD = "next_sentence_labels"
FIELDS = (*SEQUENCE_FIELDS, *MASK_FIELDS, LABEL_FIELD)
SHARD_SUFFIXES = (".hdf5", ".h5")
MASK_PROB = 0.15


class ShardError(UserError, ValueError):
    """A missing, empty, corrupt or ill-shaped shard (the message names the file)."""


# --- the format ---------------------------------------------------------------------------


def write_shard(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one shard: `arrays` maps field names to integer arrays (shapes above)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            f.create_dataset(name, data=np.asarray(values))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def list_shards(input_dir: str | os.PathLike) -> list[Path]:
    """The shard files of `input_dir`, sorted by name."""
    folder = Path(input_dir)
    if not folder.is_dir():
        raise ShardError(f"pre-training data folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix in SHARD_SUFFIXES and p.is_file())
    if not files:
        raise ShardError(
            f"pre-training data folder {folder} holds no shards ({' or '.join(SHARD_SUFFIXES)} files)"
        )
    return files


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    num_samples: int
    seq_length: int
    max_predictions: int | None  # None: no masked_lm_* fields (dynamic masking only)


def inspect_shard(
    path: str | os.PathLike,
    max_seq_length: int,
    max_predictions: int,
    need_masks: bool = True,
) -> ShardInfo:
    """Check one shard's fields, shapes and types against the phase, reading only metadata."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"shard {path} is not a readable HDF5 file: {exc}") from exc
    with f:
        present = [name for name in FIELDS if name in f]
        required = [*SEQUENCE_FIELDS, LABEL_FIELD, *(MASK_FIELDS if need_masks else ())]
        missing = [name for name in required if name not in f]
        if missing:
            raise ShardError(f"shard {path} lacks the field(s) {', '.join(missing)}")
        if (MASK_FIELDS[0] in f) != (MASK_FIELDS[1] in f):
            raise ShardError(f"shard {path} holds only one of {' and '.join(MASK_FIELDS)}")
        shapes = {name: f[name].shape for name in present}
        for name in present:
            if not np.issubdtype(f[name].dtype, np.integer):
                raise ShardError(
                    f"shard {path}: field {name} has type {f[name].dtype}, not integer"
                )
        attrs = dict(f.attrs)
    seq_shape = shapes["input_ids"]
    if len(seq_shape) != 2:
        raise ShardError(f"shard {path}: input_ids has shape {list(seq_shape)}, expected [N, L]")
    n_samples = seq_shape[0]
    for name in SEQUENCE_FIELDS[1:]:
        if shapes[name] != seq_shape:
            raise ShardError(
                f"shard {path}: {name} has shape {list(shapes[name])}, input_ids {list(seq_shape)}"
            )
    if shapes[LABEL_FIELD] != (n_samples,):
        raise ShardError(
            f"shard {path}: {LABEL_FIELD} has shape {list(shapes[LABEL_FIELD])}, "
            f"expected [{n_samples}]"
        )
    length = int(seq_shape[1])
    declared = attrs.get("max_seq_length")
    if length != max_seq_length or (declared is not None and int(declared) != length):
        raise ShardError(
            f"shard {path} holds sequences of length {length}"
            f"{'' if declared is None else f' (attribute max_seq_length {int(declared)})'}, "
            f"but --max_seq_length is {max_seq_length} (phase 1 data is 128, phase 2 data 512)"
        )
    predictions = None
    if MASK_FIELDS[0] in shapes:
        mask_shape = shapes[MASK_FIELDS[0]]
        if (
            len(mask_shape) != 2
            or mask_shape[0] != n_samples
            or shapes[MASK_FIELDS[1]] != mask_shape
        ):
            raise ShardError(
                f"shard {path}: masked_lm_positions {list(mask_shape)} and masked_lm_ids "
                f"{list(shapes[MASK_FIELDS[1]])} must both be [{n_samples}, P]"
            )
        predictions = int(mask_shape[1])
        declared = attrs.get("max_predictions_per_seq")
        if predictions > max_predictions or (
            declared is not None and int(declared) > max_predictions
        ):
            raise ShardError(
                f"shard {path} holds up to {max(predictions, int(declared or 0))} predictions "
                f"per sequence, but --max_predictions_per_seq is {max_predictions}"
            )
    return ShardInfo(path, int(n_samples), length, predictions)


def scan_shards(
    input_dir: str | os.PathLike,
    max_seq_length: int,
    max_predictions: int,
    need_masks: bool = True,
) -> list[ShardInfo]:
    """Check every shard of `input_dir` up front (metadata only); shards with no samples
    are left out. Raises `ShardError` naming the first bad file."""
    infos = [
        inspect_shard(path, max_seq_length, max_predictions, need_masks)
        for path in list_shards(input_dir)
    ]
    kept = [info for info in infos if info.num_samples > 0]
    if not kept:
        raise ShardError(f"every shard in {input_dir} is empty (0 samples)")
    return kept


def read_shard(info: ShardInfo, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """All fields of one shard in memory (their stored integer types)."""
    try:
        with h5py.File(info.path, "r") as f:
            arrays = {name: f[name][()] for name in FIELDS if name in f}
    except (OSError, KeyError) as exc:
        raise ShardError(f"shard {info.path} could not be read: {exc}") from exc
    if vocab_size is not None:
        for name in ("input_ids", "masked_lm_ids"):
            if name in arrays and arrays[name].size and int(arrays[name].max()) >= vocab_size:
                raise ShardError(
                    f"shard {info.path}: {name} holds token id {int(arrays[name].max())}, "
                    f"beyond the model's vocabulary ({vocab_size})"
                )
    return arrays


# --- dynamic masking ----------------------------------------------------------------------


@dataclass(frozen=True)
class MaskingIds:
    """Token ids that masking needs (BERT's uncased vocabulary by default)."""

    cls: int = 101
    sep: int = 102
    mask: int = 103

    @classmethod
    def from_vocab(cls, vocab: dict[str, int]) -> MaskingIds:
        names = {"cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
        missing = [token for token in names.values() if token not in vocab]
        if missing:
            raise ShardError(f"the vocabulary lacks {', '.join(missing)}, needed for masking")
        return cls(**{field: vocab[token] for field, token in names.items()})


def mask_batch(
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    *,
    vocab_size: int,
    max_predictions: int,
    ids: MaskingIds,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT's masking of a batch [B, L] (bert.data.instances.mask_tokens: 15% of each
    instance's tokens, [CLS] and [SEP]s counted, chosen among the others; 80% [MASK],
    10% random, 10% kept) ->
    int64 (input_ids [B, L], masked_lm_positions [B, P], masked_lm_ids [B, P])."""
    special = special_token_mask(input_ids, input_mask, (ids.cls, ids.sep))
    masked, positions, labels = mask_tokens(
        input_ids, special, vocab_size, rng, MASK_PROB, max_predictions, ids.mask,
        lengths=np.asarray(input_mask).sum(-1),
    )  # fmt: skip
    return masked.astype(np.int64), positions.astype(np.int64), labels.astype(np.int64)


def unmask(input_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The original tokens of statically masked samples (for re-masking them dynamically)."""
    out = input_ids.copy()
    rows, slots = np.nonzero(positions)
    out[rows, positions[rows, slots]] = labels[rows, slots]
    return out


# --- the stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """The next sample of a rank's stream: epoch, shard index in its order, offset."""

    epoch: int = 0
    shard: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, int] | None) -> Position:
        return cls(**(values or {}))


def _seeded(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


class PretrainingBatches:
    """An endless iterator of batch dicts of int64 tensors for one rank:
    input_ids, segment_ids, input_mask [B, L]; masked_lm_positions, masked_lm_ids
    [B, max_predictions]; next_sentence_labels [B]. `position` is where the stream
    stands after the last batch handed out."""

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        batch_size: int,
        *,
        max_predictions: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Position | None = None,
        dynamic_masking: bool = False,
        masking_ids: MaskingIds | None = None,
        vocab_size: int | None = None,
        pin_memory: bool = False,
        prefetch: bool = True,
    ) -> None:
        if not shards:
            raise ShardError("no shards to read")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.shards = list(shards)
        self.batch_size = batch_size
        self.max_predictions = max_predictions
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.split_samples = len(self.shards) < world_size
        self.dynamic_masking = dynamic_masking or any(
            s.max_predictions is None for s in self.shards
        )
        self.masking_ids = masking_ids or MaskingIds()
        self.vocab_size = vocab_size
        if self.dynamic_masking and vocab_size is None:
            raise ValueError("dynamic masking needs the vocabulary size")
        self.pin_memory = pin_memory
        self.position = position or Position()
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
        self._pending: tuple[int, concurrent.futures.Future] | None = None
        self._loaded: tuple[tuple[int, int], dict[str, np.ndarray], np.ndarray] | None = None
        if self.split_samples and all(s.num_samples <= rank for s in self.shards):
            raise ShardError(
                f"rank {rank} of {world_size} gets no samples: the {len(self.shards)} shard(s) "
                f"hold fewer samples than there are ranks"
            )

    # Which shard files and samples this rank reads.
    def shard_order(self, epoch: int) -> list[int]:
        """Indices into `shards` that this rank reads in `epoch`, in order."""
        order = _seeded(self.seed, epoch).permutation(len(self.shards)).tolist()
        return order if self.split_samples else order[self.rank :: self.world_size]

    def sample_order(self, epoch: int, shard: int) -> np.ndarray:
        """This rank's samples of shard `shard` (an index into `shards`) in `epoch`."""
        order = _seeded(self.seed, epoch, shard).permutation(self.shards[shard].num_samples)
        return order[self.rank :: self.world_size] if self.split_samples else order

    def samples_per_epoch(self, epoch: int = 0) -> int:
        return sum(len(self.sample_order(epoch, i)) for i in self.shard_order(epoch))

    # Reading, one shard ahead.
    def _read(self, shard: int) -> dict[str, np.ndarray]:
        return read_shard(self.shards[shard], self.vocab_size)

    def _arrays(self, shard: int, next_shard: int) -> dict[str, np.ndarray]:
        if self._pending is not None and self._pending[0] == shard:
            arrays = self._pending[1].result()
        else:
            arrays = self._read(shard)
        self._pending = None
        if self._pool is not None:
            self._pending = (next_shard, self._pool.submit(self._read, next_shard))
        return arrays

    def _shard_at(self, epoch: int, k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self._loaded is None or self._loaded[0] != (epoch, k):
            order = self.shard_order(epoch)
            following = self.shard_order(epoch + 1)[0] if k + 1 == len(order) else order[k + 1]
            arrays = self._arrays(order[k], following)
            self._loaded = ((epoch, k), arrays, self.sample_order(epoch, order[k]))
        return self._loaded[1], self._loaded[2]

    def _skip_exhausted(self, epoch: int, k: int, offset: int) -> Position:
        """The same place in the stream, past shards with nothing left for this rank."""
        order = self.shard_order(epoch)
        while k < len(order) and offset == 0 and self.split_samples:
            if len(self.sample_order(epoch, order[k])):
                break
            k += 1
        return Position(epoch + 1, 0, 0) if k >= len(order) else Position(epoch, k, offset)

    def _take(self, count: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
        """The next `count` samples as (shard arrays, indices) pieces; advances `position`."""
        pieces = []
        epoch, k, offset = self.position.epoch, self.position.shard, self.position.offset
        while count:
            if k >= len(self.shard_order(epoch)):
                epoch, k, offset = epoch + 1, 0, 0
                continue
            arrays, samples = self._shard_at(epoch, k)
            taken = samples[offset : offset + count]
            if len(taken):
                pieces.append((arrays, taken))
            count -= len(taken)
            offset += len(taken)
            if offset >= len(samples):
                k, offset = k + 1, 0
        self.position = self._skip_exhausted(epoch, k, offset)
        return pieces

    def _field(self, pieces, name: str, width: int | None = None) -> np.ndarray:
        parts = []
        for arrays, index in pieces:
            values = arrays[name][index].astype(np.int64)
            if width is not None and values.shape[1] < width:
                values = np.pad(values, ((0, 0), (0, width - values.shape[1])))
            parts.append(values)
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def _input_ids(self, pieces, original: bool) -> np.ndarray:
        """input_ids of the pieces; with `original`, statically masked tokens restored."""
        parts = []
        for arrays, index in pieces:
            ids = arrays["input_ids"][index].astype(np.int64)
            if original and MASK_FIELDS[0] in arrays:
                ids = unmask(ids, arrays[MASK_FIELDS[0]][index], arrays[MASK_FIELDS[1]][index])
            parts.append(ids)
        return np.concatenate(parts)

    def __next__(self) -> dict[str, torch.Tensor]:
        start = self.position
        pieces = self._take(self.batch_size)
        batch = {
            name: self._field(pieces, name) for name in ("segment_ids", "input_mask", LABEL_FIELD)
        }
        input_ids = self._input_ids(pieces, original=self.dynamic_masking)
        if self.dynamic_masking:
            # Seeded by where the batch starts: the same masks after a resume.
            input_ids, positions, labels = mask_batch(
                input_ids,
                batch["input_mask"],
                vocab_size=self.vocab_size,
                max_predictions=self.max_predictions,
                ids=self.masking_ids,
                rng=_seeded(self.seed, self.rank, *asdict(start).values()),
            )
        else:
            positions = self._field(pieces, MASK_FIELDS[0], self.max_predictions)
            labels = self._field(pieces, MASK_FIELDS[1], self.max_predictions)
        batch.update(input_ids=input_ids, masked_lm_positions=positions, masked_lm_ids=labels)
        batch = {name: torch.from_numpy(values) for name, values in batch.items()}
        if self.pin_memory:
            batch = {name: t.pin_memory() for name, t in batch.items()}
        return batch

    def close(self) -> None:
        """Stop the prefetch thread (a read in flight finishes first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = None


# --- generated data for tests and demos ---------------------------------------------------


def synthetic_shards(
    out_dir: str | os.PathLike,
    *,
    num_shards: int = 4,
    samples_per_shard: int = 64,
    seq_length: int = 32,
    max_predictions: int = 5,
    vocab_size: int = 64,
    num_patterns: int = 8,
    seed: int = 0,
    with_masks: bool = True,
) -> list[Path]:
    """Write GENERATED (not real) shards that a small BERT can learn: every sequence is
    one of `num_patterns` fixed token patterns, so the masked tokens are predictable
    from the rest. Ids 0-4 are [PAD], [UNK], [CLS], [SEP], [MASK] (see `synthetic_vocab`).
    Sentence B follows A (label 0) or comes from another pattern (label 1)."""
    rng = np.random.default_rng(seed)
    ids = MaskingIds(cls=2, sep=3, mask=4)
    half = (seq_length - 3) // 2
    patterns = rng.integers(5, vocab_size, size=(num_patterns, 2 * half))
    paths = []
    for shard in range(num_shards):
        n = samples_per_shard
        which = rng.integers(0, num_patterns, size=n)
        random_next = rng.integers(0, 2, size=n)
        other = (which + rng.integers(1, num_patterns, size=n)) % num_patterns
        tokens = np.zeros((n, seq_length), dtype=np.int64)
        segments = np.zeros_like(tokens)
        mask = np.zeros_like(tokens)
        a = patterns[which, :half]
        b = np.where(random_next[:, None] == 1, patterns[other, half:], patterns[which, half:])
        row = np.concatenate(
            [np.full((n, 1), ids.cls), a, np.full((n, 1), ids.sep), b, np.full((n, 1), ids.sep)],
            axis=1,
        )
        tokens[:, : row.shape[1]] = row
        mask[:, : row.shape[1]] = 1
        segments[:, half + 2 : row.shape[1]] = 1
        arrays = {
            "input_ids": tokens,
            "input_mask": mask,
            "segment_ids": segments,
            "next_sentence_labels": random_next,
        }
        if with_masks:
            masked, positions, labels = mask_batch(
                tokens,
                mask,
                vocab_size=vocab_size,
                max_predictions=max_predictions,
                ids=ids,
                rng=_seeded(seed, shard),
            )
            arrays.update(input_ids=masked, masked_lm_positions=positions, masked_lm_ids=labels)
        arrays = {k: v.astype(np.int16) for k, v in arrays.items()}
        attrs = {"max_seq_length": seq_length}
        if with_masks:
            attrs["max_predictions_per_seq"] = max_predictions
        paths.append(
            write_shard(Path(out_dir) / f"synthetic_shard_{shard:03d}.hdf5", arrays, attrs)
        )
    return paths


def synthetic_vocab(vocab_size: int) -> list[str]:
    """The vocabulary of `synthetic_shards`: five specials, then made-up word pieces."""
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
        f"tok{i}" for i in range(5, vocab_size)
    ]


MAX_SYNTHETIC_VOCAB = 2**15  # ids are stored as int16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m bert.pretraining_data",
        description="Write GENERATED pre-training shards (learnable token patterns) and "
        "their vocab.txt, for demos and tests.",
    )
    p.add_argument("out_dir", type=Path, help="folder for the shards and vocab.txt")
    p.add_argument("--num_shards", type=cli.positive_int, default=4, help="files to write")
    p.add_argument(
        "--samples_per_shard", type=cli.positive_int, default=256, help="sequences per file"
    )
    p.add_argument(
        "--max_seq_length",
        type=cli.positive_int,
        default=64,
        help="tokens per sequence (at least 5: [CLS] a [SEP] b [SEP])",
    )
    p.add_argument(
        "--max_predictions_per_seq",
        type=cli.positive_int,
        default=10,
        help="masked positions per sequence",
    )
    p.add_argument(
        "--vocab_size",
        type=cli.positive_int,
        default=128,
        help=f"tokens, the 5 special ones included (6 to {MAX_SYNTHETIC_VOCAB})",
    )
    p.add_argument(
        "--num_patterns", type=cli.positive_int, default=16, help="distinct sequences (2 or more)"
    )
    p.add_argument("--seed", type=cli.nonnegative_int, default=12345, help="same seed, same files")
    p.add_argument("--no_masks", action="store_true", help="leave masking to --dynamic_masking")
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sizes `synthetic_shards` cannot work with, refused before anything is written."""
    cli.check_args(
        p,
        f"--max_seq_length {args.max_seq_length} is too short: a sequence needs at least 5 "
        "tokens ([CLS] a [SEP] b [SEP])"
        if args.max_seq_length < 5
        else None,
        f"--vocab_size {args.vocab_size} must be between 6 and {MAX_SYNTHETIC_VOCAB} (the 5 "
        "special tokens and at least one word; ids are stored as int16)"
        if not 6 <= args.vocab_size <= MAX_SYNTHETIC_VOCAB
        else None,
        f"--num_patterns {args.num_patterns} must be at least 2 (random next sentences come "
        "from another pattern)"
        if args.num_patterns < 2
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = synthetic_shards(
        args.out_dir,
        num_shards=args.num_shards,
        samples_per_shard=args.samples_per_shard,
        seq_length=args.max_seq_length,
        max_predictions=args.max_predictions_per_seq,
        vocab_size=args.vocab_size,
        num_patterns=args.num_patterns,
        seed=args.seed,
        with_masks=not args.no_masks,
    )
    vocab = args.out_dir / "vocab.txt"
    vocab.write_text("\n".join(synthetic_vocab(args.vocab_size)) + "\n", encoding="utf-8")
    print(f"wrote {len(paths)} generated shards and {vocab} to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
