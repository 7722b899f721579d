"""HTTPS through the pinned connection: the IP is dialed, but SNI and certificate checks use the hostname.

A throw-away CA (trustme) signs a certificate for feeds.example; a TLS server on 127.0.0.1 records the SNI it
receives. DNS is pinned to a public address and the connector routes that address to the local server.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from app.errors import TransientError
from app.net import GuardedClient

PUBLIC_IP = "93.184.216.34"
# The package re-exports the function `fetch`, which shadows the submodule as an attribute.
fetch_module = sys.modules["app.net.fetch"]


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    authority = trustme.CA()
    context = ssl.create_default_context()
    authority.configure_trust(context)
    monkeypatch.setattr(fetch_module, "_ssl_context", lambda: context)  # trust the test CA, not certifi
    return authority


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[tuple[int, list[str | None]]]:
    sni_seen: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("feeds.example").configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: sni_seen.append(name)  # type: ignore[assignment,misc,func-returns-value]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"host={self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], sni_seen
    httpd.shutdown()
    httpd.server_close()


def pinned_client(port: int, dialed: list[str]) -> GuardedClient:
    def connect(ip: str, _port: int, timeout: float | None) -> socket.socket:
        dialed.append(ip)
        return socket.create_connection(("127.0.0.1", port), timeout)

    return GuardedClient(resolver=lambda host, _port: [PUBLIC_IP], connector=connect)


def test_https_dials_the_pinned_ip_with_hostname_sni(env: Path, tls_server: tuple[int, list[str | None]]) -> None:
    port, sni_seen = tls_server
    dialed: list[str] = []
    result = pinned_client(port, dialed).fetch(f"https://feeds.example:{port}/feed", max_bytes=100)
    assert result.content == f"host=feeds.example:{port}".encode()
    assert dialed == [PUBLIC_IP] and sni_seen == ["feeds.example"]


def test_certificate_checked_against_hostname_not_ip(env: Path, tls_server: tuple[int, list[str | None]]) -> None:
    port, _ = tls_server
    with pytest.raises(TransientError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        pinned_client(port, []).fetch(f"https://other.example:{port}/feed", max_bytes=100)
