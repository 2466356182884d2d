"""A static file server on 127.0.0.1 for the download tests: serves `files` (URL path ->
bytes), answers 404 for anything else, and records the paths asked for in `requests`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append(self.path)
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serve_files(files: dict[str, bytes] | None = None) -> Iterator[SimpleNamespace]:
    """`with serve_files({...}) as server:` -> server.url, server.files, server.requests
    (and server.state, the same object, for tests that reach through it)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = SimpleNamespace(files=dict(files or {}), requests=[])
    httpd.state = state
    # A short poll interval: shutdown() waits for the next poll, 0.5 s by default.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    host, port = httpd.server_address
    try:
        yield SimpleNamespace(
            url=f"http://{host}:{port}", files=state.files, requests=state.requests, state=state
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
