"""The REST API, /api/v1: insights (filters, semantic search, related), briefs, podcasts (subscribe, OPML),
episodes (transcripts), me (settings, keys, feedback). Auth: `Authorization: Bearer pb_<prefix>_<secret>`.

`install(app)` is called by the app factory (app.web.app.create_app); errors use the factory's one JSON shape.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from app.config import get_settings
from app.web.api import routes_briefs, routes_episodes, routes_insights, routes_me, routes_podcasts
from app.web.api.allow import AllowHeaderMiddleware
from app.web.api.deps import ApiState, LoopReader, TTLCache
from app.web.api.ratelimit import make_limiter
from app.web.api.search import QueryCache, VectorIndex
from app.web.api.settings import ApiSettings

PREFIX = "/api/v1"


def build_state() -> ApiState:
    settings = ApiSettings()
    return ApiState(
        settings=settings,
        reader=LoopReader(),
        limiter=make_limiter(get_settings().redis_url, settings.rate_per_second, settings.burst),
        index=VectorIndex(model=get_settings().embedding_model, refresh_seconds=settings.index_refresh_seconds),
        queries=QueryCache(settings.query_cache_size),
        briefs=TTLCache(10_000, settings.response_cache_seconds),
        searches=TTLCache(2_000, settings.response_cache_seconds),
    )


def install(app: FastAPI) -> None:
    app.state.api = build_state()
    api = APIRouter(prefix=PREFIX)
    methods: list[tuple[str, set[str]]] = []
    for module in (routes_insights, routes_briefs, routes_podcasts, routes_episodes, routes_me):
        api.include_router(module.router)
        methods += [(PREFIX + r.path, r.methods or set()) for r in module.router.routes if isinstance(r, APIRoute)]
    app.include_router(api)
    app.add_middleware(AllowHeaderMiddleware, prefix=PREFIX, routes=methods)
