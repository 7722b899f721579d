"""A small in-process sliding-window rate limiter for the sign-up and link-request forms.

Per process on purpose: the embedded setup runs one web process; behind several processes the limit is
per process, which still blunts a form-spamming script. (A shared limiter would live in Redis.)
"""

from __future__ import annotations

import threading
import time
from collections import deque


class Limiter:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, *, now: float | None = None) -> bool:
        """Count one hit for key; False once it has had `limit` hits inside the window."""
        t = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= t - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(t)
            if len(self._hits) > 50_000:  # forget idle keys so memory stays bounded
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > t - self.window_s}
            return True

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


# Sign-up form posts per client IP (Mastodon uses 5 per 30 minutes for its API; a form is a bit looser).
signup_per_ip = Limiter(20, 30 * 60)
# Account mails per address: beyond this, the form still answers the same but no mail is sent.
mails_per_address = Limiter(5, 30 * 60)
