"""A tiny, randomly initialised BERT and a WordPiece vocabulary learnt from given text,
for demos and tests on generated data (no download, seconds of CPU training).

    vocab = build_vocab(texts, "out/vocab.txt", vocab_size=1000)
    save_tiny_bert("out/tiny_bert", vocab)     # config.json, model.safetensors, vocab.txt

The model is saved as a pre-training model (`BertForPreTraining`), like a published
checkpoint: fine-tuning scripts load its encoder and start their task head afresh.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from bert.model import BertConfig, BertForPreTraining
from bert.tokenization import CONTINUATION, BasicTokenizer
from common.atomic import atomic_write

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_vocab(
    texts: Iterable[str],
    path: str | os.PathLike,
    vocab_size: int = 1000,
    do_lower_case: bool = True,
) -> Path:
    """Write a WordPiece vocabulary for `texts` to `path` (vocab.txt): the special tokens,
    every character alone and as a "##" continuation, then the most frequent words (ties
    in alphabetical order) up to `vocab_size` tokens. Rarer words are cut into pieces,
    so the vocabulary exercises WordPiece. (The `tokenizers` trainer breaks ties between
    merges differently from run to run; tests and demos need the same file every time.)
    """
    basic = BasicTokenizer(do_lower_case)
    counts = collections.Counter(word for text in texts for word in basic.tokenize(text))
    chars = sorted({c for word in counts for c in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(CONTINUATION + c for c in chars)]
    known = set(vocab)
    for word in sorted(counts, key=lambda w: (-counts[w], w)):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token in vocab)
    return path


def tiny_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    dropout: float = 0.1,
    max_position_embeddings: int = 512,
) -> BertConfig:
    """BERT's architecture at toy scale (feed-forward 4x hidden, as in BERT)."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_position_embeddings,
    )


def save_tiny_bert(
    out_dir: str | os.PathLike, vocab_file: str | os.PathLike, seed: int = 0, **config_kwargs
) -> Path:
    """A random BertForPreTraining sized for `vocab_file`, saved with it to `out_dir`
    (Hugging Face format). `config_kwargs` go to `tiny_config`."""
    with open(vocab_file, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.manual_seed(seed)
        model = BertForPreTraining(tiny_config(vocab_size, **config_kwargs))
    return model.save_pretrained(out_dir, vocab_file=vocab_file)
