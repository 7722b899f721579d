"""A tiny HTTP server on 127.0.0.1 that serves scripted responses, for the fetch/poll/download tests.

Only the edge of the system is scripted (what a remote server says); the client, the DNS check, the decoder
and the database code under test are the real ones. Imported by tests/test_net_*.py, test_feeds_*.py and
test_audio_*.py; the two tests at the bottom check the helper itself.
"""

from __future__ import annotations

import http.server
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class QuietOnHangUp(http.server.ThreadingHTTPServer):
    """A test server that does not print a traceback when the client hangs up: the fetcher under test drops
    connections on purpose (a body over its cap, a redirect it refuses, a slow server), and the chaos tests kill
    workers mid-download; a reset connection there is the point, not a failure. Other errors print."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class LocalServer:
    server: http.server.ThreadingHTTPServer
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def reply(self, path: str, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        def handle(req: http.server.BaseHTTPRequestHandler) -> None:
            req.send_response(status)
            sent = {k.lower() for k in (headers or {})}
            for name, value in (headers or {}).items():
                req.send_header(name, value)
            if "content-length" not in sent and "transfer-encoding" not in sent:
                req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            if body:
                req.wfile.write(body)

        self.routes[path] = handle

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.reply(path, status, headers={"Location": location})

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)


def chunked(req: http.server.BaseHTTPRequestHandler, pieces: Iterator[bytes] | list[bytes]) -> None:
    """Write a chunked body (no Content-Length): the cap must hold without a declared size."""
    for piece in pieces:
        req.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    req.wfile.write(b"0\r\n\r\n")


def slow_drip(delay: float, total: int) -> Handler:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(total))
        req.end_headers()
        try:
            for _ in range(total):
                req.wfile.write(b"x")
                req.wfile.flush()
                time.sleep(delay)
        except OSError:
            pass  # the client gave up, as it should

    return handle


@pytest.fixture
def server() -> Iterator[LocalServer]:
    state: dict[str, LocalServer] = {}

    class RequestHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            local = state["server"]
            path = self.path.split("?", 1)[0]
            local.seen.append(Seen(path, {k.lower(): v for k, v in self.headers.items()}))
            handler = local.routes.get(path)
            if handler is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            handler(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = QuietOnHangUp(("127.0.0.1", 0), RequestHandler)
    httpd.daemon_threads = True
    local = LocalServer(httpd)
    state["server"] = local
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield local
    httpd.shutdown()
    httpd.server_close()


def test_helper_serves_scripted_reply(server: LocalServer) -> None:
    server.reply("/x", 201, b"made", {"X-Test": "1"})
    response = httpx.get(server.url("/x"), trust_env=False)
    assert (response.status_code, response.content, response.headers["x-test"]) == (201, b"made", "1")
    assert server.hits("/x") == 1


def test_helper_unknown_path_is_404(server: LocalServer) -> None:
    assert httpx.get(server.url("/nope"), trust_env=False).status_code == 404
