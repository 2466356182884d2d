"""BERT pre-training data: Wikipedia (and BookCorpus) text -> masked LM / NSP HDF5 shards.

Stages, each a module with one job, tied together by `python -m bert.data.prepare`:

    wikipedia.py   download the dump; MediaWiki XML -> one plain-text article per line
    bookcorpus.py  a folder of .txt books -> one book per line
    sentences.py   NLTK punkt segmentation -> one sentence per line, blank line between documents
    shard.py       documents -> N training (+ held-out) text shards, documents never split
    instances.py   a text shard -> one HDF5 file of masked LM + next-sentence instances;
                   `mask_tokens` for masking at load time
    toy_corpus.py  a generated MediaWiki dump (not Wikipedia) and vocabulary for demos/tests

Every output is written atomically (temporary file, fsync, rename) and skipped when it
exists, so an interrupted preparation resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from common.errors import UserError


class DataError(UserError, ValueError):
    """Bad pre-training input; the message names the file (and position where known)."""


def utf8_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file without their line ends; a line that is not UTF-8
    raises `DataError` naming the file and the line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}, line {lineno}: not UTF-8 ({exc.reason} at byte {exc.start} "
                    "of the line)"
                ) from None
