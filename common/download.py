"""Downloads that survive flaky networks, and archive extraction done once.

`download(url, dest)` fetches into `dest.part` in the same folder and renames it to
`dest` only after the checksum passes and the data is fsynced, so `dest` never exists
half-written. A call whose `dest` already exists (with the right checksum, when one is
given) returns without touching the network.

Interrupted transfers resume: a `.part` left by an earlier call, or by a dropped
connection during this one, is continued with `Range: bytes=N-`. Connection errors,
timeouts, short bodies, HTTP 5xx and 429 are retried `retries` times, sleeping
`backoff * 2**k` seconds before retry k (k = 0, 1, ...); other HTTP errors fail at once.
When all attempts fail the `.part` is kept, so the next call picks up where this one
stopped.

Checksum policy: a mismatch deletes the `.part` (corrupt bytes must not be resumed
from). If the data was stitched onto bytes kept from an earlier response, those bytes
may belong to an older version of the file (a "latest" dump that changed between runs),
so one fresh download from byte 0 is made; a mismatch on a download that reused no
earlier bytes raises `ChecksumError` at once, since fetching the same bytes again would
not help.

`extract(archive, dest_dir)` unpacks tar (plain, gz, bz2, xz), zip and single-file
gz/bz2/xz into a staging folder inside `dest_dir`, then moves the entries into place and
writes a marker `.<archive name>.extracted`; with the marker present it returns at once.
Members that would land outside `dest_dir` are refused before anything is written.
"""

from __future__ import annotations

import argparse
import bz2
import functools
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.atomic import replace_durably
from common.errors import UserError

__all__ = [
    "read_manifest",
    "ChecksumError",
    "DownloadError",
    "ExtractError",
    "download",
    "download_recorded",
    "extract",
    "verify_checksum",
]

# Some hosts (Wikimedia among them) throttle or refuse the generic Python-urllib agent.
USER_AGENT = "lm-recipes-download/1.0 (Python urllib)"
HASH_BLOCK = 1 << 20


class DownloadError(UserError, RuntimeError):
    """A download failed; the message names the URL and the destination file."""


class ChecksumError(DownloadError):
    """A file's digest differs from the expected one; the message names both digests."""


class ExtractError(RuntimeError):
    """An archive is corrupt, of unknown format, or has a member escaping the destination."""


class _Transient(Exception):
    """A failure worth another attempt that urllib does not raise itself (a short body)."""


# --- checksums -------------------------------------------------------------------------


def _expected_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    given = {"sha256": sha256, "md5": md5}
    return {name: digest.strip().lower() for name, digest in given.items() if digest}


def _file_digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    """Hex digests of `path` for all `algorithms` in one read (dumps are many GB)."""
    # usedforsecurity=False: md5 is an integrity check here, and FIPS builds refuse it otherwise.
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def _find_mismatch(path: Path, expected: dict[str, str]) -> tuple[str, str, str] | None:
    """(algorithm, expected, actual) for the first digest that differs, or None."""
    if not expected:
        return None
    actual = _file_digests(path, list(expected))
    for name, digest in expected.items():
        if actual[name] != digest:
            return name, digest, actual[name]
    return None


def verify_checksum(
    path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None
) -> None:
    """Raise `ChecksumError` naming the file and both digests unless `path` matches."""
    expected = _expected_digests(sha256, md5)
    if not expected:
        raise ValueError("verify_checksum needs sha256 or md5")
    mismatch = _find_mismatch(Path(path), expected)
    if mismatch:
        name, want, got = mismatch
        raise ChecksumError(f"{path}: {name} mismatch: expected {want}, actual {got}")


# --- HTTP ------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None for what it lacks."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total.isdigit() else None,
    )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _open(url: str, part: Path, timeout: float) -> http.client.HTTPResponse | None:
    """Ask for the bytes after those already in `part`; None when `part` is already whole."""
    offset = _size(part)
    try:
        return urllib.request.urlopen(_request(url, offset), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not offset:
            raise
        # 416: nothing lies past `offset`. Compare with the size the server reports.
        _, total = _parse_content_range(error.headers.get("Content-Range"))
        error.close()
    if total == offset:
        return None  # an earlier call got every byte but stopped before the rename
    # The part is longer than the file: it belongs to another version. Start over.
    part.unlink()
    return urllib.request.urlopen(_request(url, 0), timeout=timeout)


def _copy_body(
    response, part: Path, *, start: int, total: int | None, chunk_size: int, show_progress: bool
) -> int:
    """Stream the body into `part` from byte `start`; returns the bytes written, even when cut short."""
    written = 0
    bar = tqdm(
        total=total,
        initial=start,
        desc=part.name.removesuffix(".part"),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not show_progress,
    )
    with bar, open(part, "ab" if start else "wb") as out:
        while chunk := response.read(chunk_size):
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    return written


def _fetch_once(
    url: str, part: Path, *, timeout: float, chunk_size: int, show_progress: bool
) -> bool:
    """One request that continues or rewrites `part`. True when earlier bytes were kept."""
    response = _open(url, part, timeout)
    if response is None:
        return True
    with response:
        offset = _size(part)
        # 206: the server continues at our offset. 200 (or a file:// URL, status None):
        # it ignored the range and sends everything, so the part is rewritten.
        append = response.status == 206
        if append:
            resumed_at, _ = _parse_content_range(response.headers.get("Content-Range"))
            if resumed_at != offset:
                part.unlink()
                raise _Transient(f"server resumed at byte {resumed_at}, not {offset}; restarting")
        start = offset if append else 0
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        written = _copy_body(
            response,
            part,
            start=start,
            total=start + length if length is not None else None,
            chunk_size=chunk_size,
            show_progress=show_progress,
        )
    # http.client returns a short body without complaint when the peer closes early.
    if length is not None and written < length:
        raise _Transient(f"connection closed after {written} of {length} bytes")
    return append


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code == 429 or error.code >= 500
    if isinstance(error, urllib.error.URLError):
        # A missing file behind a file:// mirror will not appear by retrying.
        return not isinstance(error.reason, FileNotFoundError)
    return isinstance(error, (ConnectionError, TimeoutError, http.client.HTTPException, _Transient))


def _fetch_with_retries(
    url: str,
    dest: Path,
    part: Path,
    *,
    retries: int,
    backoff: float,
    timeout: float,
    chunk_size: int,
    show_progress: bool,
) -> bool:
    """Fill `part` with the whole body; True when it kept bytes from an earlier response."""
    attempts = retries + 1
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _fetch_once(
                url, part, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress
            )
        except (OSError, http.client.HTTPException, _Transient) as error:
            if isinstance(error, urllib.error.HTTPError):
                error.close()
            if not _is_transient(error):
                raise DownloadError(f"downloading {url} to {dest} failed: {error}") from error
            last_error = error
    raise DownloadError(
        f"downloading {url} to {dest} failed after {attempts} attempts; "
        f"last error: {last_error}; {part.name} is kept so the next call resumes"
    ) from last_error


# --- download --------------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Fetch `url` (http, https or file) to `dest`, resuming and retrying; returns `dest`.

    `retries` is the number of attempts after the first; `timeout` applies to each
    connect and read. A progress bar appears only when `progress` and stderr is a
    terminal. Raises `DownloadError` (`ChecksumError` for a digest mismatch).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    expected = _expected_digests(sha256, md5)
    if dest.exists() and _find_mismatch(dest, expected) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetch = functools.partial(
        _fetch_with_retries,
        url,
        dest,
        part,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        chunk_size=chunk_size,
        show_progress=progress and sys.stderr.isatty(),
    )
    kept_earlier_bytes = fetch()
    mismatch = _find_mismatch(part, expected)
    if mismatch and kept_earlier_bytes:
        # The kept bytes may come from an older version of the file: one fresh try.
        part.unlink()
        fetch()
        mismatch = _find_mismatch(part, expected)
    if mismatch:
        part.unlink()  # corrupt data must not be resumed from
        name, want, got = mismatch
        raise ChecksumError(
            f"downloading {url} to {dest}: {name} mismatch: expected {want}, actual {got}; "
            "the partial file was deleted"
        )
    replace_durably(part, dest)
    return dest


# --- extraction ------------------------------------------------------------------------

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_SINGLE_FILE_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What the decompressors and archive readers raise for damaged input.
_CORRUPT_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    OSError,
)
# Python >= 3.10.12 / 3.11.4 can also vet links, device files and permission bits.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def name_url(names: Iterable[str]) -> Callable[[str], tuple[str, str]]:
    """An argparse `type` for NAME=URL flags (a mirror for one of `names`)."""
    known = list(names)

    def parse(text: str) -> tuple[str, str]:
        name, sep, url = text.partition("=")
        if not sep or name not in known or not url:
            raise argparse.ArgumentTypeError(
                f"expected NAME=URL with NAME one of {', '.join(known)}, got {text!r}"
            )
        return name, url

    return parse


MANIFEST = "sha256.json"


def read_manifest(path: Path) -> dict[str, str]:
    """File name -> sha256 recorded by `download_recorded` ({} before any)."""
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(f"{path}: not a JSON checksum manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise DownloadError(f"{path}: expected a JSON object of file name -> sha256")
    return manifest


def download_recorded(url: str, dest: str | os.PathLike, **kwargs: Any) -> Path:
    """`download` for sources that publish no checksum: the first download records the
    file's sha256 in `sha256.json` beside it, and later calls verify against it, so a
    file that changed on the server (or on disk) is refused rather than used silently.
    """
    dest = Path(dest)
    manifest_path = dest.parent / MANIFEST
    manifest = read_manifest(manifest_path)
    known = manifest.get(dest.name)
    download(url, dest, sha256=known, **kwargs)
    if known is None:
        manifest[dest.name] = _file_digests(dest, ["sha256"])["sha256"]
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        tmp = manifest_path.with_name(manifest_path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        replace_durably(tmp, manifest_path)
    return dest


def _check_inside(archive: Path, root: Path, member: str, relative: str) -> None:
    """Refuse `member` when `relative` (its path, or its link target) leaves `root`."""
    if not (root / relative).resolve().is_relative_to(root):
        raise ExtractError(
            f"refusing to extract {archive}: member {member!r} resolves outside the "
            "destination folder (path traversal)"
        )


def _unpack_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as tar:  # detects gz, bz2 and xz compression itself
        members = tar.getmembers()
        for member in members:
            _check_inside(archive, staging, member.name, member.name)
            if member.issym():  # relative to the link's own folder
                target = os.path.join(os.path.dirname(member.name), member.linkname)
                _check_inside(archive, staging, member.name, target)
            elif member.islnk():  # relative to the archive root
                _check_inside(archive, staging, member.name, member.linkname)
        tar.extractall(staging, members=members, **_TAR_FILTER)


def _unpack_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_inside(archive, staging, name, name)
        zf.extractall(staging)


def _decompress(opener: Callable, archive: Path, staging: Path) -> None:
    """A single compressed file: `name.xml.bz2` becomes `name.xml`."""
    with opener(archive, "rb") as source, open(staging / archive.stem, "wb") as target:
        shutil.copyfileobj(source, target, HASH_BLOCK)


def _unpacker(archive: Path) -> Callable[[Path, Path], None]:
    name = archive.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return _unpack_tar
    if name.endswith(".zip"):
        return _unpack_zip
    opener = _SINGLE_FILE_OPENERS.get(archive.suffix.lower())
    if opener is None:
        raise ExtractError(
            f"cannot extract {archive}: unknown archive format (expected .tar, .tar.gz, "
            ".tgz, .tar.bz2, .tar.xz, .zip, .gz, .bz2 or .xz)"
        )
    return functools.partial(_decompress, opener)


def _move_into(source: Path, dest_dir: Path) -> None:
    """Move every entry of `source` into `dest_dir`, merging folders that already exist."""
    for entry in source.iterdir():
        target = dest_dir / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)  # e.g. a second archive filling the same top folder
            continue
        # os.replace overwrites a file, but not a folder with a file or a file with a folder.
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif entry.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()
        os.replace(entry, target)


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Unpack `archive` into `dest_dir` once; returns `dest_dir`.

    Entries appear at their final names only once fully written. A marker file
    `.<archive name>.extracted` in `dest_dir` makes later calls return at once (delete it
    to extract again). Raises `ExtractError` for unknown formats, corrupt archives and
    members that would land outside `dest_dir`.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = dest_dir / f".{archive.name}.extracted"
    if marker.exists():
        return dest_dir
    unpack = _unpacker(archive)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = dest_dir.resolve() / f".{archive.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left behind by an interrupted call
    staging.mkdir()
    try:
        try:
            unpack(archive, staging)
        except _CORRUPT_ERRORS as error:
            raise ExtractError(f"cannot extract {archive}: {error}") from error
        _move_into(staging, dest_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.touch()
    return dest_dir
