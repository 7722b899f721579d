#!/usr/bin/env bash
# Regenerate the single initial migration from app/models.py (nothing has been released yet).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f migrations/versions/*.py
tmp=$(mktemp -d)
DATABASE_URL="sqlite:///$tmp/empty.db" .venv/bin/alembic revision --autogenerate -m initial --rev-id 0001 >/dev/null
rm -rf "$tmp"
ls migrations/versions
