"""Sentence segmentation with NLTK's punkt: one document per line -> one sentence per line.

Output format (the one BERT's instance creation reads): each sentence on its own line, a
blank line after every document. Blank input lines are not documents and are skipped.

Which punkt model splits (`mode`):
  "pretrained"  NLTK's English model from the `punkt_tab` data package, which must be
                installed (`python -m nltk.downloader punkt_tab`); nothing is downloaded
                here. (NLTK >= 3.9 refuses the older pickled `punkt` models.)
  "train"       a model trained, unsupervised, on a sample of the corpus itself: the
                first documents of each input, `sample_chars` characters in all. This
                needs no download and learns the corpus's own abbreviations.
  "auto"        "pretrained" when the data is installed, else "train".
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import nltk
from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

from bert.data import DataError, utf8_lines
from common.atomic import atomic_write
from common.logging import progress
from common.parallel import map_chunks

log = logging.getLogger(__name__)

MODES = ("auto", "pretrained", "train")
DOCUMENTS_PER_TASK = 256


def pretrained_punkt(language: str = "english") -> PunktSentenceTokenizer | None:
    """NLTK's pretrained punkt model for `language`, or None when its data is not installed."""
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{language}")
    except LookupError:
        return None
    from nltk.tokenize.punkt import PunktTokenizer

    return PunktTokenizer(language)


def train_punkt(texts: Iterable[str]) -> PunktSentenceTokenizer:
    """A punkt model learned from `texts` (abbreviations, collocations, sentence starters)."""
    trainer = PunktTrainer()
    for text in texts:
        trainer.train(text, finalize=False)
    trainer.finalize_training()
    return PunktSentenceTokenizer(trainer.get_params())


def corpus_sample(paths: list[Path], max_chars: int) -> Iterator[str]:
    """Documents from the start of each file, about `max_chars / len(paths)` characters each."""
    budget = max_chars // max(len(paths), 1)
    for path in paths:
        taken = 0
        for line in utf8_lines(path):
            if taken >= budget:
                break
            if line.strip():
                taken += len(line)
                yield line


def load_splitter(
    mode: str, sample_paths: list[Path], sample_chars: int, language: str = "english"
) -> PunktSentenceTokenizer:
    """The punkt model `mode` asks for (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"punkt mode must be one of {MODES}, got {mode!r}")
    if mode != "train":
        splitter = pretrained_punkt(language)
        if splitter is not None:
            log.info("sentence splitting with NLTK's pretrained punkt model (%s)", language)
            return splitter
        if mode == "pretrained":
            raise DataError(
                f"NLTK's punkt_tab data for {language} is not installed: run "
                "`python -m nltk.downloader punkt_tab`, or train on the corpus (--punkt train)"
            )
    splitter = train_punkt(corpus_sample(sample_paths, sample_chars))
    log.info(
        "sentence splitting with punkt trained on up to %d characters of %s",
        sample_chars,
        ", ".join(str(p) for p in sample_paths),
    )
    return splitter


def split_document(splitter: PunktSentenceTokenizer, text: str) -> list[str]:
    """A document's sentences, stripped, empty ones dropped."""
    return [s for s in (s.strip() for s in splitter.tokenize(text)) if s]


def _make_split_fn(splitter: PunktSentenceTokenizer) -> Callable[[list[str]], list[list[str]]]:
    return lambda docs: [split_document(splitter, doc) for doc in docs]


def segment_file(
    splitter: PunktSentenceTokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    workers: int = 1,
) -> tuple[int, int]:
    """Write `input_path`'s documents sentence by sentence to `output_path` (module
    docstring); returns (documents, sentences). Raises `DataError` for an input without
    any document."""
    documents = sentences = 0
    size = Path(input_path).stat().st_size if Path(input_path).is_file() else None
    bar = progress(total=size, desc=f"splitting {Path(input_path).name}", unit="B", unit_scale=True)

    def documents_read():
        for line in utf8_lines(input_path):
            bar.update(len(line.encode("utf-8")) + 1)
            if line.strip():
                yield line

    make_fn = functools.partial(_make_split_fn, splitter)
    with atomic_write(output_path, "w", encoding="utf-8") as out, bar:
        for chunk in map_chunks(make_fn, documents_read(), workers, DOCUMENTS_PER_TASK):
            for doc in chunk:
                if not doc:
                    continue
                out.write("\n".join(itertools.chain(doc, ["", ""])))
                documents += 1
                sentences += len(doc)
        if not documents:
            raise DataError(f"{input_path}: no documents (the file has no text)")
    log.info("%s: %d documents, %d sentences -> %s", input_path, documents, sentences, output_path)
    return documents, sentences
