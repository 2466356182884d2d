"""Small GNMT artefacts for tests: BPE learned on generated toy pairs, a random model,
and checkpoints saved the way gnmt/train.py saves them."""

import io
import random
from collections import Counter
from pathlib import Path

import sacremoses
import torch
from subword_nmt.apply_bpe import BPE
from subword_nmt.learn_bpe import learn_bpe

from common.checkpoint import Checkpointer, DataPosition
from gnmt import toy_data
from gnmt.data import pad
from gnmt.model import GNMT, config_dict
from gnmt.tokenizer import BOS, EOS, PAD, Tokenizer

MERGES = 200


def toy_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Generated (English, German) raw sentence pairs."""
    rng = random.Random(seed)
    return [toy_data.sentence_pair(rng) for _ in range(count)]


def write_bpe_files(directory: Path, pairs: list[tuple[str, str]]) -> tuple[Path, Path]:
    """Learn a joint BPE on the Moses-tokenized pairs; write `bpe.codes` and `vocab.txt`
    (the segmented corpus's pieces, most frequent first). Returns (vocab, codes)."""
    en, de = sacremoses.MosesTokenizer(lang="en"), sacremoses.MosesTokenizer(lang="de")
    corpus = [en.tokenize(s, return_str=True) for s, _ in pairs]
    corpus += [de.tokenize(t, return_str=True) for _, t in pairs]
    codes = io.StringIO()
    learn_bpe(io.StringIO("\n".join(corpus) + "\n"), codes, MERGES)
    codes_path = directory / "bpe.codes"
    codes_path.write_text(codes.getvalue(), encoding="utf-8")

    bpe = BPE(io.StringIO(codes.getvalue()))
    counts = Counter(p for line in corpus for p in bpe.process_line(line).split())
    pieces = sorted(counts, key=lambda p: (-counts[p], p))
    vocab_path = directory / "vocab.txt"
    vocab_path.write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    return vocab_path, codes_path


def make_tokenizer(directory: Path, pairs: list[tuple[str, str]]) -> Tokenizer:
    return Tokenizer.from_files(*write_bpe_files(directory, pairs))


def make_model(vocab_size: int, seed: int = 0, never_stop: bool = False) -> GNMT:
    """A small random GNMT in eval mode. `never_stop`: PAD, BOS and EOS can never win a
    search step, so every hypothesis runs to the length limit (non-empty output)."""
    torch.manual_seed(seed)
    model = GNMT(vocab_size, hidden_size=16, num_layers=4, dropout=0.2).eval()
    if never_stop:
        with torch.no_grad():
            model.decoder.classifier.bias[[PAD, BOS, EOS]] = -1e4
    return model


def save_our_checkpoint(directory: Path, model: GNMT, tokenizer: Tokenizer) -> Path:
    """A checkpoint written as gnmt/train.py writes one: returns `model_best.pth`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    states = {
        "model": model,
        "optimizer": optimizer,
        "data_position": DataPosition(epoch=1),
        "tokenizer": tokenizer,
    }
    extra = {"best_bleu": 1.5, "model_config": config_dict(model)}
    checkpointer = Checkpointer(directory, prefix="model", suffix=".pth", is_main=True)
    checkpointer.save(10, states, extra=extra, is_best=True)
    return checkpointer.best_path


def source_batch(tokenizer: Tokenizer, sentences: list[str]) -> tuple[torch.Tensor, ...]:
    """(src [B, S], src_lengths [B], tgt_input [B, T]) from raw sentences (target =
    the reversed source ids, enough to exercise the decoder)."""
    ids = [torch.tensor(tokenizer.encode(s)) for s in sentences]
    src, lengths = pad(ids)
    tgt, _ = pad([i.flip(0)[:-1] for i in ids])
    return src, lengths, tgt
