"""Per-key token buckets: in-process by default, shared through Redis when settings.redis_url is set.

`take(key)` returns 0.0 when the request may go on, else the seconds until a token is free (Retry-After).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Limiter(Protocol):
    rate: float
    burst: int

    def take(self, key: str) -> float: ...


class MemoryLimiter:
    """Exact within one process; each uvicorn worker has its own buckets (use Redis to share them)."""

    def __init__(self, rate: float, burst: int, *, clock: Any = time.monotonic, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._store(key, tokens - 1.0, now)
                return 0.0
            self._store(key, tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            # Bounded memory: full buckets carry no state worth keeping, drop them first.
            full = [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1]
            for k in full or list(self._buckets)[: self._max_keys // 10]:
                del self._buckets[k]
        self._buckets[key] = (tokens, now)


# One atomic step of the bucket in Redis (so several web processes share one limit per key).
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisLimiter:
    def __init__(self, url: str, rate: float, burst: int, *, prefix: str = "podbrief:rl:") -> None:
        import redis

        self.rate = rate
        self.burst = burst
        self._prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=0.5)
        self._script = self._client.register_script(_LUA)

    def take(self, key: str) -> float:
        try:
            wait = self._script(keys=[self._prefix + key], args=[self.rate, self.burst, time.time()])
        except Exception as exc:
            # Fail open: a Redis outage must not take the API down; the limit is abuse protection, not billing.
            log.warning("rate limiter unavailable, allowing request: %s", exc)
            return 0.0
        return float(wait.decode() if isinstance(wait, bytes) else wait)


def make_limiter(redis_url: str, rate: float, burst: int) -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, rate, burst)
    return MemoryLimiter(rate, burst)
