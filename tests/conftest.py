"""Shared fixtures.

Every test gets its own var/ directory and its own SQLite database built by the real Alembic migrations
(copied from one migrated template per session, so migrations run once). Tests marked `pg` also run on
PostgreSQL when PODBRIEF_TEST_POSTGRES_URL is set; under CI=true it must be set and reachable (no skipping).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import config, db
from app.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg: runs on SQLite and, when configured, on PostgreSQL")


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    db.dispose_engines()
    return path


def _postgres_url() -> str | None:
    url = os.environ.get("PODBRIEF_TEST_POSTGRES_URL")
    if IN_CI and not url:
        raise RuntimeError("CI=true but PODBRIEF_TEST_POSTGRES_URL is not set: integration tests must not skip")
    return url


def _db_params() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get("PODBRIEF_TEST_POSTGRES_URL") or IN_CI else ["sqlite"]


@pytest.fixture(scope="session")
def _postgres_migrated() -> str | None:
    url = _postgres_url()
    if url is None:
        return None
    engine = db.get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(url)
    return url


def _truncate_all(url: str) -> None:
    from app.db import Base

    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.get_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Derived model files (ONNX export, converted Whisper weights) are made once per test session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def whisper_cache(model_cache: Path) -> Path:
    """Where the engines keep the converted openai-whisper checkpoint and the encoder exports."""
    folder = model_cache / "openai-whisper"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Iterator[Path]:
    """A clean environment: var/ under tmp_path, no outside configuration leaking in."""
    for name in list(os.environ):
        if name.startswith("PODBRIEF_") and name not in ("PODBRIEF_TEST_POSTGRES_URL",):
            monkeypatch.delenv(name, raising=False)
    for name in ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_HOST", "SMTP_PORT", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("PODBRIEF_VAR_DIR", str(var))
    monkeypatch.setenv("PODBRIEF_MODEL_CACHE_DIR", str(model_cache))
    config.reset_settings()
    yield var
    db.dispose_engines()
    config.reset_settings()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, env: Path, _template_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated, empty database; PostgreSQL for the `postgres` parametrisation of `pg` tests."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgres":
        url = request.getfixturevalue("_postgres_migrated")
        assert url
        _truncate_all(url)
    else:
        path = env / "podbrief.db"
        shutil.copy(_template_db, path)
        url = f"sqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", url)
    config.reset_settings()
    return url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `pg`-marked tests that use the database run once per backend.
    if "db_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("pg"):
        metafunc.parametrize("db_url", _db_params(), indirect=True)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """A session on the test database; commits when the test body finishes without error."""
    with db.session_scope(db_url) as s:
        yield s
