"""The guarded client (app.net.fetch) against a real HTTP server on 127.0.0.1.

SSRF cases that need a *public* first hop use a pinned resolver ("feeds.example" -> 93.184.216.34) and a
connector that records the address it is asked to dial and then connects to the local server: the redirect
and rebinding checks run for real, only the DNS answer and the route are scripted (Feedbin/Discourse style).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import ipaddress
import socket
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from app import config
from app.errors import PermanentError, TransientError
from app.net import BlockedAddressError, GoneError, GuardedClient, HTTPStatusError, OversizeError, download, fetch
from tests.test_net_localserver import LocalServer, chunked, server, slow_drip  # noqa: F401

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
def allow(env: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:  # noqa: F811
    """The local server's host:port on the allow-list, as `make run` does for the demo feed."""
    monkeypatch.setenv("PODBRIEF_FETCH_ALLOW_HOSTS", server.host)
    config.reset_settings()
    return server


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"PODBRIEF_{name.upper()}", value)
    config.reset_settings()


class PinnedDNS:
    """Resolver answering from a table per call; connector that records the IP and dials the local server."""

    def __init__(self, server: LocalServer, answers: dict[str, list[list[str]]]) -> None:  # noqa: F811
        self.server = server
        self.answers = answers
        self.calls: list[str] = []
        self.dialed: list[str] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        try:
            return [str(ipaddress.ip_address(host))]  # a literal resolves to itself, as getaddrinfo does
        except ValueError:
            pass
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def connect(self, ip: str, port: int, timeout: float | None) -> socket.socket:
        self.dialed.append(ip)
        return socket.create_connection(("127.0.0.1", self.server.port), timeout)

    def client(self) -> GuardedClient:
        return GuardedClient(resolver=self.resolve, connector=self.connect)


# ------------------------------------------------------------------------------------------- basics


def test_fetch_ok_with_allowlisted_host(allow: LocalServer) -> None:
    allow.reply("/feed", 200, b"<rss/>", {"ETag": '"v1"', "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"})
    result = fetch(allow.url("/feed"), max_bytes=1000)
    assert (result.status, result.content, result.etag) == (200, b"<rss/>", '"v1"')
    assert result.last_modified == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert result.url == allow.url("/feed") and result.permanent_url is None
    assert allow.seen[0].headers["user-agent"].startswith("podbrief/")


def test_conditional_get_sends_validators_and_returns_304(allow: LocalServer) -> None:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        fresh = req.headers.get("If-None-Match") == '"v1"'
        req.send_response(304 if fresh else 200)
        req.send_header("Content-Length", "0" if fresh else "3")
        req.end_headers()
        if not fresh:
            req.wfile.write(b"new")

    allow.route("/feed", handle)
    result = fetch(allow.url("/feed"), max_bytes=1000, etag='"v1"', last_modified="Wed, 01 Jan 2025 00:00:00 GMT")
    assert result.not_modified and result.content == b""
    assert allow.seen[0].headers["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, HTTPStatusError),
        (410, GoneError),
        (403, HTTPStatusError),
        (500, TransientError),
        (503, TransientError),
        (429, TransientError),
    ],
)
def test_status_codes_map_to_error_kinds(allow: LocalServer, status: int, error: type[Exception]) -> None:
    allow.reply("/x", status, b"secret upstream body")
    with pytest.raises(error) as info:
        fetch(allow.url("/x"), max_bytes=1000)
    assert str(status) in str(info.value) and "secret" not in str(info.value)  # no body text in reasons
    assert isinstance(info.value, PermanentError) == (status in (403, 404, 410))


def test_gone_is_distinguishable_from_not_found(allow: LocalServer) -> None:
    allow.reply("/gone", 410)
    allow.reply("/missing", 404)
    with pytest.raises(GoneError):
        fetch(allow.url("/gone"), max_bytes=10)
    with pytest.raises(PermanentError) as info:
        fetch(allow.url("/missing"), max_bytes=10)
    assert not isinstance(info.value, GoneError)


def test_connection_refused_is_transient(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    set_env(monkeypatch, fetch_allow_hosts=f"127.0.0.1:{port}")
    with pytest.raises(TransientError):
        fetch(f"http://127.0.0.1:{port}/", max_bytes=10)


def test_environment_proxies_are_ignored(allow: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: any use of it fails
    allow.reply("/feed", 200, b"direct")
    assert fetch(allow.url("/feed"), max_bytes=100).content == b"direct"


# ------------------------------------------------------------------------------------------- SSRF


def test_loopback_refused_without_allow_list(env: Path, server: LocalServer) -> None:  # noqa: F811
    server.reply("/feed", 200, b"internal")
    with pytest.raises(BlockedAddressError, match="loopback"):
        fetch(server.url("/feed"), max_bytes=100)
    assert server.seen == []  # refused before connecting


def test_allow_list_is_port_specific(env: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    set_env(monkeypatch, fetch_allow_hosts=f"127.0.0.1:{server.port + 1}")
    with pytest.raises(BlockedAddressError):
        fetch(server.url("/feed"), max_bytes=100)
    set_env(monkeypatch, fetch_allow_hosts="127.0.0.1")  # a bare host allows any port
    server.reply("/feed", 200, b"ok")
    assert fetch(server.url("/feed"), max_bytes=100).content == b"ok"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/",
        "http://0:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f.1:{port}/",
        "http://[::]:{port}/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_internal_addresses_refused(env: Path, server: LocalServer, url: str) -> None:  # noqa: F811
    with pytest.raises(PermanentError) as info:
        fetch(url.format(port=server.port), max_bytes=100)
    assert isinstance(info.value, BlockedAddressError) or "invalid URL" in info.value.reason
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/feed",
        "gopher://127.0.0.1:6379/_INFO",
        "data:text/xml,<rss/>",
        "javascript:alert(1)",
        "feed://example.com/rss",
        "/etc/passwd",
        "example.com/feed",
        "http:///nohost",
    ],
)
def test_non_http_schemes_refused_before_io(env: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError("I/O attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_io)
    monkeypatch.setattr(socket, "create_connection", no_io)
    with pytest.raises(PermanentError):
        fetch(url, max_bytes=100)


def test_redirect_from_public_host_to_loopback_is_refused(env: Path, server: LocalServer) -> None:  # noqa: F811
    """First hop allowed (public answer), second hop 127.0.0.1: refused, and never requested."""
    dns = PinnedDNS(server, {"feeds.example": [[PUBLIC_IP]]})
    server.redirect("/start", server.url("/internal"))
    server.reply("/internal", 200, b"INTERNAL-ADMIN")
    with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.1"):
        dns.client().fetch(f"http://feeds.example:{server.port}/start", max_bytes=100)
    assert dns.dialed == [PUBLIC_IP]
    assert server.hits("/start") == 1 and server.hits("/internal") == 0
    assert server.seen[0].headers["host"] == f"feeds.example:{server.port}"  # Host stays the name, not the IP


def test_redirect_from_allow_listed_host_to_other_loopback_refused(allow: LocalServer) -> None:
    """The allow-list names one host:port; a redirect from it to another internal name or port is refused."""
    allow.redirect("/to-localhost", f"http://localhost:{allow.port}/internal")
    allow.redirect("/to-other-port", f"http://127.0.0.1:{allow.port + 1}/internal")
    allow.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    for path in ("/to-localhost", "/to-other-port", "/to-metadata"):
        with pytest.raises(BlockedAddressError):
            fetch(allow.url(path), max_bytes=100)
    assert allow.hits("/internal") == 0


def test_redirect_to_metadata_and_to_file_scheme_refused(env: Path, server: LocalServer) -> None:  # noqa: F811
    dns = PinnedDNS(server, {"feeds.example": [[PUBLIC_IP]]})
    server.redirect("/meta", "http://169.254.169.254/latest/meta-data/")
    server.redirect("/file", "file:///etc/passwd")
    with pytest.raises(BlockedAddressError, match=r"169\.254\.169\.254"):
        dns.client().fetch(f"http://feeds.example:{server.port}/meta", max_bytes=100)
    with pytest.raises(PermanentError, match="scheme"):
        dns.client().fetch(f"http://feeds.example:{server.port}/file", max_bytes=100)


def test_dns_rebinding_cannot_switch_the_dialed_address(env: Path, server: LocalServer) -> None:  # noqa: F811
    """Public answer first, 127.0.0.1 afterwards: one lookup per connection, and the vetted IP is dialed."""
    dns = PinnedDNS(server, {"rebind.example": [[PUBLIC_IP], ["127.0.0.1"]]})
    server.reply("/feed", 200, b"<rss/>")
    result = dns.client().fetch(f"http://rebind.example:{server.port}/feed", max_bytes=100)
    assert result.content == b"<rss/>"
    assert dns.calls == ["rebind.example"] and dns.dialed == [PUBLIC_IP]


def test_mixed_answers_refuse_the_host(env: Path, server: LocalServer) -> None:  # noqa: F811
    """Policy: any blocked answer refuses the host; 127.0.0.1 is never dialed (nor the public one)."""
    dns = PinnedDNS(server, {"mixed.example": [[PUBLIC_IP, "127.0.0.1"]]})
    with pytest.raises(BlockedAddressError):
        dns.client().fetch(f"http://mixed.example:{server.port}/feed", max_bytes=100)
    assert dns.dialed == []


def test_every_redirect_hop_is_resolved_and_checked(env: Path, server: LocalServer) -> None:  # noqa: F811
    dns = PinnedDNS(server, {"a.example": [[PUBLIC_IP]], "b.example": [["10.0.0.7"]]})
    server.redirect("/a", f"http://b.example:{server.port}/b")
    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.7"):
        dns.client().fetch(f"http://a.example:{server.port}/a", max_bytes=100)
    assert dns.calls == ["a.example", "b.example"]


def test_redirect_limit(allow: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(7):
        allow.redirect(f"/r{i}", f"/r{i + 1}")
    allow.reply("/r7", 200, b"end")
    set_env(monkeypatch, fetch_allow_hosts=allow.host, fetch_max_redirects="5")
    with pytest.raises(PermanentError, match="too many redirects"):
        fetch(allow.url("/r1"), max_bytes=100)  # 6 redirects
    assert fetch(allow.url("/r2"), max_bytes=100).content == b"end"  # exactly 5


def test_permanent_redirect_chain_reports_new_url(allow: LocalServer) -> None:
    allow.redirect("/old", "/older", 301)
    allow.redirect("/older", "/new", 308)
    allow.reply("/new", 200, b"feed")
    allow.redirect("/temp", "/old", 302)
    moved = fetch(allow.url("/old"), max_bytes=100)
    assert moved.permanent_url == allow.url("/new") and moved.url == allow.url("/new")
    assert fetch(allow.url("/temp"), max_bytes=100).permanent_url is None  # a 302 first: not a move


def test_redirect_without_location_is_an_error(allow: LocalServer) -> None:
    allow.reply("/r", 302)
    with pytest.raises(PermanentError, match="Location"):
        fetch(allow.url("/r"), max_bytes=100)


# ------------------------------------------------------------------------------------------- size & time


def test_declared_oversize_refused(allow: LocalServer) -> None:
    allow.reply("/big", 200, b"x" * 5000)
    with pytest.raises(OversizeError):
        fetch(allow.url("/big"), max_bytes=1000)


def test_chunked_body_without_length_capped(allow: LocalServer) -> None:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        with contextlib.suppress(OSError):  # the client hangs up at the cap
            chunked(req, (b"y" * 4096 for _ in range(1000)))  # 4 MB, no Content-Length

    allow.route("/chunked", handle)
    with pytest.raises(OversizeError):
        fetch(allow.url("/chunked"), max_bytes=64 * 1024)


def _gzip_bomb(megabytes: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(comp.compress(zeros) for _ in range(megabytes)) + comp.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_bomb(200)  # 200 MB of zeros in ~200 KB


def test_gzip_bomb_stopped_at_cap_with_bounded_memory(allow: LocalServer, bomb: bytes) -> None:
    allow.reply("/bomb", 200, bomb, {"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})
    cap = 1024 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(OversizeError, match="decompression"):
        fetch(allow.url("/bomb"), max_bytes=cap)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(bomb) < 400_000
    assert peak < 8 * cap, f"peak {peak} bytes"  # measured ~2-3x cap: one bounded decode call + the body
    assert elapsed < 5


def test_stacked_encodings_refused(allow: LocalServer) -> None:
    allow.reply("/x", 200, gzip.compress(gzip.compress(b"hi")), {"Content-Encoding": "gzip, gzip"})
    with pytest.raises(PermanentError, match="stacked"):
        fetch(allow.url("/x"), max_bytes=1000)


def raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_small_encoded_bodies_decode(allow: LocalServer, encoding: str, encode: Callable[[bytes], bytes]) -> None:
    body = b"<rss>" + b"episode " * 500 + b"</rss>"
    allow.reply("/x", 200, encode(body), {"Content-Encoding": encoding})
    assert fetch(allow.url("/x"), max_bytes=10_000).content == body


def test_concatenated_gzip_members_decode(allow: LocalServer) -> None:
    allow.reply("/x", 200, gzip.compress(b"one ") + gzip.compress(b"two"), {"Content-Encoding": "gzip"})
    assert fetch(allow.url("/x"), max_bytes=100).content == b"one two"


def test_slow_drip_hits_total_deadline(allow: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, fetch_allow_hosts=allow.host, fetch_total_timeout="1.0")
    allow.route("/drip", slow_drip(0.05, 10_000))  # 20 bytes/s: would take ~8 minutes
    started = time.perf_counter()
    with pytest.raises(TransientError, match="timed out"):
        fetch(allow.url("/drip"), max_bytes=1_000_000)
    assert time.perf_counter() - started < 3


def test_silent_server_hits_deadline(allow: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, fetch_allow_hosts=allow.host, fetch_total_timeout="1.0")
    allow.route("/hang", lambda req: time.sleep(4))
    started = time.perf_counter()
    with pytest.raises(TransientError):
        fetch(allow.url("/hang"), max_bytes=100)
    assert time.perf_counter() - started < 3


# ------------------------------------------------------------------------------------------- download

MP3_HEAD = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(600)


def test_download_streams_to_dest(allow: LocalServer, tmp_path: Path) -> None:
    allow.reply("/a.mp3", 200, MP3_HEAD, {"Content-Type": "audio/mpeg"})
    dest = tmp_path / "audio" / "1.mp3"
    result = download(allow.url("/a.mp3"), dest, max_bytes=10_000)
    assert dest.read_bytes() == MP3_HEAD and result.size == len(MP3_HEAD)
    assert result.sniffed == "mp3 (ID3)" and result.content_type == "audio/mpeg"


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def test_download_refuses_html_served_as_audio(allow: LocalServer, tmp_path: Path) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>" + b" " * 2000
    allow.reply("/ep.mp3", 200, page, {"Content-Type": "audio/mpeg"})
    with pytest.raises(PermanentError, match="HTML"):
        download(allow.url("/ep.mp3"), tmp_path / "dl" / "2.mp3", max_bytes=100_000)
    assert _leftovers(tmp_path / "dl") == []


def test_download_oversize_midstream_leaves_no_partial(allow: LocalServer, tmp_path: Path) -> None:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        with contextlib.suppress(OSError):
            chunked(req, [MP3_HEAD] + [bytes(8192)] * 100)

    allow.route("/big.mp3", handle)
    with pytest.raises(OversizeError):
        download(allow.url("/big.mp3"), tmp_path / "dl" / "3.mp3", max_bytes=50_000)
    assert _leftovers(tmp_path / "dl") == []


def test_download_refuses_loopback_enclosure(env: Path, server: LocalServer, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(BlockedAddressError):
        download(server.url("/a.mp3"), tmp_path / "x.mp3", max_bytes=100)
    assert not (tmp_path / "x.mp3").exists()
