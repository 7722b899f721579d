"""Fixtures and factories shared by the web/mail tests (imported by them; holds no tests itself)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import secrets
import sys
import types
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from app import config, smtp_sink
from app.db import session_scope
from app.models import Brief, BriefItem, Episode, EpisodeStatus, Insight, Podcast, User


@pytest.fixture
def mail_sink(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[smtp_sink.SinkHandle]:
    """The real SMTP mail_sink on an ephemeral port, and settings pointing at it."""
    handle = smtp_sink.start("127.0.0.1", 0, env / "mail")
    monkeypatch.setenv("PODBRIEF_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PODBRIEF_SMTP_PORT", str(handle.port))
    config.reset_settings()
    yield handle
    handle.stop()


class Queue:
    """Stands in for workers.enqueue; send_confirmation does what the mail worker does (over real SMTP)."""

    def __init__(self, db_url: str, *, send: bool) -> None:
        self.db_url = db_url
        self.send = send  # only talk SMTP when the test runs its own sink (never a developer's :8025)
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("workers.enqueue")
        for name in ("send_confirmation", "build_and_send_brief", "subscribe_feed"):
            setattr(mod, name, self._recorder(name))
        return mod

    def _recorder(self, name: str):  # type: ignore[no-untyped-def]
        def call(*args: object) -> None:
            self.calls.append((name, args))
            if name == "send_confirmation" and self.send:
                from app.pipeline import mail

                with session_scope(self.db_url) as s:
                    msg = mail.confirmation_message(s, int(args[0]))  # type: ignore[call-overload]
                mail.smtp_send(msg)

        return call

    def named(self, name: str) -> list[tuple[object, ...]]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def enqueued(db_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Queue:
    q = Queue(db_url, send="mail_sink" in request.fixturenames)
    monkeypatch.setitem(sys.modules, "workers.enqueue", q.module())
    return q


@pytest.fixture
def site_client(db_url: str, enqueued: Queue):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.web import site_limits
    from app.web.app import create_app

    site_limits.signup_per_ip.reset()
    site_limits.mails_per_address.reset()
    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def read_mails(mail_dir: Path) -> list[EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(mail_dir.glob("*.eml"))
    ]


def body(msg: EmailMessage, subtype: str = "plain") -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())


def link(text: str, fragment: str) -> str:
    """The first http(s) link in text whose path contains fragment."""
    for url in re.findall(r"https?://[^\s\"<>]+", text):
        if fragment in url:
            return url
    raise AssertionError(f"no link with {fragment!r} in: {text[:500]}")


def unit(rng: np.random.Generator, base: np.ndarray | None = None, noise: float = 1.0) -> np.ndarray:
    v = rng.normal(size=384).astype(np.float32) * noise
    if base is not None:
        v = v + base
    return (v / np.linalg.norm(v)).astype(np.float32)


def make_user(session: Session, email: str = "reader@example.com", **kw: object) -> User:
    user = User(
        email=email,
        token=secrets.token_urlsafe(32),
        interests=str(kw.pop("interests", "sleep science and economics")),
        timezone=str(kw.pop("timezone", "Europe/Berlin")),
        confirmed_at=kw.pop("confirmed_at", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
        **kw,
    )
    session.add(user)
    session.flush()
    return user


def make_catalogue(session: Session, *, shows: int = 3, per_show: int = 4, seed: int = 7) -> list[Insight]:
    """Podcasts, ready episodes and embedded insights; insight texts are long-ish and distinct."""
    from app.ml.encoder import to_blob

    rng = np.random.default_rng(seed)
    topic = unit(rng)
    insights = []
    for s in range(shows):
        pod = Podcast(feed_url=f"https://shows.example/{s}/feed.xml", title=f"Show {s} & Friends")
        session.add(pod)
        session.flush()
        ep = Episode(
            podcast_id=pod.id,
            guid=f"ep-{s}",
            title=f"Episode {s}: on <things>",
            enclosure_url=f"https://cdn.example/{s}.mp3",
            status=EpisodeStatus.READY,
            published_at=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
        )
        session.add(ep)
        session.flush()
        for i in range(per_show):
            vec = unit(rng, topic, noise=0.03) if i % 2 == 0 else unit(rng)
            ins = Insight(
                episode_id=ep.id,
                idx=i,
                start=61.5 + 100 * i,
                end=90.0 + 100 * i,
                text=f"Insight {s}.{i}: " + "a specific, well argued claim with a number 42 " * 6,
                substance=0.5 + i / 10,
                embedding=to_blob(vec),
                embedding_model="test",
            )
            session.add(ins)
            insights.append(ins)
    session.flush()
    return insights


def make_brief(session: Session, user: User, insights: list[Insight], day: dt.date | None = None) -> Brief:
    brief = Brief(user_id=user.id, local_date=day or dt.date(2026, 11, 26))
    session.add(brief)
    session.flush()
    for pos, ins in enumerate(insights[:5]):
        session.add(
            BriefItem(
                brief_id=brief.id, insight_id=ins.id, position=pos, score=1 - pos / 10, why=f"Matches “sleep” ({pos})"
            )
        )
    session.flush()
    return brief
