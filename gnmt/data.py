"""GNMT data: parallel BPE text to id tensors, length-bucketed batches, inference order.

Training reads the prepared, BPE-encoded files (one sentence per line, source and
target line N a pair) and keeps pairs within the length limits. Batches hold a fixed
number of sentences (as the reference recipe) drawn from one length bucket, so
padding stays small; the order depends only on (seed, epoch), which makes resuming
mid-epoch exact: skip the batches already done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import UserError
from gnmt.tokenizer import PAD, Tokenizer

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """Bad input data; the message names the file and line."""


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (without newlines); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason})") from exc
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


@dataclass
class ParallelData:
    """Id sequences with BOS/EOS: src[i], tgt[i] are 1-D LongTensors."""

    src: list[torch.Tensor]
    tgt: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.src)

    @property
    def src_lengths(self) -> torch.Tensor:
        return torch.tensor([len(s) for s in self.src])

    @property
    def tgt_lengths(self) -> torch.Tensor:
        return torch.tensor([len(t) for t in self.tgt])


def load_parallel(
    src_path: str | os.PathLike,
    tgt_path: str | os.PathLike,
    tokenizer: Tokenizer,
    min_length: int = 0,
    max_length: int | None = None,
) -> ParallelData:
    """Pairs of BPE-encoded lines as ids, keeping those whose lengths (BOS/EOS
    included) lie in [min_length, max_length] on both sides."""
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}"
        )
    data = ParallelData([], [])
    dropped = 0
    for s_line, t_line in zip(src_lines, tgt_lines, strict=True):
        s = torch.tensor(tokenizer.segment(s_line))
        t = torch.tensor(tokenizer.segment(t_line))
        longest, shortest = max(len(s), len(t)), min(len(s), len(t))
        if shortest < min_length or (max_length is not None and longest > max_length):
            dropped += 1
            continue
        data.src.append(s)
        data.tgt.append(t)
    if not data.src:
        raise DataError(f"{src_path}: no sentence pair within lengths {min_length}..{max_length}")
    if dropped:
        log.info(
            "%s: kept %d pairs, dropped %d outside the length limits", src_path, len(data), dropped
        )
    return data


def pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] sequences -> padded [B, max_len] and lengths [B]."""
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


@dataclass
class Batch:
    src: torch.Tensor  # [B, S] with BOS ... EOS
    src_lengths: torch.Tensor  # [B]
    tgt_input: torch.Tensor  # [B, T]: BOS ... (no EOS)
    tgt_output: torch.Tensor  # [B, T]: ... EOS (shifted by one)

    @property
    def tokens(self) -> int:
        """Source plus target tokens, the unit of the recipe's tokens/s."""
        return int(self.src_lengths.sum()) + int((self.tgt_output != PAD).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device, non_blocking=True),
            self.src_lengths.to(device, non_blocking=True),
            self.tgt_input.to(device, non_blocking=True),
            self.tgt_output.to(device, non_blocking=True),
        )


def collate(data: ParallelData, indices: Sequence[int]) -> Batch:
    src, src_lengths = pad([data.src[i] for i in indices])
    tgt, _ = pad([data.tgt[i] for i in indices])
    return Batch(src, src_lengths, tgt[:, :-1], tgt[:, 1:])


def bucketed_batches(
    src_lengths: torch.Tensor,
    tgt_lengths: torch.Tensor,
    global_batch: int,
    seed: int,
    epoch: int,
    num_buckets: int = 5,
    max_length: int | None = None,
) -> list[list[int]]:
    """The epoch's global batches of sample indices, each from one length bucket.

    Pairs go to `num_buckets` buckets by their longer side (BOS and EOS counted), each
    ceil(max_length / num_buckets) long (NVIDIA's width: 10 for the training limit of 50,
    so buckets 0-9, ..., 40-50; `max_length` defaults to the longest pair), are shuffled
    within the bucket and cut into batches of `global_batch` (a bucket's remainder is
    dropped); the batches are then shuffled. Depends only on (seed, epoch).
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    longest = torch.maximum(src_lengths, tgt_lengths)
    limit = int(longest.max()) if max_length is None else max_length
    width = max((limit + num_buckets - 1) // num_buckets, 1)
    bucket = torch.clamp(longest // width, max=num_buckets - 1)
    batches: list[list[int]] = []
    for b in range(num_buckets):
        members = (bucket == b).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        for start in range(0, len(members) - global_batch + 1, global_batch):
            batches.append(members[start : start + global_batch].tolist())
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def train_batches(
    data: ParallelData,
    batch_size: int,
    world_size: int,
    rank: int,
    seed: int,
    epoch: int,
    start: int = 0,
    num_buckets: int = 5,
    max_length: int | None = None,
) -> Iterator[tuple[int, Batch]]:
    """(index, this rank's share) of each global batch of the epoch, from `start` on."""
    batches = bucketed_batches(
        data.src_lengths, data.tgt_lengths, batch_size * world_size, seed, epoch, num_buckets,
        max_length,
    )  # fmt: skip
    for index in range(start, len(batches)):
        mine = batches[index][rank * batch_size : (rank + 1) * batch_size]
        yield index, collate(data, mine)


def batches_per_epoch(
    data: ParallelData,
    batch_size: int,
    world_size: int,
    num_buckets: int = 5,
    max_length: int | None = None,
) -> int:
    return len(
        bucketed_batches(
            data.src_lengths, data.tgt_lengths, batch_size * world_size, 0, 0, num_buckets,
            max_length,
        )
    )  # fmt: skip


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference batches of similar lengths (longest first); callers restore the order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
