"""`podbrief apikey create/revoke/list` and `podbrief user add`."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from app import db
from app.cli import main
from app.models import ApiKey, User


def test_user_add_then_key_create_list_revoke(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "--email", "ann@example.com", "--timezone", "Europe/Berlin"]) == 0
    capsys.readouterr()
    assert main(["apikey", "create", "--email", "ANN@example.com", "--name", "script"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("pb_") and "not shown again" in err
    with db.session_scope(db_url) as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() and row.name == "script"
        assert s.scalars(select(User.timezone)).one() == "Europe/Berlin"
    assert main(["apikey", "list", "--email", "ann@example.com"]) == 0
    listed = capsys.readouterr().out
    assert "active" in listed and key not in listed
    assert main(["apikey", "revoke", "--email", "ann@example.com", key]) == 0
    with db.session_scope(db_url) as s:
        assert s.scalars(select(ApiKey.revoked_at)).one() is not None


def test_unknown_email_exits_non_zero_with_one_line(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apikey", "create", "--email", "nobody@example.com"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0 and "nobody@example.com" in err
    assert main(["user", "add", "--email", "x@example.com", "--timezone", "Nowhere/Land"]) == 1
    assert main(["user", "add", "--email", "x@example.com"]) == 0
    assert main(["apikey", "revoke", "--email", "x@example.com", "pb_deadbeef"]) == 1
