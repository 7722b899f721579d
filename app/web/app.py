"""The FastAPI application: site pages (app.web.site), the REST API (app.web.api) and /healthz."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import get_settings
from app.db import get_engine

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, detail: object = None) -> JSONResponse:
    """The one JSON error shape: {"error": {"code", "message", "detail"}}."""
    error: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"error": error}, status_code=status)


def broker_ok() -> bool:
    """True when the Celery broker answers (Redis ping, or the filesystem queue folder is writable)."""
    settings = get_settings()
    url = settings.celery_broker_url
    try:
        if url.startswith("redis"):
            import redis

            return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
        if url.startswith("filesystem"):
            settings.broker_dir.mkdir(parents=True, exist_ok=True)
            probe = settings.broker_dir / ".healthz"
            probe.write_text("ok")
            return True
        from kombu import Connection

        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception as exc:  # any failure means "not healthy", reported, not raised
        log.warning("broker health check failed: %s", exc)
        return False


def create_app() -> FastAPI:
    app = FastAPI(
        title="podbrief",
        description="Get your free personalized podcast brief: the top 5 insights from new podcasts, daily.",
        version="1.0.0",
    )

    @app.get("/healthz", tags=["ops"], summary="Database and broker answer")
    def healthz() -> JSONResponse:
        checks = {"database": False, "broker": broker_ok()}
        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception as exc:
            log.warning("database health check failed: %s", exc)
        ok = all(checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        resp = _error(exc.status_code, _code_for(exc.status_code), str(exc.detail))
        if headers:
            resp.headers.update(headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", "The request is not valid.", jsonable_errors(exc))

    # The areas plug in their routers; a missing area (not written yet) is skipped.
    for module_name in ("app.web.demo", "app.web.site", "app.web.api"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.install(app)
    return app


def _code_for(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        412: "precondition_failed",
        413: "too_large",
        422: "invalid_request",
        429: "rate_limited",
    }.get(status, "error")


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
