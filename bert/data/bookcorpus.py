"""BookCorpus for BERT: a user-supplied folder of UTF-8 .txt books -> one book per line.

BookCorpus is no longer distributed, so the project downloads nothing: users bring a
folder holding one book per .txt file (any layout below it). Files are read in sorted
path order; a book's lines are joined with single spaces. Books without text are
dropped and counted. A file that is not UTF-8 raises `DataError` naming it and the line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bert.data import DataError, utf8_lines
from common.atomic import atomic_write

log = logging.getLogger(__name__)


def book_files(folder: str | os.PathLike) -> list[Path]:
    """The .txt files below `folder`, sorted; DataError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"BookCorpus folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"BookCorpus folder {folder} holds no .txt files")
    return files


def read_book(path: Path) -> str:
    """A book's text on one line, whitespace collapsed."""
    return " ".join(word for line in utf8_lines(path) for word in line.split())


def format_books(folder: str | os.PathLike, output: str | os.PathLike) -> int:
    """Write every book below `folder` to `output`, one per line; returns books written."""
    files = book_files(folder)
    written = empty = 0
    with atomic_write(output, "w", encoding="utf-8") as out:
        for path in files:
            text = read_book(path)
            if text:
                out.write(text + "\n")
                written += 1
            else:
                empty += 1
        if not written:
            raise DataError(f"BookCorpus folder {folder}: every .txt file is empty")
    log.info("%s: %d books written to %s; %d empty files skipped", folder, written, output, empty)
    return written
