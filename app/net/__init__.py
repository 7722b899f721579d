"""The guarded outbound HTTP client (see app.net.fetch). Nothing else in podbrief may open a connection out."""

from app.net.backend import BlockedAddressError
from app.net.decode import OversizeError
from app.net.fetch import (
    DownloadResult,
    FetchResult,
    GoneError,
    GuardedClient,
    HTTPStatusError,
    check_url,
    download,
    fetch,
)

__all__ = [
    "BlockedAddressError",
    "DownloadResult",
    "FetchResult",
    "GoneError",
    "GuardedClient",
    "HTTPStatusError",
    "OversizeError",
    "check_url",
    "download",
    "fetch",
]
