"""Transformer-XL data: vocabulary, encoding, iterators, corpus cache, and getdata against
a local HTTP server (tiny generated archives with the real layouts, not the real data)."""

import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.file_server import serve_files
from tests.helpers import ROOT, clean_env
from transformer_xl import data, getdata
from transformer_xl.data import (
    Corpus,
    DataError,
    LMMultiFileIterator,
    LMOrderedIterator,
    LMSentenceIterator,
    Vocab,
    count_file,
    cutoffs_for,
    encode_file,
    encode_sentences,
    tie_projs_for,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def batches(iterator):
    return [(d.tolist(), t.tolist(), n) for d, t, n in iterator]


# --- vocabulary ---------------------------------------------------------------------------


def test_vocab_build_puts_specials_first_then_by_count_ties_in_first_seen_order():
    # a: 3, b: 2, then c, d, e and <eos> once each
    counter = Counter(["b", "a", "c", "a", "d", "b", "e", "a", "<eos>"])
    vocab = Vocab.build(counter, special=("<eos>",))
    assert vocab.symbols == ["<eos>", "a", "b", "c", "d", "e"]


def test_vocab_build_min_freq_and_max_size():
    counter = Counter(["x", "y", "y", "z", "z", "z"])
    assert Vocab.build(counter, special=(), min_freq=2).symbols == ["z", "y"]
    assert Vocab.build(counter, special=("<eos>",), max_size=1).symbols == ["<eos>", "z"]


def test_unknown_words_map_to_unk():
    vocab = Vocab(["<eos>", "<unk>", "cat"])
    assert vocab.unk == "<unk>" and vocab.unk_id == 1
    assert vocab.index("cat") == 2
    assert vocab.index("dog") == 1


def test_unknown_word_without_unk_symbol_is_an_error_naming_it():
    vocab = Vocab(["<eos>", "cat"])
    assert vocab.unk is None
    with pytest.raises(DataError, match="'dog'"):
        vocab.index("dog")
    with pytest.raises(DataError, match="'dog'"):
        vocab.encode_line("cat dog")


def test_encode_line_adds_eos_or_double_eos():
    vocab = Vocab(["<eos>", "<S>", "<UNK>", "a", "b"], unk="<UNK>")
    assert vocab.encode_line("  a b \n") == [3, 4, 0]
    assert vocab.encode_line("a b", add_eos=False) == [3, 4]
    assert vocab.encode_line("a B", add_double_eos=True) == [1, 3, 2, 1]
    assert vocab.encode_line("A B", add_eos=False, lower_case=True) == [3, 4]
    assert vocab.decode([1, 3, 2]) == ["<S>", "a", "<UNK>"]


def test_eos_missing_from_vocabulary_is_an_error():
    with pytest.raises(DataError, match="'<eos>'"):
        Vocab(["a"]).encode_line("a")


def test_vocab_state_dict_round_trip():
    vocab = Vocab(["<eos>", "<unk>", "x"])
    state = vocab.state_dict()
    assert state == {"symbols": ["<eos>", "<unk>", "x"], "unk": "<unk>"}
    again = Vocab.from_state_dict(state)
    assert again.symbols == vocab.symbols and again.unk_id == 1


def test_vocab_from_file_reads_first_column_and_lm1b_unk(tmp_path):
    path = write(tmp_path / "vocab.txt", "<S> 0\n</S> 5\n<UNK> 9\nthe 100\n\n")
    vocab = Vocab.from_file(path)
    assert vocab.symbols == ["<S>", "</S>", "<UNK>", "the"]
    assert vocab.index("never-seen") == 2


def test_duplicate_symbols_are_refused():
    with pytest.raises(DataError, match="'a' appears twice"):
        Vocab(["a", "b", "a"])


# --- counting and encoding files ------------------------------------------------------------


def test_count_file(tmp_path):
    path = write(tmp_path / "t.txt", "A b\n\nb c\n")
    assert count_file(path) == Counter({"A": 1, "b": 2, "c": 1, "<eos>": 3})
    assert count_file(path, lower_case=True, add_eos=False) == Counter(a=1, b=2, c=1)


def test_encode_file_exact_ids(tmp_path):
    path = write(tmp_path / "t.txt", "the cat\n\nthe dog sat\n")
    vocab = Vocab(["<eos>", "<unk>", "the", "cat", "sat"])
    ids = encode_file(path, vocab)
    assert ids.dtype == torch.int64 and ids.dim() == 1
    assert ids.tolist() == [2, 3, 0, 0, 2, 1, 4, 0]
    assert encode_file(path, vocab, add_eos=False).tolist() == [2, 3, 2, 1, 4]


def test_encode_sentences_keeps_lengths(tmp_path):
    path = write(tmp_path / "t.txt", "a\nb a\n")
    vocab = Vocab(["<S>", "a", "b"])
    ids, lengths = encode_sentences(path, vocab, add_double_eos=True)
    assert ids.tolist() == [0, 1, 0, 0, 2, 1, 0]
    assert lengths.tolist() == [3, 4]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"absent\.txt: file not found"):
        encode_file(tmp_path / "absent.txt", Vocab(["<eos>"]))


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
        count_file(path)
    with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
        encode_file(path, Vocab(["<eos>"]))


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: not valid UTF-8 \(byte 5"):
        count_file(path)


def test_unknown_symbol_while_encoding_names_file_and_line(tmp_path):
    path = write(tmp_path / "t.txt", "a\na zebra\n")
    with pytest.raises(DataError, match=r"t\.txt:2: symbol 'zebra'"):
        encode_file(path, Vocab(["<eos>", "a"]))


# --- ordered iterator -------------------------------------------------------------------------


def test_ordered_batches_are_time_major_streams_with_shifted_targets():
    # 21 tokens, 2 streams: cut to 20, stream 0 = 0..9, stream 1 = 10..19.
    it = LMOrderedIterator(torch.arange(21), batch_size=2, tgt_len=4)
    assert it.n_batch == 3
    assert batches(it) == [
        ([[0, 10], [1, 11], [2, 12], [3, 13]], [[1, 11], [2, 12], [3, 13], [4, 14]], 4),
        ([[4, 14], [5, 15], [6, 16], [7, 17]], [[5, 15], [6, 16], [7, 17], [8, 18]], 4),
        ([[8, 18]], [[9, 19]], 1),
    ]


def test_ordered_ext_len_prepends_context():
    it = LMOrderedIterator(torch.arange(20), batch_size=2, tgt_len=4, ext_len=2)
    (d0, t0, _), (d1, t1, _), (d2, _, n2) = batches(it)
    assert d0 == [[0, 10], [1, 11], [2, 12], [3, 13]]  # nothing before position 0
    assert d1 == [[2, 12], [3, 13], [4, 14], [5, 15], [6, 16], [7, 17]]
    assert t1 == [[5, 15], [6, 16], [7, 17], [8, 18]]
    assert d2 == [[6, 16], [7, 17], [8, 18]] and n2 == 1


def test_ordered_iterating_twice_gives_the_same_batches():
    it = LMOrderedIterator(torch.arange(50), batch_size=2, tgt_len=4)
    assert batches(it) == batches(it)


@pytest.mark.parametrize("options", [{}, {"roll": True}, {"varlen": True}, {"ext_len": 3}])
def test_ordered_global_batch_is_the_same_for_any_world_size(options):
    corpus = torch.arange(400)
    whole = batches(LMOrderedIterator(corpus, 4, 6, seed=3, epoch=2, **options))
    ranks = [
        batches(LMOrderedIterator(corpus, 4, 6, world_size=2, rank=r, seed=3, epoch=2, **options))
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for k, (d, t, n) in enumerate(whole):
        (d0, t0, n0), (d1, t1, n1) = ranks[0][k], ranks[1][k]
        assert n0 == n1 == n
        assert [a + b for a, b in zip(d0, d1, strict=True)] == d
        assert [a + b for a, b in zip(t0, t1, strict=True)] == t


@pytest.mark.parametrize("options", [{}, {"roll": True, "varlen": True, "ext_len": 5}])
def test_ordered_resume_from_batch_k_is_the_tail_of_the_epoch(options):
    corpus = torch.arange(1000)
    full = batches(LMOrderedIterator(corpus, 4, 8, seed=1, epoch=5, **options))
    for k in (0, 1, 7, len(full)):
        tail = batches(LMOrderedIterator(corpus, 4, 8, seed=1, epoch=5, start=k, **options))
        assert tail == full[k:]


def test_varlen_lengths_are_deterministic_per_seed_and_epoch():
    def plan(seed, epoch):
        return LMOrderedIterator(
            torch.arange(20_000), 2, 40, varlen=True, seed=seed, epoch=epoch
        ).plan

    assert plan(0, 1) == plan(0, 1)
    assert plan(0, 1) != plan(0, 2) and plan(0, 1) != plan(1, 1)
    lengths = [n for _, n in plan(0, 1)]
    starts = [i for i, _ in plan(0, 1)]
    assert starts == [sum(lengths[:k]) for k in range(len(lengths))]  # segments abut
    assert all(5 <= n <= 40 + 15 for n in lengths[:-1])
    assert any(n < 30 for n in lengths)  # some drawn around tgt_len / 2
    assert 35 < sum(lengths) / len(lengths) < 40


def test_roll_rotates_each_stream_per_epoch():
    corpus = torch.arange(40)
    plain = LMOrderedIterator(corpus, 4, 3).data
    rolled = LMOrderedIterator(corpus, 4, 3, roll=True, seed=7, epoch=1).data
    again = LMOrderedIterator(corpus, 4, 3, roll=True, seed=7, epoch=1).data
    other = LMOrderedIterator(corpus, 4, 3, roll=True, seed=7, epoch=2).data
    assert torch.equal(rolled, again) and not torch.equal(rolled, other)
    for j in range(4):
        shift = int(rolled[0, j]) - 10 * j
        assert torch.equal(rolled[:, j], torch.roll(plain[:, j], -shift))


def test_ordered_split_shorter_than_one_segment_is_a_clear_error():
    with pytest.raises(DataError, match=r"valid: 20 tokens .* 4 x \(tgt_len 5 \+ 1\) = 24"):
        LMOrderedIterator(torch.arange(20), 4, 5, name="valid")


def test_batch_size_must_divide_among_ranks():
    with pytest.raises(ValueError, match="multiple of world_size 2"):
        LMOrderedIterator(torch.arange(100), 3, 4, world_size=2)


# --- sentence and multi-file iterators ------------------------------------------------------

SHARD_VOCAB = ["<S>", "<UNK>"] + [
    f"f{f}s{s}w{w}" for f in range(3) for s in range(40) for w in range(8)
]


def write_shards(tmp_path, lengths_of):
    """Three shards; sentence s of shard f has lengths_of(f, s) unique words."""
    paths, sentences = [], []
    for f in range(3):
        lines = []
        for s in range(12):
            words = [f"f{f}s{s}w{w}" for w in range(lengths_of(f, s))]
            lines.append(" ".join(words))
            sentences.append(tuple(words))
        paths.append(write(tmp_path / f"news.en-0000{f + 1}-of-00100", "\n".join(lines) + "\n"))
    return paths, sentences


def stream_sentences(iterator, vocab, batch_size):
    """Sentences read back from each column's input stream (split at <S>)."""
    columns = [[] for _ in range(batch_size)]
    for d, _, _ in iterator:
        for c in range(batch_size):
            columns[c] += d[:, c].tolist()
    found = []
    for tokens in columns:
        words = vocab.decode(tokens)
        current = None
        for w in words:
            if w == "<S>":
                if current is not None and current:
                    found.append(tuple(current))
                current = []
            else:
                current.append(w)
        if current:
            found.append(tuple(current))
    return found


def test_multifile_every_sentence_appears_exactly_once_per_epoch(tmp_path):
    # 3 words + 2 <S> = 5 tokens = 4 (input, target) pairs = tgt_len: nothing is dropped.
    paths, sentences = write_shards(tmp_path, lambda f, s: 3)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")
    it = LMMultiFileIterator(paths, vocab, batch_size=4, tgt_len=4, seed=1, epoch=1)
    assert it.n_batch == 9
    found = stream_sentences(it, vocab, 4)
    assert Counter(found) == Counter(sentences)


def test_multifile_targets_follow_inputs_within_sentences(tmp_path):
    paths, _ = write_shards(tmp_path, lambda f, s: 1 + (5 * f + 3 * s) % 7)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")
    for d, t, n in LMMultiFileIterator(paths, vocab, batch_size=3, tgt_len=5, seed=2):
        assert d.shape == t.shape == (5, 3) and n == 5
        # inside a column, each target is the next input
        assert torch.equal(t[:-1], d[1:])


def test_multifile_cuts_sentences_only_at_the_end_of_a_shard(tmp_path):
    paths, sentences = write_shards(tmp_path, lambda f, s: 1 + (5 * f + 3 * s) % 7)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")
    found = stream_sentences(LMMultiFileIterator(paths, vocab, 3, 5, seed=2), vocab, 3)
    by_start = {s[0]: s for s in sentences}
    assert len({s[0] for s in found}) == len(found)  # no sentence twice
    cut = [s for s in found if by_start[s[0]] != s]
    assert all(by_start[s[0]][: len(s)] == s for s in cut)  # a cut sentence is a prefix
    # the batch that runs out of sentences is dropped: at most one cut per column and shard
    assert len(cut) <= 3 * 3


def test_multifile_is_deterministic_per_seed_and_epoch(tmp_path):
    paths, _ = write_shards(tmp_path, lambda f, s: 2 + s % 5)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")

    def run(seed, epoch):
        return batches(LMMultiFileIterator(paths, vocab, 2, 6, seed=seed, epoch=epoch))

    assert run(0, 1) == run(0, 1)
    assert run(0, 1) != run(0, 2)
    assert run(0, 1) != run(1, 1)


def test_multifile_ranks_hold_disjoint_columns_of_the_same_global_batch(tmp_path):
    paths, _ = write_shards(tmp_path, lambda f, s: 2 + s % 5)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")
    whole = batches(LMMultiFileIterator(paths, vocab, 4, 3, seed=5))
    ranks = [
        batches(LMMultiFileIterator(paths, vocab, 4, 3, world_size=2, rank=r, seed=5))
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) > 0
    for (d, t, _), (d0, t0, _), (d1, t1, _) in zip(whole, *ranks, strict=True):
        assert [a + b for a, b in zip(d0, d1, strict=True)] == d
        assert [a + b for a, b in zip(t0, t1, strict=True)] == t


@pytest.mark.parametrize("ext_len", [0, 4])
def test_multifile_resume_from_batch_k_is_the_tail_of_the_epoch(tmp_path, ext_len):
    paths, _ = write_shards(tmp_path, lambda f, s: 2 + s % 5)
    vocab = Vocab(SHARD_VOCAB, unk="<UNK>")
    cache: dict = {}

    def run(start):
        it = LMMultiFileIterator(
            paths, vocab, 2, 3, ext_len=ext_len, seed=4, epoch=3, start=start, lengths_cache=cache
        )
        return batches(it)

    full = run(0)
    assert len(full) > 10
    for k in (1, 5, len(full) // 2, len(full) - 1, len(full)):  # crosses shard boundaries
        assert run(k) == full[k:]
    with pytest.raises(ValueError, match="past the end"):
        run(len(full) + 1)


def test_sentence_iterator_packs_in_order_and_reports_short_data():
    tokens = torch.arange(100)
    lengths = torch.tensor([5, 7, 3, 10, 20, 5, 50])
    it = LMSentenceIterator(tokens, lengths, batch_size=2, tgt_len=4)
    first, second = batches(it)[:2]
    assert first[0] == [[0, 5], [1, 6], [2, 7], [3, 8]]  # sentence 0 | sentence 1
    assert second[0] == [[12, 9], [13, 10], [15, 25], [16, 26]]  # 2 then 3 | rest of 1, then 4
    assert second[1] == [[13, 10], [14, 11], [16, 26], [17, 27]]
    assert it.n_batch == len(batches(it)) == 6
    with pytest.raises(DataError, match="test: 100 tokens in 7 sentences"):
        LMSentenceIterator(tokens, lengths, batch_size=8, tgt_len=16, name="test")


# --- corpus -------------------------------------------------------------------------------------


def wt103_dir(tmp_path):
    folder = tmp_path / "wikitext-103"
    write(folder / "train.txt", " = Title = \n b a <unk> c a\n")
    write(folder / "valid.txt", "a <unk> b\n")
    write(folder / "test.txt", "c zebra\n")
    return folder


def test_corpus_wt103_counts_train_only_and_encodes_with_eos(tmp_path):
    corpus = Corpus.load(wt103_dir(tmp_path), "wt103")
    assert corpus.vocab.symbols == ["<eos>", "=", "a", "Title", "b", "<unk>", "c"]
    assert corpus.train.tolist() == [1, 3, 1, 0, 4, 2, 5, 6, 2, 0]
    assert corpus.train.dtype == torch.int64
    assert corpus.test.tolist() == [6, 5, 0]  # "zebra" is not in train.txt: <unk>
    assert isinstance(corpus.iterator("train", 1, 2), LMOrderedIterator)


def test_corpus_unknown_word_without_unk_symbol_names_file_and_line(tmp_path):
    folder = wt103_dir(tmp_path)
    write(folder / "train.txt", "a b c\n")
    with pytest.raises(DataError, match=r"valid\.txt:1: symbol '<unk>'"):
        Corpus.load(folder, "wt103")


def test_corpus_cache_is_written_and_read_back_without_recounting(tmp_path, monkeypatch):
    folder = wt103_dir(tmp_path)
    write(folder / "test.txt", "c a\n")
    first = Corpus.load(folder, "wt103")
    state = torch.load(folder / "cache-wt103.pt", weights_only=True)
    assert state["symbols"] == first.vocab.symbols

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "count_file", fail)
    monkeypatch.setattr(data, "encode_file", fail)
    second = Corpus.load(folder, "wt103")
    assert second.vocab.symbols == first.vocab.symbols
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(second, split), getattr(first, split))


def test_corpus_cache_is_rebuilt_when_a_source_changes(tmp_path):
    folder = wt103_dir(tmp_path)
    write(folder / "test.txt", "c a\n")
    Corpus.load(folder, "wt103")
    write(folder / "test.txt", "a a a\n")
    assert Corpus.load(folder, "wt103").test.tolist() == [2, 2, 2, 0]


def test_corpus_damaged_cache_is_rebuilt(tmp_path):
    folder = wt103_dir(tmp_path)
    (folder / "cache-wt103.pt").write_bytes(b"not a torch file")
    assert Corpus.load(folder, "wt103").test.tolist() == [6, 5, 0]
    assert torch.load(folder / "cache-wt103.pt", weights_only=True)["dataset"] == "wt103"


def test_corpus_works_without_a_writable_cache(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(data, "atomic_write", read_only)
    folder = wt103_dir(tmp_path)
    assert Corpus.load(folder, "wt103").test.tolist() == [6, 5, 0]
    assert not (folder / "cache-wt103.pt").exists()


def test_corpus_with_a_given_vocabulary_leaves_the_cache_alone(tmp_path):
    folder = wt103_dir(tmp_path)
    write(folder / "test.txt", "c a\n")
    vocab = Vocab(["<eos>", "<unk>", "a"])
    corpus = Corpus.load(folder, "wt103", vocab=vocab)
    assert corpus.vocab is vocab
    assert corpus.test.tolist() == [1, 2, 0]
    assert not (folder / "cache-wt103.pt").exists()


def test_corpus_missing_folder_and_split_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: data folder not found"):
        Corpus.load(tmp_path / "nowhere", "wt103")
    folder = wt103_dir(tmp_path)
    (folder / "valid.txt").unlink()
    with pytest.raises(DataError, match=r"valid\.txt: file not found"):
        Corpus.load(folder, "wt103")


def test_corpus_enwik8_has_no_eos_and_counts_every_split(tmp_path):
    folder = tmp_path / "enwik8"
    write(folder / "train.txt", "60 61 \n 62")
    write(folder / "valid.txt", "61 99")
    write(folder / "test.txt", "60")
    corpus = Corpus.load(folder, "enwik8")
    assert corpus.vocab.symbols == ["60", "61", "62", "99"]
    assert corpus.train.tolist() == [0, 1, 2]  # the line break is not a token
    assert corpus.valid.tolist() == [1, 3]


def lm1b_dir(tmp_path):
    folder = tmp_path / "one-billion-words"
    shards = folder / "1-billion-word-language-modeling-benchmark-r13output"
    shards = shards / "training-monolingual.tokenized.shuffled"
    write(shards / "news.en-00002-of-00100", "a b\n")
    write(shards / "news.en-00001-of-00100", "b a\n")
    write(folder / "1b_word_vocab.txt", "<S> 0\n</S> 0\n<UNK> 0\na 5\nb 3\n")
    write(folder / "valid.txt", "a b\nb zebra a\n")
    write(folder / "test.txt", "a\n")
    return folder, shards


def test_corpus_lm1b_streams_shards_and_keeps_sentences(tmp_path):
    folder, shards = lm1b_dir(tmp_path)
    corpus = Corpus.load(folder, "lm1b")
    assert corpus.vocab.symbols == ["<S>", "</S>", "<UNK>", "a", "b"]
    assert corpus.train == [shards / "news.en-00001-of-00100", shards / "news.en-00002-of-00100"]
    assert corpus.valid.tolist() == [0, 3, 4, 0, 0, 4, 2, 3, 0]
    assert corpus.lengths["valid"].tolist() == [4, 5]
    assert isinstance(corpus.iterator("train", 1, 2), LMMultiFileIterator)
    assert isinstance(corpus.iterator("valid", 1, 2), LMSentenceIterator)
    with pytest.raises(ValueError, match="--roll applies to ordered datasets"):
        corpus.iterator("train", 1, 2, roll=True)
    again = Corpus.load(folder, "lm1b")  # from the cache
    assert again.lengths["valid"].tolist() == [4, 5] and again.vocab.unk == "<UNK>"


def test_adaptive_softmax_cutoffs_follow_the_reference():
    assert cutoffs_for("wt103", 267735) == [19997, 39997, 199997]
    assert tie_projs_for("wt103", 267735) == [False, True, True, True]
    assert cutoffs_for("lm1b", 793472) == [59997, 99997, 639997]
    assert tie_projs_for("lm1b", 793472) == [False, False, False, False]
    assert cutoffs_for("enwik8", 204) == [] and tie_projs_for("text8", 27) == [False]
    assert cutoffs_for("wt103", 30000) == [19997]  # a small corpus in wt103 format


# --- getdata against a local server ---------------------------------------------------------

WIKI = {"train": " = A = \n x y\n", "valid": " x y\n", "test": " = x =\n"}
ENWIK8 = bytes(range(60, 70)) + b"\n<a>\xc3\xa9\nzz"  # 19 bytes
TEXT8 = " anarchism originated as a term of abus"
LM1B_TRAIN = {"news.en-00001-of-00100": "The cat .\n", "news.en-00002-of-00100": "A dog .\n"}
LM1B_HELD = "Held out .\n"
LM1B_VOCAB_TEXT = "<S> 0\n</S> 0\n<UNK> 0\n. 9\nThe 3\n"


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def tar_gz_bytes(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def archives():
    root = getdata.LM1B_ROOT
    lm1b = {
        f"{root}/training-monolingual.tokenized.shuffled/{k}": v.encode()
        for k, v in LM1B_TRAIN.items()
    }
    lm1b[f"{root}/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"] = (
        LM1B_HELD.encode()
    )
    return {
        "/wikitext-103-v1.zip": zip_bytes(
            {f"wikitext-103/wiki.{k}.tokens": v for k, v in WIKI.items()}
        ),
        "/enwik8.zip": zip_bytes({"enwik8": ENWIK8}),
        "/text8.zip": zip_bytes({"text8": TEXT8}),
        f"/{root}.tar.gz": tar_gz_bytes(lm1b),
        "/1b_word_vocab.txt": LM1B_VOCAB_TEXT.encode(),
    }


@pytest.fixture
def server():
    with serve_files(archives()) as srv:
        yield srv


def getdata_args(server, data_dir, *datasets):
    datasets = datasets or getdata.DATASETS
    overrides = [f"--base-url-override={name}={server.url}/" for name in datasets]
    return ["--data-dir", str(data_dir), "--datasets", *datasets, "--heldout-size", "4", *overrides]


def test_getdata_writes_every_dataset_in_the_reference_layout(server, tmp_path):
    assert getdata.main(getdata_args(server, tmp_path)) == 0
    wiki = tmp_path / "wikitext-103"
    assert {p.name for p in wiki.iterdir()} == {"train.txt", "valid.txt", "test.txt"}
    assert (wiki / "train.txt").read_text() == WIKI["train"]
    assert (wiki / "test.txt").read_text() == WIKI["test"]
    # enwik8: 19 bytes -> train 11, valid 4, test 4; bytes as numbers, byte 10 a line break
    enwik8 = tmp_path / "enwik8"
    assert (enwik8 / "train.txt").read_text() == "60 61 62 63 64 65 66 67 68 69 \n"
    assert (enwik8 / "valid.txt").read_text() == "60 97 62 195"
    assert (enwik8 / "test.txt").read_text() == "169 \n 122 122"
    # text8: characters, each part stripped, '_' for a space
    text8 = tmp_path / "text8"
    assert (text8 / "train.txt").read_text() == " ".join("anarchism_originated_as_a_term")
    assert (text8 / "valid.txt").read_text() == "o f"  # " of " stripped
    assert (text8 / "test.txt").read_text() == "a b u s"
    lm1b = tmp_path / "one-billion-words"
    assert (lm1b / "valid.txt").read_text() == LM1B_HELD == (lm1b / "test.txt").read_text()
    assert (lm1b / "1b_word_vocab.txt").read_text() == LM1B_VOCAB_TEXT
    manifest = json.loads((tmp_path / "downloads" / "sha256.json").read_text())
    files = server.state.files
    assert manifest["enwik8.zip"] == hashlib.sha256(files["/enwik8.zip"]).hexdigest()
    assert len(manifest) == 5
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob("*.part"))


def test_getdata_outputs_load_as_corpora(server, tmp_path):
    assert getdata.main(getdata_args(server, tmp_path)) == 0
    enwik8 = Corpus.load(tmp_path / "enwik8", "enwik8")
    assert enwik8.train.numel() == 10 and enwik8.test.numel() == 3  # line breaks are dropped
    lm1b = Corpus.load(tmp_path / "one-billion-words", "lm1b")
    assert len(lm1b.train) == 2
    assert lm1b.vocab.decode(lm1b.valid) == ["<S>", "<UNK>", "<UNK>", ".", "<S>"]
    wt103 = Corpus.load(tmp_path / "wikitext-103", "wt103")
    assert wt103.vocab.symbols == ["<eos>", "=", "A", "x", "y"]
    assert wt103.vocab.decode(wt103.test) == ["=", "x", "=", "<eos>"]


def test_getdata_rerun_makes_no_request(server, tmp_path):
    args = getdata_args(server, tmp_path)
    assert getdata.main(args) == 0
    server.state.requests.clear()
    assert getdata.main(args) == 0
    assert server.state.requests == []


def test_getdata_rebuilds_a_deleted_output_from_the_verified_archive(server, tmp_path):
    args = getdata_args(server, tmp_path, "wt103", "enwik8")
    assert getdata.main(args) == 0
    (tmp_path / "wikitext-103" / "valid.txt").unlink()
    (tmp_path / "enwik8" / "test.txt").unlink()
    server.state.requests.clear()
    assert getdata.main(args) == 0
    assert server.state.requests == []
    assert (tmp_path / "wikitext-103" / "valid.txt").read_text() == WIKI["valid"]
    assert (tmp_path / "enwik8" / "test.txt").read_text() == "169 \n 122 122"


def test_getdata_refuses_an_archive_that_changed_since_the_first_download(server, tmp_path, capsys):
    args = getdata_args(server, tmp_path, "text8")
    assert getdata.main(args) == 0
    (tmp_path / "text8" / "train.txt").unlink()
    (tmp_path / "downloads" / "text8.zip").write_bytes(b"tampered")
    server.state.files["/text8.zip"] = zip_bytes({"text8": TEXT8 + " changed upstream"})
    assert getdata.main(args) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "text8.zip" in err and len(err.strip().splitlines()) == 1


def test_getdata_too_small_archive_for_the_heldout_size(server, tmp_path, capsys):
    args = getdata_args(server, tmp_path, "enwik8")
    args[args.index("--heldout-size") + 1] = "100"
    assert getdata.main(args) == 1
    assert "enwik8.zip: 19 bytes or characters, too few" in capsys.readouterr().err
    assert not (tmp_path / "enwik8").exists()


def test_getdata_script_passes_folder_datasets_and_flags(server, tmp_path):
    script = ROOT / "transformer_xl" / "scripts" / "getdata.sh"
    flags = [f"--base-url-override=text8={server.url}", "--heldout-size", "4"]
    proc = subprocess.run(
        ["bash", str(script), "out", "text8", "--", *flags],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "text8" / "test.txt").read_text() == "a b u s"
    assert server.state.requests == ["/text8.zip"]
