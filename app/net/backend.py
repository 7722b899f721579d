"""The httpcore network backend under every outbound request: resolve once, check, dial the checked IP.

httpcore asks the backend for a TCP stream to (hostname, port). We resolve the name ourselves exactly once,
refuse the whole host if ANY answer is a blocked address (Feedbin's policy: a name that answers with a private
address is hostile or misconfigured, and "skip the bad one" invites a retry race), then dial the vetted IP
itself. httpcore keeps using the *hostname* for the Host header and for TLS SNI / certificate checks, so
pinning the IP costs nothing in correctness and makes DNS rebinding (public answer at check time, 127.0.0.1
at connect time) impossible: there is no second lookup.

Every stream also carries the fetch's absolute deadline, so connect, TLS handshake and each read are clamped
to what is left of the total budget: a server that drips one byte per second cannot hold a worker forever.
"""

from __future__ import annotations

import socket
import time
import typing
from collections.abc import Callable, Iterable, Sequence

import httpcore
from httpcore._backends.sync import SyncStream  # httpcore's own socket stream

from app.errors import PermanentError
from app.net.addresses import blocked_reason

# (host, port) -> IP strings in the resolver's preference order.
Resolver = Callable[[str, int], Sequence[str]]
# (ip, port, timeout) -> a connected socket. Tests replace it to assert which address is dialed.
Connector = Callable[[str, int, float | None], socket.socket]


class BlockedAddressError(PermanentError):
    """The URL's host resolves to an address we never dial (loopback, private, metadata, ...)."""


def system_resolve(host: str, port: int) -> list[str]:
    """All addresses getaddrinfo gives for host, de-duplicated, order kept (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def system_connect(ip: str, port: int, timeout: float | None) -> socket.socket:
    return socket.create_connection((ip, port), timeout)


def host_allowed(host: str, port: int, allow_hosts: Iterable[str]) -> bool:
    """True when settings.fetch_allow_hosts lists host (any port) or host:port."""
    host = host.lower().strip("[]")
    for entry in allow_hosts:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("["):  # [::1]:8000
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            name, _, entry_port = entry.partition(":")
        else:  # bare host, or a bare IPv6 literal
            name, entry_port = entry, ""
        if name == host and (not entry_port or entry_port == str(port)):
            return True
    return False


class DeadlineStream(httpcore.NetworkStream):
    """Wraps a stream so no single read/write/handshake can outlive the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _clamp(self, timeout: float | None, exc: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise exc("total fetch deadline exceeded")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._clamp(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """connect_tcp that only ever dials an address it has just checked."""

    def __init__(
        self,
        *,
        deadline: float,
        allow_hosts: Iterable[str] = (),
        resolver: Resolver = system_resolve,
        connector: Connector = system_connect,
    ) -> None:
        self.deadline = deadline
        self.allow_hosts = tuple(allow_hosts)
        self.resolver = resolver
        self.connector = connector
        self.dialed: list[tuple[str, str, int]] = []  # (hostname, ip, port): what was really dialed

    def vet(self, host: str, port: int) -> list[str]:
        """Resolve once and return the addresses we may dial; raise BlockedAddressError otherwise."""
        addresses = list(self.resolver(host, port))
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no addresses")
        if host_allowed(host, port, self.allow_hosts):
            return addresses
        for ip in addresses:
            reason = blocked_reason(ip)
            if reason:
                raise BlockedAddressError(f"refused to fetch from {host}: {reason}")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("total fetch deadline exceeded")
        timeout = left if timeout is None else min(timeout, left)
        last: Exception | None = None
        for ip in self.vet(host, port):
            try:
                self.dialed.append((host, ip, port))
                sock = self.connector(ip, port, timeout)
            except TimeoutError as exc:
                last = httpcore.ConnectTimeout(f"connect to {host} ({ip}) timed out")
                last.__cause__ = exc
                continue
            except OSError as exc:
                last = httpcore.ConnectError(f"connect to {host} ({ip}) failed: {exc.strerror or exc}")
                last.__cause__ = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return DeadlineStream(SyncStream(sock), self.deadline)
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise BlockedAddressError("unix sockets are never used for outbound fetches")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
