"""The one guarded HTTP client every outbound request goes through (feeds, enclosures, transcripts).

fetch(url, *, max_bytes, etag=None, last_modified=None) -> FetchResult   conditional GET, body in memory
download(url, dest, *, max_bytes) -> DownloadResult                       streamed to a temp file, then renamed

What it guarantees (docs/security.md has the test for each):
- http and https only, for the first URL and for every redirect target; at most settings.fetch_max_redirects
  hops, each re-checked.
- Every hop's host is resolved once and every answer checked against app.net.addresses; the connection goes
  to the checked IP (app.net.backend), so DNS rebinding cannot switch it. Only hosts listed in
  settings.fetch_allow_hosts may resolve to loopback/private addresses.
- Connect timeout, plus one total deadline over the whole redirect chain, handshake and body.
- A byte cap counted on the wire and again after gzip/deflate decoding; Content-Length is a hint only.
- No proxies from the environment (trust_env=False), no cookies kept between hops.
Failures raise TransientError (worth retrying) or PermanentError (GoneError for 410) with a one-line reason
that never contains response body text.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import httpcore
import httpx

from app.config import get_settings
from app.errors import PermanentError, TransientError
from app.net.backend import Connector, GuardedBackend, Resolver, system_connect, system_resolve
from app.net.decode import ACCEPT_ENCODING, BoundedDecoder, OversizeError, looks_like_text_page, sniff_media

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_CODES = frozenset({301, 308})
TRANSIENT_CODES = frozenset({408, 425, 429})
CHUNK = 64 * 1024
SNIFF_BYTES = 512


class GoneError(PermanentError):
    """HTTP 410: the publisher says this resource is gone for good (a feed is retired, not retried)."""


class HTTPStatusError(PermanentError):
    """A final status we cannot use (404, 403, ...). `status` keeps the code for callers."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class TransientHTTPError(TransientError):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class FetchResult:
    status: int  # 200 or 304
    url: str  # final URL after redirects
    permanent_url: str | None  # where an unbroken chain of 301/308 from the first URL led, if anywhere
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content: bytes = b""

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    url: str
    permanent_url: str | None
    content_type: str | None
    sniffed: str | None  # container named by the first bytes ("mp3 (ID3)", "ogg", ...) or None


def check_url(url: str | httpx.URL) -> httpx.URL:
    """Parse and vet a URL before any I/O: absolute http(s) with a host, nothing else."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url).strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise PermanentError(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise PermanentError(f"refused URL scheme {parsed.scheme or '(none)'!r}: only http and https")
    host = parsed.host
    if not host or any(c.isspace() or c == "\x00" for c in host):
        raise PermanentError("refused URL without a valid host")
    return parsed


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs ~20 ms and the context is safe to share read-only.
    return httpx.create_ssl_context(trust_env=False)


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool rebuilt on our network backend."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(), network_backend=backend, retries=0, max_connections=4
        )


def _status_error(status: int, url: str) -> Exception:
    where = _short(url)
    if status == 410:
        return GoneError(f"HTTP 410 Gone from {where}")
    if status >= 500 or status in TRANSIENT_CODES:
        return TransientHTTPError(f"HTTP {status} from {where}", status)
    return HTTPStatusError(f"HTTP {status} from {where}", status)


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."


class GuardedClient:
    """Holds the resolver/connector so tests can pin DNS answers and observe what is dialed."""

    def __init__(self, *, resolver: Resolver = system_resolve, connector: Connector = system_connect) -> None:
        self.resolver = resolver
        self.connector = connector
        self.last_backend: GuardedBackend | None = None

    @contextmanager
    def _open(self, url: str, headers: dict[str, str]) -> Iterator[tuple[httpx.Response, str, str | None]]:
        """GET url following redirects by hand; yields the final (unread) response, its URL, permanent URL."""
        settings = get_settings()
        current = check_url(url)
        backend = GuardedBackend(
            deadline=time.monotonic() + settings.fetch_total_timeout,
            allow_hosts=settings.fetch_allow_hosts,
            resolver=self.resolver,
            connector=self.connector,
        )
        self.last_backend = backend
        timeout = httpx.Timeout(settings.fetch_total_timeout, connect=settings.fetch_connect_timeout)
        base_headers = {"User-Agent": settings.fetch_user_agent, "Accept-Encoding": ACCEPT_ENCODING}
        permanent: str | None = None
        unbroken = True  # every hop so far was 301/308
        try:
            with httpx.Client(
                transport=_GuardedTransport(backend),
                trust_env=False,
                follow_redirects=False,
                timeout=timeout,
                headers=base_headers,
            ) as client:
                for hop in range(settings.fetch_max_redirects + 1):
                    request = client.build_request("GET", current, headers=headers)
                    response = client.send(request, stream=True)
                    if response.status_code not in REDIRECT_CODES:
                        try:
                            yield response, str(current), permanent
                        finally:
                            response.close()
                        return
                    location = response.headers.get("location")
                    response.close()
                    if not location:
                        raise PermanentError(f"HTTP {response.status_code} without Location from {current}")
                    if hop == settings.fetch_max_redirects:
                        raise PermanentError(f"too many redirects (more than {settings.fetch_max_redirects})")
                    try:
                        target = check_url(current.join(location))
                    except httpx.InvalidURL as exc:
                        raise PermanentError(f"malformed redirect Location: {exc}") from exc
                    if unbroken and response.status_code in PERMANENT_REDIRECT_CODES:
                        permanent = str(target)
                    else:
                        unbroken = False
                    current = target
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out fetching {_short(str(current))}: {exc or 'timeout'}") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentError(f"invalid URL: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"connection error for {_short(str(current))}: {exc}") from exc

    def fetch(
        self, url: str, *, max_bytes: int, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with self._open(url, headers) as (response, final, permanent):
            status = response.status_code
            if status == 304:
                return FetchResult(304, final, permanent, _headers(response))
            if not 200 <= status < 300:
                raise _status_error(status, final)
            body = bytearray()
            for piece in _body(response, max_bytes):
                body += piece
            return FetchResult(200, final, permanent, _headers(response), bytes(body))

    def download(self, url: str, dest: Path, *, max_bytes: int) -> DownloadResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with self._open(url, {}) as (response, final, permanent), os.fdopen(fd, "wb") as out:
                if not 200 <= response.status_code < 300:
                    raise _status_error(response.status_code, final)
                head = b""
                sniffed: str | None = None
                size = 0
                for piece in _body(response, max_bytes):
                    if len(head) < SNIFF_BYTES:
                        head += piece[: SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            sniffed = _check_media(head)
                    out.write(piece)
                    size += len(piece)
                if len(head) < SNIFF_BYTES:
                    sniffed = _check_media(head)
            os.replace(tmp, dest)
            return DownloadResult(dest, size, final, permanent, response.headers.get("content-type"), sniffed)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a partial file behind
            raise


def _check_media(head: bytes) -> str | None:
    sniffed = sniff_media(head)
    if sniffed is None and looks_like_text_page(head):
        raise PermanentError("download is a text/HTML page, not audio")
    return sniffed


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def _body(response: httpx.Response, max_bytes: int) -> Iterator[bytes]:
    """Yield decoded body pieces; the cap is checked on the wire and after decoding."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise OversizeError(f"response declares {declared} bytes, cap is {max_bytes}")
    decoder = BoundedDecoder(response.headers.get("content-encoding"))
    wire = 0
    decoded = 0
    try:
        for raw in response.iter_raw(CHUNK):
            wire += len(raw)
            if wire > max_bytes:
                raise OversizeError("response exceeds the byte cap on the wire")
            piece = decoder.feed(raw, max_bytes - decoded)
            decoded += len(piece)
            if piece:
                yield piece
    except OversizeError as exc:
        raise OversizeError(f"{exc.reason} ({max_bytes} bytes)") from None
    except httpx.TimeoutException as exc:
        raise TransientError(f"timed out reading {_short(str(response.url))}") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"connection broken reading {_short(str(response.url))}: {exc}") from exc


def default_client() -> GuardedClient:
    """The client the module-level functions use; tests monkeypatch this to pin DNS answers."""
    return GuardedClient()


def fetch(url: str, *, max_bytes: int, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
    return default_client().fetch(url, max_bytes=max_bytes, etag=etag, last_modified=last_modified)


def download(url: str, dest: Path, *, max_bytes: int) -> DownloadResult:
    return default_client().download(url, dest, max_bytes=max_bytes)
