"""Downloads against a real HTTP server on 127.0.0.1: resume, retry, checksums; extraction."""

import bz2
import gzip
import hashlib
import io
import lzma
import random
import re
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from common.download import (
    ChecksumError,
    DownloadError,
    ExtractError,
    download,
    extract,
    verify_checksum,
)

DATA = random.Random(0).randbytes(300_000)
SHA256 = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
CORRUPT = DATA[:1000] + bytes([DATA[1000] ^ 0xFF]) + DATA[1001:]
CUT = 50_000  # bytes sent before /drop and /stall break off
STALL_S = 1.0  # how long /stall goes quiet: well past the client's timeout in the test
FAST = dict(backoff=0.01, chunk_size=10_000)  # CUT is a whole number of chunks


class Handler(BaseHTTPRequestHandler):
    """Endpoints: /data, /drop, /stall, /norange, /corrupt, /missing, /unavailable."""

    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/data":
            self.send_body(DATA)
        elif self.path == "/drop":
            state.drops -= 1
            self.send_body(DATA, limit=CUT if state.drops >= 0 else None)
        elif self.path == "/stall":
            first = len(state.requests) == 1
            self.send_body(DATA, limit=CUT if first else None)
            if first:
                self.wfile.flush()
                time.sleep(STALL_S)  # then close without the rest
        elif self.path == "/norange":
            self.send_body(DATA, honour_range=False)
        elif self.path == "/corrupt":
            self.send_body(CORRUPT)
        elif self.path == "/unavailable" and state.failures > 0:
            state.failures -= 1
            self.send_error(503)
        elif self.path == "/unavailable":
            self.send_body(DATA)
        else:
            self.send_error(404)

    def send_body(self, body, *, honour_range=True, limit=None):
        """Full Content-Length headers, then the body (only `limit` bytes of it, if given)."""
        start = 0
        requested = self.headers.get("Range")
        if honour_range and requested:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        end = len(body) if limit is None else start + limit
        self.wfile.write(body[start:end])


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = SimpleNamespace(requests=[], drops=0, failures=0)
    # A short poll interval: shutdown() waits for the next poll, 0.5 s by default.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    host, port = httpd.server_address
    yield SimpleNamespace(url=f"http://{host}:{port}", state=httpd.state)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def sleeps(monkeypatch):
    """Record back-off sleeps instead of sleeping."""
    recorded = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


def part_of(dest):
    return dest.with_name(dest.name + ".part")


# --- download: the happy path and skipping ------------------------------------------------


def test_download_writes_exact_bytes_atomically_and_silently(server, tmp_path, capsys):
    dest = tmp_path / "sub" / "data.bin"
    assert download(f"{server.url}/data", dest, sha256=SHA256, **FAST) == dest
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert server.state.requests == [("/data", None)]
    assert capsys.readouterr().err == ""  # stderr is not a terminal: no progress bar


def test_md5_and_sha256_together(server, tmp_path):
    dest = download(f"{server.url}/data", tmp_path / "d", sha256=SHA256, md5=MD5.upper(), **FAST)
    assert dest.read_bytes() == DATA


def test_existing_dest_with_right_checksum_skips_network(server, tmp_path):
    dest = tmp_path / "d"
    dest.write_bytes(DATA)
    download(f"{server.url}/data", dest, sha256=SHA256, **FAST)
    download(f"{server.url}/data", dest, md5=MD5, **FAST)
    download(f"{server.url}/data", dest, **FAST)  # no checksum: existence is enough
    assert server.state.requests == []


def test_existing_dest_with_wrong_checksum_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "d"
    dest.write_bytes(b"an older version")
    download(f"{server.url}/data", dest, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/data", None)]


def test_file_url(tmp_path):
    source = tmp_path / "mirror" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(DATA)
    dest = download(source.as_uri(), tmp_path / "d", sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA


def test_missing_file_url_fails_at_once(tmp_path, sleeps):
    url = (tmp_path / "absent.bin").as_uri()
    with pytest.raises(DownloadError, match=re.escape(url)):
        download(url, tmp_path / "d", **FAST)
    assert sleeps == []


# --- download: resume and retry -----------------------------------------------------------


def test_dropped_connections_resume_with_range(server, tmp_path, sleeps):
    server.state.drops = 2
    dest = download(f"{server.url}/drop", tmp_path / "d", sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [
        ("/drop", None),
        ("/drop", f"bytes={CUT}-"),
        ("/drop", f"bytes={2 * CUT}-"),
    ]
    assert sleeps == [0.01, 0.02]  # backoff * 2**k


def test_read_timeout_resumes_with_range(server, tmp_path):
    dest = download(f"{server.url}/stall", tmp_path / "d", sha256=SHA256, timeout=0.2, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/stall", None), ("/stall", f"bytes={CUT}-")]


def test_resume_from_part_left_by_earlier_call(server, tmp_path):
    dest = tmp_path / "d"
    part_of(dest).write_bytes(DATA[:123_456])
    download(f"{server.url}/data", dest, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/data", "bytes=123456-")]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "d"
    part_of(dest).write_bytes(b"x" * 1000)  # would corrupt the file if appended to
    download(f"{server.url}/norange", dest, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/norange", "bytes=1000-")]


def test_complete_part_is_finished_after_416(server, tmp_path):
    dest = tmp_path / "d"
    part_of(dest).write_bytes(DATA)
    download(f"{server.url}/data", dest, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/data", f"bytes={len(DATA)}-")]


def test_part_longer_than_file_restarts_after_416(server, tmp_path):
    dest = tmp_path / "d"
    part_of(dest).write_bytes(DATA + b"tail")
    download(f"{server.url}/data", dest, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/data", f"bytes={len(DATA) + 4}-"), ("/data", None)]


def test_stale_part_gets_one_fresh_download_on_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "d"
    part_of(dest).write_bytes(bytes(1000))  # not the first 1000 bytes of DATA
    download(f"{server.url}/data", dest, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/data", "bytes=1000-"), ("/data", None)]


def test_unavailable_is_retried_with_backoff(server, tmp_path, sleeps):
    server.state.failures = 2
    dest = download(f"{server.url}/unavailable", tmp_path / "d", sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert len(server.state.requests) == 3
    assert sleeps == [0.01, 0.02]


# --- download: failures -------------------------------------------------------------------


def test_corrupt_download_names_url_and_digests_and_leaves_nothing(server, tmp_path, sleeps):
    dest = tmp_path / "d"
    url = f"{server.url}/corrupt"
    with pytest.raises(ChecksumError) as info:
        download(url, dest, sha256=SHA256, **FAST)
    message = str(info.value)
    actual = hashlib.sha256(CORRUPT).hexdigest()
    for expected_text in (url, str(dest), "sha256", SHA256, actual):
        assert expected_text in message
    assert not dest.exists()
    assert not part_of(dest).exists()
    assert len(server.state.requests) == 1  # fresh bytes: fetching them again would not help
    assert sleeps == []


def test_md5_mismatch_is_reported(server, tmp_path):
    with pytest.raises(ChecksumError, match=f"md5 mismatch: expected {'0' * 32}, actual {MD5}"):
        download(f"{server.url}/data", tmp_path / "d", md5="0" * 32, **FAST)


def test_404_fails_at_once(server, tmp_path, sleeps):
    dest = tmp_path / "d"
    url = f"{server.url}/missing"
    with pytest.raises(DownloadError) as info:
        download(url, dest, retries=5, **FAST)
    assert url in str(info.value)
    assert str(dest) in str(info.value)
    assert "404" in str(info.value)
    assert len(server.state.requests) == 1
    assert sleeps == []
    assert not dest.exists()


def test_giving_up_keeps_part_for_the_next_call(server, tmp_path, sleeps):
    dest = tmp_path / "d"
    url = f"{server.url}/drop"
    server.state.drops = 10
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha256=SHA256, retries=2, **FAST)
    message = str(info.value)
    assert url in message
    assert str(dest) in message
    assert "after 3 attempts" in message
    assert f"connection closed after {CUT} of {len(DATA) - 2 * CUT} bytes" in message
    assert part_of(dest).read_bytes() == DATA[: 3 * CUT]
    assert not dest.exists()

    server.state.drops = 0
    download(url, dest, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.state.requests[-1] == ("/drop", f"bytes={3 * CUT}-")
    assert len(server.state.requests) == 4


# --- verify_checksum ----------------------------------------------------------------------


def test_verify_checksum(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(DATA)
    verify_checksum(path, sha256=SHA256, md5=MD5)
    wrong = "f" * 64
    with pytest.raises(ChecksumError) as info:
        verify_checksum(path, sha256=wrong)
    assert str(info.value) == f"{path}: sha256 mismatch: expected {wrong}, actual {SHA256}"
    with pytest.raises(ValueError):
        verify_checksum(path)


# --- extract ------------------------------------------------------------------------------


def add_file(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar(path, mode, files):
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            add_file(tar, name, data)
    return path


FILES = {"corpus/train.txt": b"train\n" * 100, "corpus/dev/dev.txt": b"dev\n", "README": b"r"}


def assert_extracted(dest_dir, archive_name):
    for name, data in FILES.items():
        assert (dest_dir / name).read_bytes() == data
    assert (dest_dir / f".{archive_name}.extracted").exists()
    assert not (dest_dir / f".{archive_name}.partial").exists()


@pytest.mark.parametrize(
    "name, mode",
    [
        ("a.tar", "w"),
        ("a.tar.gz", "w:gz"),
        ("a.tgz", "w:gz"),
        ("a.tar.bz2", "w:bz2"),
        ("a.tar.xz", "w:xz"),
    ],
)
def test_extract_tar(tmp_path, name, mode):
    archive = make_tar(tmp_path / name, mode, FILES)
    dest_dir = tmp_path / "out"
    assert extract(archive, dest_dir) == dest_dir
    assert_extracted(dest_dir, name)


def test_extract_zip(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    assert extract(archive, tmp_path / "out") == tmp_path / "out"
    assert_extracted(tmp_path / "out", "a.zip")


@pytest.mark.parametrize(
    "suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)]
)
def test_extract_single_file(tmp_path, suffix, compress):
    archive = tmp_path / f"dump.xml{suffix}"
    archive.write_bytes(compress(DATA))
    dest_dir = extract(archive, tmp_path / "out")
    assert sorted(p.name for p in dest_dir.iterdir()) == [
        f".dump.xml{suffix}.extracted",
        "dump.xml",
    ]
    assert (dest_dir / "dump.xml").read_bytes() == DATA


def test_marker_skips_repeated_extraction(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", "w:gz", FILES)
    dest_dir = tmp_path / "out"
    extract(archive, dest_dir)
    (dest_dir / "README").unlink()
    archive.unlink()  # a repeated call needs neither the archive nor the work
    assert extract(archive, dest_dir) == dest_dir
    assert not (dest_dir / "README").exists()


def test_second_archive_merges_into_existing_folder(tmp_path):
    dest_dir = tmp_path / "out"
    extract(make_tar(tmp_path / "a.tar", "w", {"glue/a.tsv": b"a"}), dest_dir)
    extract(make_tar(tmp_path / "b.tar", "w", {"glue/b.tsv": b"b", "glue/a.tsv": b"new"}), dest_dir)
    assert (dest_dir / "glue/a.tsv").read_bytes() == b"new"
    assert (dest_dir / "glue/b.tsv").read_bytes() == b"b"


def assert_refused(archive, dest_dir, member):
    with pytest.raises(ExtractError) as info:
        extract(archive, dest_dir)
    assert str(archive) in str(info.value)
    assert repr(member) in str(info.value)
    assert list(dest_dir.iterdir()) == []  # nothing written, no marker


@pytest.mark.parametrize("member", ["../evil.txt", "corpus/../../evil.txt", "/tmp/evil.txt"])
def test_tar_path_traversal_is_refused(tmp_path, member):
    archive = make_tar(tmp_path / "a.tar", "w", {"ok.txt": b"ok", member: b"evil"})
    assert_refused(archive, tmp_path / "out", member)
    assert not (tmp_path / "evil.txt").exists()


def test_tar_symlink_out_of_destination_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("corpus/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../outside"
        tar.addfile(link)
    assert_refused(archive, tmp_path / "out", "corpus/link")


def test_zip_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../evil.txt", b"evil")
    assert_refused(archive, tmp_path / "out", "../evil.txt")
    assert not (tmp_path / "evil.txt").exists()


def test_unknown_format_is_refused(tmp_path):
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"Rar!")
    with pytest.raises(ExtractError, match=f"{re.escape(str(archive))}: unknown archive format"):
        extract(archive, tmp_path / "out")


@pytest.mark.parametrize("name", ["a.tar.gz", "a.zip", "a.txt.gz"])
def test_corrupt_archive_names_the_archive(tmp_path, name):
    archive = tmp_path / name
    good = make_tar(tmp_path / "good.tar.gz", "w:gz", FILES).read_bytes()
    archive.write_bytes(good[: len(good) // 2])  # cut short, as by an interrupted copy
    dest_dir = tmp_path / "out"
    with pytest.raises(ExtractError, match=f"cannot extract {re.escape(str(archive))}"):
        extract(archive, dest_dir)
    assert list(dest_dir.iterdir()) == []


# --- download_recorded: trust on first use ------------------------------------------------


def test_download_recorded_records_the_digest_then_checks_it(server, tmp_path):
    from common.download import download_recorded, read_manifest

    dest = download_recorded(f"{server.url}/data", tmp_path / "data.bin", **FAST)
    assert read_manifest(tmp_path / "sha256.json") == {"data.bin": SHA256}
    download_recorded(f"{server.url}/data", dest, **FAST)  # present and matching: no request
    assert server.state.requests == [("/data", None)]
    dest.unlink()
    with pytest.raises(ChecksumError):  # the server now sends other bytes
        download_recorded(f"{server.url}/corrupt", dest, **FAST)
    assert not dest.exists()


def test_download_recorded_names_a_bad_manifest(tmp_path):
    from common.download import download_recorded

    (tmp_path / "sha256.json").write_text("[1, 2]")
    with pytest.raises(DownloadError, match=r"sha256\.json: expected a JSON object"):
        download_recorded("http://127.0.0.1:9/x", tmp_path / "x")
