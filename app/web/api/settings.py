"""Settings of the REST API (env vars PODBRIEF_API_*), kept beside the API so the shared config stays small."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODBRIEF_API_", extra="ignore")

    # Token bucket per API key: `burst` requests at once, refilled at `rate_per_second`.
    rate_per_second: float = 10.0
    burst: int = 60
    page_default: int = 20
    page_max: int = 100
    # Semantic search ranks at most this many results (offset pagination inside them).
    search_max_results: int = 1000
    related_count: int = 5
    # Resource limits (OWASP API4): feeds a user may follow, OPML upload size.
    max_feeds_per_user: int = 100
    max_opml_bytes: int = 1024 * 1024
    # How often the vector index looks for new insights (seconds); 0 = on every query.
    index_refresh_seconds: float = 1.0
    # Cached serialised briefs/search pages are served for at most this long (they only change when the
    # catalogue text changes; new insights bump the index version and miss the cache at once).
    response_cache_seconds: float = 60.0
    query_cache_size: int = 2048
