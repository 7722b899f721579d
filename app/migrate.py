"""Run Alembic migrations programmatically (the CLI's `migrate`, `run`, and the test suite)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.config import ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url or get_settings().db_url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
