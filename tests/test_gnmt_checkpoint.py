"""GNMT load_checkpoint: NVIDIA's `model_best.pth` (rebuilt here in its exact format)
and our own training checkpoints give the same model outputs and text pipeline."""

import argparse
import collections
import functools
import io
import pickle

import pytest
import sacremoses
import torch
from subword_nmt.apply_bpe import BPE

from common.checkpoint import CheckpointError, capture_training_state, save_atomic
from gnmt.model import load_checkpoint
from gnmt.tokenizer import Tokenizer, read_vocab
from tests.gnmt_fixtures import (
    make_model,
    save_our_checkpoint,
    source_batch,
    toy_pairs,
    write_bpe_files,
)

PAIRS = toy_pairs(300)
SENTENCES = [en for en, _ in PAIRS[:6]] + ["The zebra sees the old dog today.", "  "]


class Payload:
    """Stands for any object a foreign pickle might carry."""


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    return write_bpe_files(tmp_path_factory.mktemp("bpe"), PAIRS)


def nvidia_tokenizer_state(bpe_files, extra_pieces=()):
    """The `tokenizer` entry of NVIDIA's checkpoints, built as its recipe builds it."""
    vocab_path, codes_path = bpe_files
    with open(codes_path, encoding="utf-8") as codes:
        bpe = BPE(codes)
    vocab = ["<pad>", "<unk>", "<s>", "<\\s>", *read_vocab(vocab_path), *extra_pieces]
    vocab += [f"madeupword{i:04d}" for i in range((-len(vocab)) % 8)]
    tok2idx = collections.defaultdict(functools.partial(int, 1))
    for i, token in enumerate(vocab):
        tok2idx[token] = i
    idx2tok = {i: token for token, i in tok2idx.items()}
    return {
        "lang": {"src": "en", "tgt": "de"},
        "separator": "@@",
        "vocab_size": len(vocab),
        "bpe": bpe,
        "tok2idx": tok2idx,
        "idx2tok": idx2tok,
    }


@pytest.fixture(scope="module")
def nvidia_tokenizer(bpe_files):
    return nvidia_tokenizer_state(bpe_files)


@pytest.fixture(scope="module")
def model(nvidia_tokenizer):
    return make_model(nvidia_tokenizer["vocab_size"])


def nvidia_checkpoint(model, tokenizer_state, prefix=""):
    """A dict in the layout of NVIDIA's PyTorch GNMT `model_best.pth`."""
    weights = {
        prefix + k.replace("decoder.classifier.", "decoder.classifier.classifier."): v
        for k, v in model.state_dict().items()
    }
    optimizer = torch.optim.Adam(model.parameters())
    return {
        "epoch": 5,
        "state_dict": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"last_epoch": 100, "base_lrs": [2e-3]},
        "loss": 2.75,
        "tokenizer": tokenizer_state,
        "config": argparse.Namespace(
            dataset_dir="data/wmt16_de_en", math="fp16", seed=1, train_max_size=None
        ),
        "model_config": {
            "hidden_size": model.config.hidden_size,
            "vocab_size": model.config.vocab_size,
            "num_layers": model.config.num_layers,
            "dropout": model.config.dropout,
            "batch_first": False,
            "share_embedding": True,
        },
    }


def nvidia_encode(state, line):
    """NVIDIA's text -> ids, computed from its own tokenizer state."""
    tokenized = sacremoses.MosesTokenizer(state["lang"]["src"]).tokenize(line, return_str=True)
    pieces = state["bpe"].process_line(tokenized).strip().split()
    return [2, *(state["tok2idx"][p] for p in pieces), 3]


def nvidia_decode(state, ids):
    """NVIDIA's ids -> text, computed from its own tokenizer state."""
    text = " ".join(state["idx2tok"][i] for i in ids)
    text = text.replace(state["separator"] + " ", "").replace(state["separator"], "")
    for special in ("<s>", "<\\s>", "<pad>"):
        text = text.replace(special, "")
    detok = sacremoses.MosesDetokenizer(state["lang"]["tgt"])
    return detok.detokenize(text.strip().split())


def logits(model, tokenizer):
    with torch.no_grad():
        return model(*source_batch(tokenizer, SENTENCES[:6]))


@pytest.fixture(scope="module")
def nvidia_path(tmp_path_factory, model, nvidia_tokenizer):
    path = tmp_path_factory.mktemp("nvidia") / "model_best.pth"
    torch.save(nvidia_checkpoint(model, nvidia_tokenizer), path)
    return path


def test_nvidia_checkpoint_loads_with_weights_only(nvidia_path, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(nvidia_path)
    assert seen == [True]


@pytest.mark.parametrize("prefix", ["", "module."])
def test_nvidia_checkpoint_reproduces_the_model(tmp_path, model, nvidia_tokenizer, prefix):
    path = tmp_path / "model_best.pth"
    torch.save(nvidia_checkpoint(model, nvidia_tokenizer, prefix), path)
    loaded, tokenizer = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(logits(loaded, tokenizer), logits(model, tokenizer))


def test_nvidia_tokenizer_encodes_as_nvidia(nvidia_path, nvidia_tokenizer):
    _, tokenizer = load_checkpoint(nvidia_path)
    for sentence in SENTENCES:
        assert tokenizer.encode(sentence) == nvidia_encode(nvidia_tokenizer, sentence)


def test_nvidia_tokenizer_decodes_as_nvidia(nvidia_path, nvidia_tokenizer):
    _, tokenizer = load_checkpoint(nvidia_path)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # any ids, specials and madeupwords included
        ids = torch.randint(0, tokenizer.vocab_size, (12,), generator=g).tolist()
        assert tokenizer.decode(ids) == nvidia_decode(nvidia_tokenizer, ids)
    for sentence in SENTENCES:
        ids = nvidia_encode(nvidia_tokenizer, sentence)
        assert tokenizer.decode(ids) == nvidia_decode(nvidia_tokenizer, ids)


def test_nvidia_vocab_with_a_repeated_piece_encodes_and_decodes_as_nvidia(
    tmp_path, model, bpe_files
):
    # NVIDIA's tok2idx keeps the last id of a repeated piece; idx2tok lacks the first.
    state = nvidia_tokenizer_state(bpe_files, extra_pieces=["the"])
    assert state["vocab_size"] == model.config.vocab_size
    path = tmp_path / "model_best.pth"
    torch.save(nvidia_checkpoint(model, state), path)
    _, tokenizer = load_checkpoint(path)
    sentence = "The dog sees the cat."
    assert tokenizer.encode(sentence) == nvidia_encode(state, sentence)
    assert state["tok2idx"]["the"] in tokenizer.encode(sentence)
    ids = [i for i in range(state["vocab_size"]) if i in state["idx2tok"]]
    assert tokenizer.decode(ids) == nvidia_decode(state, ids)


def test_nvidia_vocab_size_mismatch_is_a_vocabulary_error(tmp_path, model, nvidia_tokenizer):
    state = dict(nvidia_tokenizer, vocab_size=nvidia_tokenizer["vocab_size"] - 8)
    path = tmp_path / "model_best.pth"
    torch.save(nvidia_checkpoint(model, state), path)
    with pytest.raises(CheckpointError, match="vocabulary does not match"):
        load_checkpoint(path)


def test_our_checkpoint_reproduces_model_and_tokenizer(tmp_path, bpe_files):
    tokenizer = Tokenizer.from_files(*bpe_files)
    model = make_model(tokenizer.vocab_size, seed=3)
    path = save_our_checkpoint(tmp_path, model, tokenizer)
    loaded, loaded_tok = load_checkpoint(path)
    assert torch.equal(logits(loaded, loaded_tok), logits(model, tokenizer))
    assert loaded_tok.tokens == tokenizer.tokens
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence)
        assert loaded_tok.encode(sentence) == ids
        assert loaded_tok.decode(ids) == tokenizer.decode(ids)


def write_truncated(path, nvidia_bytes):
    path.write_bytes(nvidia_bytes[: len(nvidia_bytes) // 2])


def write_text(path, _):
    path.write_text("the dog sees the cat\n", encoding="utf-8")


def write_empty(path, _):
    path.write_bytes(b"")


def write_other_model(path, _):  # one of our checkpoints, of a Transformer-XL say
    save_atomic(capture_training_state(model=torch.nn.Linear(2, 2), extra={"vocab": []}), path)


def write_nvidia_transformer_xl(path, _):
    state = {"model_config": {"n_layer": 2}, "model_state": {}, "vocab": {"idx2sym": []}}
    torch.save(state, path)


def write_foreign_pickle(path, _):
    torch.save({"state_dict": {}, "payload": Payload()}, path)


@pytest.mark.parametrize(
    "write, message",
    [
        (write_truncated, "is truncated"),
        (write_text, "is truncated, corrupt or not a torch checkpoint"),
        (write_empty, "is empty"),
        (write_other_model, "checkpoint of another model"),
        (write_nvidia_transformer_xl, "is not a GNMT checkpoint"),
        (write_foreign_pickle, "is not a GNMT checkpoint .*Payload"),
    ],
)
def test_bad_files_are_checkpoint_errors_naming_the_path(tmp_path, nvidia_path, write, message):
    path = tmp_path / "bad_model.pth"
    write(path, nvidia_path.read_bytes())
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_foreign_pickle_is_never_unpickled(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Payload, "__setstate__", lambda self, s: calls.append(s), raising=False)
    path = tmp_path / "model_best.pth"
    obj = Payload()
    obj.x = 1
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    buf = io.BytesIO()
    torch.save({"model_config": {}, "state_dict": {}, "tokenizer": obj}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="Payload"):
        load_checkpoint(path)
    assert calls == []


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.pth does not exist"):
        load_checkpoint(tmp_path / "nothere.pth")
