"""A loopback stand-in for the Hugging Face Hub's file endpoint, for tests.

It answers `HEAD` and `GET /{repo_id}/resolve/{revision}/{filename}` with the
headers huggingface_hub relies on (X-Repo-Commit, ETag, Content-Length) and the
error codes it understands, for the files registered with `add`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOLVE = re.compile(r"/(?:datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)")


class HubServer:
    def __init__(self) -> None:
        self.commits: dict[str, str] = {}  # repo id -> its only commit
        self.files: dict[tuple[str, str], bytes] = {}  # (repo id, filename) -> content
        self.etags: dict[tuple[str, str], str] = {}  # (repo id, filename) -> an ETag other than the SHA-256
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.stall_after: int | None = None  # GET sends this many bytes, then hangs
        self.stalled = threading.Event()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, commit: str, filename: str, content: bytes) -> None:
        self.commits[repo_id] = commit
        self.files[repo_id, filename] = content

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.respond(send_body=False)

        def do_GET(self) -> None:
            self.respond(send_body=True)

        def respond(self, send_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            match = RESOLVE.fullmatch(self.path)
            if match is None or match["repo"] not in hub.commits:
                return self.error(404, "RepositoryNotFound")
            commit = hub.commits[match["repo"]]
            if match["revision"] not in (commit, "main"):
                return self.error(404, "RevisionNotFound")
            content = hub.files.get((match["repo"], match["filename"]))
            if content is None:
                return self.error(404, "EntryNotFound", commit)
            start = self.range_start()
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            etag = hub.etags.get((match["repo"], match["filename"]), hashlib.sha256(content).hexdigest())
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(content) - start))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()
            if send_body:
                self.send_body(content[start:])

        def range_start(self) -> int:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            return int(match[1]) if match else 0

        def send_body(self, body: bytes) -> None:
            if hub.stall_after is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:hub.stall_after])
            self.wfile.flush()
            hub.stalled.set()
            hub._closing.wait()

        def error(self, status: int, code: str, commit: str | None = None) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class FileServer:
    """A loopback web server of plain files, for catalogue files given by URL: `files` maps a path to its
    bytes, `redirects` a path to where it moved (as GitHub's release downloads do); `cut_after` makes the
    next GET send that many bytes and close the connection; `ranges=False` ignores Range headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, its Range header)
        self.cut_after: int | None = None
        self.ranges = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _file_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _file_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Range")))
            if self.path in server.redirects:
                self.send_response(302)
                self.send_header("Location", server.redirects[self.path])
                self.send_header("Content-Length", "0")
                return self.end_headers()
            content = server.files.get(self.path)
            if content is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match[1]) if match and server.ranges else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(content) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()
            self.send_body(content[start:])

        def send_body(self, body: bytes) -> None:
            cut, server.cut_after = server.cut_after, None
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
