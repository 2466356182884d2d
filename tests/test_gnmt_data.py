"""GNMT data: reading, length filtering, bucketed batches, resume positions, collation."""

import math

import pytest
import torch

from gnmt import data
from gnmt.tokenizer import BOS, EOS, PAD


class WordTokenizer:
    """Stands in for the BPE tokenizer: ids are word lengths + 4 (enough for batching)."""

    def segment(self, line):
        return [BOS, *[len(w) + 4 for w in line.split()], EOS]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_lines_errors_name_file_and_line(tmp_path):
    with pytest.raises(data.DataError, match=r"missing\.txt: no such file"):
        data.read_lines(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(data.DataError, match=r"empty\.txt: file is empty"):
        data.read_lines(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(data.DataError, match=r"bad\.txt:3: not valid UTF-8"):
        data.read_lines(tmp_path / "bad.txt")


def test_load_parallel_filters_by_length_on_both_sides(tmp_path):
    src = write(tmp_path / "s", ["a b", "a b c d e f", "a", "a b c"])
    tgt = write(tmp_path / "t", ["x y", "x", "x y z w v u t", "x y z"])
    pairs = data.load_parallel(src, tgt, WordTokenizer(), max_length=5)
    assert [len(s) for s in pairs.src] == [4, 5]  # BOS/EOS count toward the limit
    assert [len(t) for t in pairs.tgt] == [4, 5]


def test_load_parallel_line_count_mismatch(tmp_path):
    src, tgt = write(tmp_path / "s", ["a", "b"]), write(tmp_path / "t", ["x"])
    with pytest.raises(data.DataError, match="has 2 lines but .* has 1"):
        data.load_parallel(src, tgt, WordTokenizer())


def test_collate_shifts_target_and_pads():
    pairs = data.ParallelData(
        [torch.tensor([BOS, 5, EOS]), torch.tensor([BOS, 5, 6, 7, EOS])],
        [torch.tensor([BOS, 8, 9, EOS]), torch.tensor([BOS, 8, EOS])],
    )
    b = data.collate(pairs, [0, 1])
    assert b.src.tolist() == [[BOS, 5, EOS, PAD, PAD], [BOS, 5, 6, 7, EOS]]
    assert b.src_lengths.tolist() == [3, 5]
    assert b.tgt_input.tolist() == [[BOS, 8, 9], [BOS, 8, EOS]]
    assert b.tgt_output.tolist() == [[8, 9, EOS], [8, EOS, PAD]]
    assert b.tokens == 8 + 5  # source tokens + target tokens (EOS, not BOS)


def lengths(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 50, (n,), generator=g), torch.randint(3, 50, (n,), generator=g)


def test_bucketed_batches_are_deterministic_per_epoch_and_bucketed():
    src, tgt = lengths(1000)
    a = data.bucketed_batches(src, tgt, 32, seed=1, epoch=0)
    assert a == data.bucketed_batches(src, tgt, 32, seed=1, epoch=0)
    assert a != data.bucketed_batches(src, tgt, 32, seed=1, epoch=1)
    assert all(len(b) == 32 for b in a)
    flat = [i for b in a for i in b]
    assert len(flat) == len(set(flat))  # no sample twice in an epoch
    longest = torch.maximum(src, tgt)
    width = math.ceil(int(longest.max()) / 5)
    for b in a:  # every batch comes from a single length bucket
        assert len({min(int(longest[i]) // width, 4) for i in b}) == 1


def test_buckets_are_nvidias_for_the_training_length_limit():
    """Width ceil(limit / buckets): with the limit of 50, buckets 0-9, 10-19, 20-29,
    30-39 and 40-50 (pairs of exactly 50 join the last)."""
    longest = torch.tensor([9, 10, 19, 20, 29, 30, 39, 40, 50] * 4)
    batches = data.bucketed_batches(longest, longest, 8, seed=1, epoch=0, max_length=50)
    got = sorted(sorted(int(longest[i]) for i in b) for b in batches)
    # the four 9s are a bucket's remainder, dropped
    assert got == [[a] * 4 + [b] * 4 for a, b in ((10, 19), (20, 29), (30, 39), (40, 50))]


def test_ranks_get_disjoint_shares_of_each_global_batch():
    src, tgt = lengths(300)
    pairs = data.ParallelData(
        [torch.zeros(int(n)) for n in src], [torch.zeros(int(n)) for n in tgt]
    )
    batches = data.bucketed_batches(src, tgt, 16, seed=3, epoch=2)
    shares = [list(data.train_batches(pairs, 8, 2, r, seed=3, epoch=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(batches)
    for (i0, b0), (i1, b1) in zip(*shares, strict=True):
        assert i0 == i1
        assert b0.src.size(0) == b1.src.size(0) == 8
        assert b0.src_lengths.tolist() == [int(src[i]) for i in batches[i0][:8]]
        assert b1.src_lengths.tolist() == [int(src[i]) for i in batches[i0][8:]]


def test_resuming_at_a_batch_index_continues_the_same_stream():
    src, tgt = lengths(200)
    pairs = data.ParallelData(
        [torch.arange(int(n)) for n in src], [torch.arange(int(n)) for n in tgt]
    )
    whole = list(data.train_batches(pairs, 10, 1, 0, seed=7, epoch=1))
    resumed = list(data.train_batches(pairs, 10, 1, 0, seed=7, epoch=1, start=5))
    assert [i for i, _ in resumed] == [i for i, _ in whole[5:]]
    for (_, a), (_, b) in zip(whole[5:], resumed, strict=True):
        assert torch.equal(a.src, b.src) and torch.equal(a.tgt_output, b.tgt_output)


def test_length_sorted_batches_cover_every_index_once():
    lens = [5, 1, 9, 3, 7, 2, 8]
    batches = data.length_sorted_batches(lens, 3)
    assert batches == [[2, 6, 4], [0, 3, 5], [1]]
