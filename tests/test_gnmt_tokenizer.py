"""GNMT tokenizer: Moses + joint BPE + vocabulary, its files, errors and persistence."""

import io

import pytest
import sacremoses
import torch
from subword_nmt.apply_bpe import BPE

from gnmt.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    Tokenizer,
    TokenizerError,
    read_vocab,
    vocab_multiple,
)
from tests.gnmt_fixtures import toy_pairs, write_bpe_files

PAIRS = toy_pairs(300)
SENTENCES = [PAIRS[i][0] for i in range(0, 40, 4)] + [PAIRS[i][1] for i in range(2, 40, 4)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(vocab file, codes file) learned on the toy pairs."""
    return write_bpe_files(tmp_path_factory.mktemp("bpe"), PAIRS)


@pytest.fixture(scope="module")
def tokenizer(files):
    return Tokenizer.from_files(*files)


def test_specials_take_ids_0_to_3(tokenizer):
    assert tokenizer.tokens[:4] == ["<pad>", "<unk>", "<s>", "<\\s>"]
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_vocab_is_file_pieces_then_fillers_up_to_a_multiple_of_8(tokenizer, files):
    pieces = read_vocab(files[0])
    assert tokenizer.vocab_size % 8 == 0
    assert tokenizer.tokens[4 : 4 + len(pieces)] == pieces
    fillers = tokenizer.tokens[4 + len(pieces) :]
    assert len(fillers) < 8
    assert fillers == [f"madeupword{i:04d}" for i in range(len(fillers))]


def test_vocab_file_may_carry_a_count_column(tmp_path):
    path = tmp_path / "vocab"
    path.write_text("der 120\nHund 7\n\nKatze\n", encoding="utf-8")
    assert read_vocab(path) == ["der", "Hund", "Katze"]


def test_encode_is_moses_then_bpe_then_vocabulary(tokenizer, files):
    moses = sacremoses.MosesTokenizer(lang="en")
    with open(files[1], encoding="utf-8") as codes:
        bpe = BPE(codes)
    index = {tok: i for i, tok in enumerate(tokenizer.tokens)}
    for sentence in SENTENCES:
        pieces = bpe.process_line(moses.tokenize(sentence, return_str=True)).split()
        expected = [BOS, *(index.get(p, UNK) for p in pieces), EOS]
        assert tokenizer.encode(sentence) == expected


def test_decode_inverts_encode_for_toy_sentences(tokenizer):
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence)
        assert UNK not in ids
        assert tokenizer.decode(ids) == sentence


def test_pieces_outside_the_vocabulary_become_unk(tokenizer):
    ids = tokenizer.encode("The zebra sees the cat.")  # "zebra": pieces never seen
    assert UNK in ids
    assert ids[:2] == [BOS, tokenizer.index["The"]]
    assert "<unk>" in tokenizer.decode(ids)
    assert tokenizer.decode(ids).startswith("The ")


def test_decode_drops_specials_after_joining_pieces():
    # As NVIDIA's recipe: "Haus@@ <s> tür" -> "Haus<s> tür" -> "Haus tür".
    tok = Tokenizer([*SPECIALS, "Haus@@", "tür", "."], None)
    assert tok.decode([BOS, 4, BOS, 5, 6, EOS, PAD]) == "Haus tür."
    assert tok.decode([4, 5, UNK]) == "Haustür <unk>"


def test_state_dict_holds_only_plain_data(tokenizer):
    state = tokenizer.state_dict()
    for value in state.values():
        assert value is None or isinstance(value, (str, list))
    assert all(isinstance(t, str) for t in state["tokens"])
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state


def test_from_state_dict_round_trips(tokenizer):
    restored = Tokenizer.from_state_dict(tokenizer.state_dict())
    assert restored.tokens == tokenizer.tokens
    for sentence in [*SENTENCES, "The zebra sees the cat."]:
        assert restored.encode(sentence) == tokenizer.encode(sentence)
    ids = torch.randint(0, tokenizer.vocab_size, (50,), generator=torch.Generator().manual_seed(0))
    assert restored.decode(ids.tolist()) == tokenizer.decode(ids.tolist())


@pytest.mark.parametrize("which", ["vocab", "codes"])
def test_missing_file_is_an_error_naming_it(files, tmp_path, which):
    vocab, codes = files
    missing = tmp_path / f"missing.{which}"
    args = (missing, codes) if which == "vocab" else (vocab, missing)
    with pytest.raises(TokenizerError, match=rf"missing\.{which} does not exist"):
        Tokenizer.from_files(*args)


@pytest.mark.parametrize("which", ["vocab", "codes"])
def test_empty_file_is_an_error_naming_it(files, tmp_path, which):
    vocab, codes = files
    empty = tmp_path / f"empty.{which}"
    empty.write_text("\n \n", encoding="utf-8")
    args = (empty, codes) if which == "vocab" else (vocab, empty)
    with pytest.raises(TokenizerError, match=rf"empty\.{which} is empty"):
        Tokenizer.from_files(*args)


def test_non_utf8_vocab_names_file_and_line(files, tmp_path):
    bad = tmp_path / "bad.vocab"
    bad.write_bytes(b"der\nHund\nK\xe4tze\n")  # Latin-1, not UTF-8
    with pytest.raises(TokenizerError, match=r"bad\.vocab:3: not valid UTF-8"):
        Tokenizer.from_files(bad, files[1])


def test_malformed_codes_line_names_file_and_line(files, tmp_path):
    bad = tmp_path / "bad.codes"
    bad.write_text("#version: 0.2\nd e\nde r</w> x\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"bad\.codes:3: expected a merge"):
        Tokenizer.from_files(files[0], bad)


def test_encode_without_codes_is_an_error(files):
    tok = Tokenizer.from_files(files[0], None)
    with pytest.raises(TokenizerError, match="no BPE codes"):
        tok.encode("The dog.")
    assert tok.decode([BOS, tok.index["The"], EOS]) == "The"


def test_training_pads_the_vocabulary_in_half_precision_only(files):
    """NVIDIA's rule: a multiple of 8 for fp16 (we add bf16), none in fp32 (or tf32)."""
    assert [vocab_multiple(m) for m in ("fp32", "tf32", "fp16", "bf16")] == [1, 1, 8, 8]
    pieces = read_vocab(files[0])
    plain = Tokenizer.from_files(*files, pad_to=vocab_multiple("fp32"))
    assert plain.tokens == ["<pad>", "<unk>", "<s>", "<\\s>", *pieces]
    padded = Tokenizer.from_files(*files, pad_to=vocab_multiple("fp16"))
    assert padded.vocab_size == 4 + len(pieces) + (-(4 + len(pieces)) % 8)


def test_resuming_in_another_precision_names_the_padding(files):
    padded = Tokenizer.from_files(*files, pad_to=8)
    plain = Tokenizer.from_files(*files, pad_to=1)
    if padded.vocab_size == plain.vocab_size:
        pytest.skip("this vocabulary needs no padding")
    with pytest.raises(
        TokenizerError, match=r"padded to \d+ entries .* resume with the run's --math"
    ):
        plain.load_state_dict(padded.state_dict())
