"""The brief email and the exactly-once delivery state machine, against the real SMTP mail_sink."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import smtplib
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app import smtp_sink
from app.db import session_scope
from app.delivery import Outcome, send_delivery
from app.errors import PermanentError, TransientError
from app.models import Brief, Delivery, DeliveryStatus, User
from app.pipeline import mail
from tests.test_mail_support import body, make_brief, make_catalogue, make_user, read_mails

NOW = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC)

# Fixtures (site_client, enqueued, mail_sink) live in the support module.
pytest_plugins = ["tests.test_mail_support"]


def _delivery(session: Session) -> int:
    user = make_user(session)
    brief = make_brief(session, user, make_catalogue(session))
    return mail.ensure_delivery(session, brief.id)


def test_ensure_delivery_is_idempotent_and_message_id_stable(session: Session) -> None:
    did = _delivery(session)
    brief_id = session.get_one(Delivery, did).brief_id
    mid = session.get_one(Delivery, did).message_id
    assert mail.ensure_delivery(session, brief_id) == did
    assert session.get_one(Delivery, did).message_id == mid
    assert mid.startswith("<") and mid.endswith(">") and "@" in mid


def test_claim_twice_second_is_false(session: Session) -> None:
    did = _delivery(session)
    assert mail.claim(session, did, now=NOW) is True
    assert mail.claim(session, did, now=NOW) is False
    d = session.get_one(Delivery, did)
    assert (d.status, d.attempts, d.sending_started_at) == (DeliveryStatus.SENDING, 1, NOW)


def test_claim_refuses_unsubscribed_recipient(session: Session) -> None:
    did = _delivery(session)
    user = session.get_one(User, session.get_one(Brief, session.get_one(Delivery, did).brief_id).user_id)
    user.unsubscribed_at = NOW
    session.flush()
    assert mail.claim(session, did, now=NOW) is False
    assert session.get_one(Delivery, did).status == DeliveryStatus.FAILED


def test_compose_has_five_items_headers_and_size(session: Session) -> None:
    did = _delivery(session)
    msg = mail.compose(session, did)
    raw = msg.as_bytes()
    assert len(raw) < 100 * 1024
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] == session.get_one(Delivery, did).message_id
    assert parsed["Date"] and parsed["From"] == "podbrief <brief@podbrief.localhost>"
    assert parsed["To"] == "reader@example.com"
    assert "<daily.podbrief.localhost>" in parsed["List-Id"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [p.strip(" <>") for p in parsed["List-Unsubscribe"].split(",")]
    assert https.startswith("http") and "/unsubscribe/" in https and mailto.startswith("mailto:")
    assert parsed.get_content_type() == "multipart/alternative"
    html, text = body(parsed, "html"), body(parsed, "plain")
    for part in (html, text):
        assert part.count("Why you got this") == 5
        assert part.count("/feedback/") >= 15  # more / less / less-from-show for each of the 5
        assert "#t=61" in part and "#t=361" in part  # the moment in the episode
        assert "/manage/" in part and "/unsubscribe/" in part
        assert "Show 0 &amp; Friends" in part or "Show 0 & Friends" in part
    assert "<style" not in html and 'style="' in html  # CSS was inlined for mail clients
    assert "<things>" not in html and "&lt;things&gt;" in html  # episode titles are escaped


def test_smtp_send_reaches_sink_and_deliver_is_exactly_once(session: Session, mail_sink: smtp_sink.SinkHandle) -> None:
    did = _delivery(session)
    session.commit()
    assert send_delivery(did, now=NOW) == Outcome.SENT
    assert send_delivery(did, now=NOW) == Outcome.ALREADY_SENT
    mails = read_mails(mail_sink.mail_dir)
    assert len(mails) == 1
    with session_scope() as s:
        d = s.get_one(Delivery, did)
        assert d.status == DeliveryStatus.SENT and d.sent_at is not None
        assert mails[0]["Message-ID"] == d.message_id
        assert smtp_sink.message_files(mail_sink.mail_dir, d.message_id)


def test_sink_writes_atomically_named_files(tmp_path: Path) -> None:
    handle = smtp_sink.start("127.0.0.1", 0, tmp_path)
    try:
        with smtplib.SMTP(handle.host, handle.port, timeout=10) as conn:
            conn.sendmail("a@example.com", ["b@example.com"], b"Message-ID: <x/../y@h>\r\nSubject: t\r\n\r\nhi\r\n")
    finally:
        handle.stop()
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".eml"
    assert "/" not in files[0].name[:-4] and "x_.._y@h" in files[0].name  # sanitised, no path tricks
    assert not list(tmp_path.glob(".*.tmp"))
    assert b"Subject: t" in files[0].read_bytes()


def test_mark_failed_backs_off_then_fails(session: Session) -> None:
    did = _delivery(session)
    now = NOW
    for attempt in range(1, mail.MAX_ATTEMPTS + 1):
        assert mail.claim(session, did, now=now)
        status = mail.mark_failed(session, did, "421 try later", now=now)
        d = session.get_one(Delivery, did)
        if attempt < mail.MAX_ATTEMPTS:
            assert status == DeliveryStatus.PENDING
            assert d.next_attempt_at == now + mail.backoff(attempt)
            assert not mail.claim(session, did, now=now)  # not due yet
            now = d.next_attempt_at
        else:
            assert status == DeliveryStatus.FAILED and d.error == "421 try later"
    assert mail.backoff(2) == 2 * mail.backoff(1)


def test_permanent_failure_fails_at_once(session: Session) -> None:
    did = _delivery(session)
    assert mail.claim(session, did, now=NOW)
    assert mail.mark_failed(session, did, "550 no such user", now=NOW, permanent=True) == DeliveryStatus.FAILED


def test_reconcile_marks_sent_when_the_sink_has_it(session: Session, mail_sink: smtp_sink.SinkHandle) -> None:
    did = _delivery(session)
    assert mail.claim(session, did, now=NOW)
    msg = mail.compose(session, did)
    mail.smtp_send(msg)  # ... and the worker "crashed" before mark_sent
    later = NOW + mail.sending_timeout() + dt.timedelta(seconds=1)
    assert mail.reconcile(session, NOW + dt.timedelta(minutes=1)) == []  # not stuck yet: left alone
    assert session.get_one(Delivery, did).status == DeliveryStatus.SENDING
    assert did not in mail.reconcile(session, later)
    d = session.get_one(Delivery, did)
    assert d.status == DeliveryStatus.SENT and d.error and "found at relay" in d.error
    assert len(read_mails(mail_sink.mail_dir)) == 1  # never resent


def test_reconcile_requeues_when_not_at_the_sink(session: Session, mail_sink: smtp_sink.SinkHandle) -> None:
    did = _delivery(session)
    assert mail.claim(session, did, now=NOW)  # crashed before SMTP
    later = NOW + mail.sending_timeout() + dt.timedelta(seconds=1)
    assert mail.reconcile(session, later) == [did]
    d = session.get_one(Delivery, did)
    mid = d.message_id
    assert d.status == DeliveryStatus.PENDING and d.error and d.error.startswith("reconciled")
    session.commit()
    assert send_delivery(did, now=later) == Outcome.SENT
    mails = read_mails(mail_sink.mail_dir)
    assert len(mails) == 1 and mails[0]["Message-ID"] == mid  # the resend keeps the Message-ID


def test_reconcile_gives_up_after_max_attempts(session: Session, mail_sink: smtp_sink.SinkHandle) -> None:
    did = _delivery(session)
    assert mail.claim(session, did, now=NOW)
    session.get_one(Delivery, did).attempts = mail.MAX_ATTEMPTS
    session.flush()
    assert mail.reconcile(session, NOW + mail.sending_timeout() * 2) == []
    assert session.get_one(Delivery, did).status == DeliveryStatus.FAILED


def test_smtp_errors_are_classified(
    env: Path, monkeypatch: pytest.MonkeyPatch, mail_sink: smtp_sink.SinkHandle
) -> None:
    msg = mail.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "x"
    msg.set_content("x")

    class Refusing:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def __enter__(self) -> Refusing:
            return self

        def __exit__(self, *a: object) -> None:
            pass

        def ehlo(self) -> None:
            pass

        def mail(self, sender: str) -> tuple[int, bytes]:
            return 250, b"ok"

        def rcpt(self, rcpt: str) -> tuple[int, bytes]:
            return 250, b"ok"

        def data(self, data: bytes) -> None:
            if code == 0:
                raise smtplib.SMTPServerDisconnected("gone")
            raise smtplib.SMTPDataError(code, b"nope")

    monkeypatch.setattr(mail.smtplib, "SMTP", Refusing)
    code = 550
    with pytest.raises(PermanentError):
        mail.smtp_send(msg)
    code = 451
    with pytest.raises(TransientError):
        mail.smtp_send(msg)
    code = 0  # the connection drops after the message data went out
    with pytest.raises(mail.DeliveryUncertain):
        mail.smtp_send(msg)
    monkeypatch.undo()
    monkeypatch.setenv("PODBRIEF_SMTP_PORT", "1")  # nothing listens there
    from app import config

    config.reset_settings()
    with pytest.raises(TransientError) as info:
        mail.smtp_send(msg)
    assert not isinstance(info.value, mail.DeliveryUncertain)


def test_uncertain_send_stays_sending_for_reconcile(
    session: Session, mail_sink: smtp_sink.SinkHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    did = _delivery(session)
    session.commit()

    def drop_after_data(msg: object) -> None:
        raise mail.DeliveryUncertain("connection lost after DATA")

    monkeypatch.setattr(mail, "smtp_send", drop_after_data)
    assert send_delivery(did, now=NOW) == Outcome.IN_PROGRESS
    with session_scope() as s:
        d = s.get_one(Delivery, did)
        assert d.status == DeliveryStatus.SENDING and d.error == "connection lost after DATA"
    assert send_delivery(did, now=NOW) == Outcome.IN_PROGRESS  # nobody resends it blindly


def test_worst_case_email_stays_under_100kb(session: Session) -> None:
    user = make_user(session, interests="x" * 2000)
    insights = make_catalogue(session, shows=5, per_show=1)
    for ins in insights:
        ins.text = "word " * 4000
        ins.episode.title = "T" * 1000
        ins.episode.podcast.title = "P" * 500
    brief = make_brief(session, user, insights)
    for item in brief.items:
        item.why = "because " * 100
    session.flush()
    msg = mail.compose(session, mail.ensure_delivery(session, brief.id))
    assert len(msg.as_bytes()) < mail.MAX_BYTES


def test_dkim_signature_covers_one_click_headers(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import re

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setattr(mail, "_dkim_config", lambda: (b"pb", b"podbrief.localhost", pem))
    data = mail.wire_bytes(mail.compose(session, _delivery(session)))
    assert data.startswith(b"DKIM-Signature:")
    h_tag = re.search(rb"\bh=([^;]+);", data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"").replace(b" ", b""))
    assert h_tag is not None
    signed = set(h_tag.group(1).lower().split(b":"))
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"message-id"} <= signed

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"pb._domainkey.podbrief.localhost."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x")
    assert not dkim.verify(tampered, dnsfunc=dns)
