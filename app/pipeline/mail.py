"""Mail stage: one email per brief, sent exactly once; plus the account mails (confirm, magic link).

Input rows:  Brief + BriefItem (+ Insight, Episode, Podcast, User).
Output rows: Delivery (one per brief: status, Message-ID, attempts, error, timestamps).
Idempotency: ensure_delivery returns the existing row; claim() moves pending -> sending with one
conditional UPDATE, so of two workers only one gets True; a sent row is never claimed again.

The state machine (DeliveryStatus):

    pending --claim--> sending --mark_sent--> sent
       ^                  |  \\--mark_failed (attempts < MAX)--> pending (next_attempt_at = now + backoff)
       |                  |   \\-mark_failed (permanent, or attempts >= MAX)--> failed
       +--reconcile-------+   (stuck in sending too long, see reconcile())

The task commits after claim() and before talking to SMTP: a crash then leaves the row in "sending", never
back in "pending", so nothing is resent blindly. app/delivery.py is that sequence, written once.

Reconcile rule (a row stuck in "sending" for longer than settings.mail_sending_timeout_seconds):
  1. If the relay is the embedded sink and a file with the delivery's Message-ID is in settings.mail_dir, the
     relay accepted it: mark sent (error notes "reconciled: found at relay").
  2. Otherwise there is no proof it was accepted. If it has attempts left, it goes back to pending for one
     resend WITH THE SAME Message-ID (clients and most providers collapse duplicates by Message-ID), and the
     error records "reconciled: ...". If the attempts are used up, it is marked failed, not resent.
  A row known to be sent (status sent) is never touched.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import secrets
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from functools import lru_cache
from urllib.parse import quote

import css_inline
import jinja2
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app.config import ROOT, get_settings
from app.errors import PermanentError, TransientError
from app.models import Brief, BriefItem, Delivery, DeliveryStatus, Episode, Insight, User
from app.pipeline import tokens
from app.smtp_sink import message_files

MAX_ATTEMPTS = 5
BACKOFF_BASE = dt.timedelta(minutes=1)  # 1, 2, 4, 8 minutes ... capped below
BACKOFF_CAP = dt.timedelta(hours=2)
MAX_BYTES = 100 * 1024  # Gmail clips messages above ~102 KB
INSIGHT_CHARS = 700  # one insight is a few sentences; longer text is cut so five always fit


def sending_timeout() -> dt.timedelta:
    """A row in "sending" longer than this is reconciled (settings: far above one SMTP conversation)."""
    return dt.timedelta(seconds=get_settings().mail_sending_timeout_seconds)


def pending_grace() -> dt.timedelta:
    """A pending row never claimed for this long had its task lost: reconcile hands it out again."""
    return dt.timedelta(seconds=get_settings().mail_pending_grace_seconds)


class DeliveryUncertain(TransientError):
    """The connection failed after the message data was sent: the relay may have accepted it."""


# ------------------------------------------------------------------------------------------------
# links


def base_url() -> str:
    return get_settings().base_url.rstrip("/")


def _domain() -> str:
    addr = email.utils.parseaddr(get_settings().mail_from)[1]
    return addr.rpartition("@")[2] or "podbrief.localhost"


def confirm_url(user: User) -> str:
    token = tokens.user_token("confirm", user.id, user.token, ttl=tokens.CONFIRM_TTL)
    return f"{base_url()}/confirm/{token}"


def manage_url(user: User) -> str:
    token = tokens.user_token("manage", user.id, user.token, ttl=tokens.MANAGE_TTL)
    return f"{base_url()}/manage/{token}"


def feedback_url(user: User, insight_id: int, kind: str) -> str:
    token = tokens.user_token("feedback", user.id, user.token, ttl=tokens.FEEDBACK_TTL, i=insight_id, k=kind)
    return f"{base_url()}/feedback/{token}"


def unsubscribe_url(user: User) -> str:
    # User.token is opaque and never expires: RFC 8058 links must keep working in old mails.
    return f"{base_url()}/unsubscribe/{user.token}"


def archive_url(user: User) -> str:
    return f"{base_url()}/u/{user.token}/briefs"


def moment_url(episode: Episode, start: float) -> str:
    """The audio at the insight's moment (Media Fragments `#t=`), else the episode page."""
    base = episode.enclosure_url or episode.link or ""
    if not base:
        return ""
    return f"{base.split('#', 1)[0]}#t={max(0, int(start))}"


# ------------------------------------------------------------------------------------------------
# rendering


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / "templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    return env


def clock(seconds: float) -> str:
    """12:34 or 1:02:03, as podcast apps show positions."""
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _shorten(text: str, limit: int = INSIGHT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _render(name: str, **ctx: object) -> tuple[str, str]:
    """(text, html) for templates/email/<name>.txt|.html; the HTML gets its CSS inlined for mail clients."""
    env = _env()
    ctx = {"base_url": base_url(), **ctx}
    text = env.get_template(f"email/{name}.txt").render(ctx)
    html = css_inline.inline(env.get_template(f"email/{name}.html").render(ctx))
    return text, html


def _message(*, to: str, subject: str, text: str, html: str, message_id: str | None = None) -> EmailMessage:
    settings = get_settings()
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id or email.utils.make_msgid("pb", domain=_domain())
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


@dataclass(frozen=True)
class ItemView:
    position: int
    text: str
    why: str
    show: str
    episode: str
    start: float
    moment_url: str
    insight_url: str
    shows_count: int
    more_url: str
    less_url: str
    less_show_url: str


def brief_items(session: Session, brief: Brief, user: User) -> list[ItemView]:
    """The brief's items with everything the email and the web page show (also used by app.web)."""
    rows = session.scalars(
        select(BriefItem)
        .where(BriefItem.brief_id == brief.id)
        .options(joinedload(BriefItem.insight).joinedload(Insight.episode).joinedload(Episode.podcast))
        .order_by(BriefItem.position)
    ).all()
    views = []
    for item in rows:
        ins = item.insight
        ep = ins.episode
        views.append(
            ItemView(
                position=item.position,
                text=_shorten(ins.text),
                why=item.why,
                show=ep.podcast.title or ep.podcast.feed_url,
                episode=ep.title,
                start=ins.start,
                moment_url=moment_url(ep, ins.start),
                insight_url=f"{base_url()}/insights/{ins.id}",
                shows_count=item.shows_count,
                more_url=feedback_url(user, ins.id, "more"),
                less_url=feedback_url(user, ins.id, "less"),
                less_show_url=feedback_url(user, ins.id, "less_show"),
            )
        )
    return views


# ------------------------------------------------------------------------------------------------
# the delivery state machine


def ensure_delivery(session: Session, brief_id: int) -> int:
    """The brief's Delivery id, created once with a Message-ID that never changes (resends reuse it)."""
    existing = session.scalar(select(Delivery.id).where(Delivery.brief_id == brief_id))
    if existing is not None:
        return existing
    delivery = Delivery(
        brief_id=brief_id,
        status=DeliveryStatus.PENDING,
        message_id=f"<brief-{brief_id}.{secrets.token_hex(8)}@{_domain()}>",
    )
    try:
        with session.begin_nested():  # another worker may create it first: the unique brief_id decides
            session.add(delivery)
    except IntegrityError:
        found = session.scalar(select(Delivery.id).where(Delivery.brief_id == brief_id))
        if found is None:
            raise
        return found
    return delivery.id


def claim(session: Session, delivery_id: int, *, now: dt.datetime) -> bool:
    """pending -> sending in one conditional UPDATE; False when someone else has it, or it isn't due.

    A recipient who unsubscribed or paused since the brief was built is not mailed: the row is failed
    with the reason and False returned. The caller must commit before talking to SMTP.
    """
    row = session.execute(
        select(Delivery.status, User.confirmed_at, User.paused, User.unsubscribed_at)
        .join(Brief, Brief.id == Delivery.brief_id)
        .join(User, User.id == Brief.user_id)
        .where(Delivery.id == delivery_id)
    ).one_or_none()
    if row is None or row.status != DeliveryStatus.PENDING:
        return False
    if row.confirmed_at is None or row.paused or row.unsubscribed_at is not None:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING)
            .values(status=DeliveryStatus.FAILED, error="cancelled: recipient unconfirmed, paused or unsubscribed")
        )
        return False
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == DeliveryStatus.PENDING,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .values(status=DeliveryStatus.SENDING, sending_started_at=now, attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()  # the ORM copies are stale after a bulk UPDATE
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def compose(session: Session, delivery_id: int) -> EmailMessage:
    """The brief email: text + HTML (CSS inlined), List-Unsubscribe one-click headers, the stable Message-ID."""
    delivery = session.get_one(Delivery, delivery_id)
    brief = session.get_one(Brief, delivery.brief_id)
    user = session.get_one(User, brief.user_id)
    items = brief_items(session, brief, user)
    date_label = f"{brief.local_date:%A %-d %B}"
    ctx = {
        "user": user,
        "brief": brief,
        "items": items,
        "date_label": date_label,
        "manage_url": manage_url(user),
        "unsubscribe_url": unsubscribe_url(user),
        "archive_url": archive_url(user),
        "brief_url": f"{archive_url(user)}/{brief.local_date.isoformat()}",
    }
    text, html = _render("brief", **ctx)
    lead = items[0].text if items else ""
    subject = f"Your podcast brief for {date_label}: " + _shorten(lead, 60) if lead else f"Your brief, {date_label}"
    msg = _message(to=user.email, subject=subject, text=text, html=html, message_id=delivery.message_id)
    domain = _domain()
    msg["List-Id"] = f"podbrief daily brief <daily.{domain}>"
    mailto = f"mailto:unsubscribe@{domain}?subject={quote('unsubscribe ' + user.token)}"
    msg["List-Unsubscribe"] = f"<{unsubscribe_url(user)}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if len(msg.as_bytes()) > MAX_BYTES:
        raise PermanentError(f"brief email is {len(msg.as_bytes())} bytes, over the {MAX_BYTES} byte limit")
    return msg


# Signed when a key is configured. RFC 8058 §4: the List-Unsubscribe and List-Unsubscribe-Post headers MUST
# be covered by a valid DKIM signature for one-click unsubscribe to be honoured.
DKIM_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
]  # fmt: skip


def _dkim_config() -> tuple[bytes, bytes, bytes] | None:
    """(selector, domain, private key PEM) from settings.dkim_key_file / dkim_selector / dkim_domain, or None."""
    settings = get_settings()
    key_file = getattr(settings, "dkim_key_file", None)
    if not key_file:
        return None
    selector = str(getattr(settings, "dkim_selector", "") or "podbrief")
    domain = str(getattr(settings, "dkim_domain", "") or _domain())
    with open(key_file, "rb") as fh:
        return selector.encode(), domain.encode(), fh.read()


def wire_bytes(msg: EmailMessage) -> bytes:
    """The message exactly as it goes over SMTP: CRLF line ends, DKIM-signed when a key is configured.
    The signature is computed over these bytes, so nothing re-serialises the message after signing."""
    data = msg.as_bytes(policy=email.policy.SMTP)
    cfg = _dkim_config()
    if cfg is None:
        return data
    import dkim

    selector, domain, key = cfg
    present = {k.lower().encode() for k in msg}
    headers = [h for h in DKIM_HEADERS if h in present]
    signature = dkim.sign(data, selector, domain, key, include_headers=headers, linesep=b"\r\n")
    return bytes(signature) + data


def smtp_send(msg: EmailMessage) -> None:
    """Hand one message to the relay. TransientError for 4xx/connection trouble, PermanentError for 5xx;
    DeliveryUncertain when the connection broke after the data went out (the relay may have it)."""
    settings = get_settings()
    sender = email.utils.parseaddr(settings.mail_from)[1]
    rcpts = [addr for _, addr in email.utils.getaddresses(msg.get_all("To", []))]
    data = wire_bytes(msg)
    data_sent = False
    try:
        cls = smtplib.SMTP_SSL if settings.smtp_ssl else smtplib.SMTP
        with cls(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout) as conn:
            conn.ehlo()
            if settings.smtp_starttls and not settings.smtp_ssl:
                conn.starttls()
                conn.ehlo()
            if settings.smtp_user:
                conn.login(settings.smtp_user, settings.smtp_password)
            # The transaction step by step (not send_message) so a dropped connection can be placed: before
            # DATA nothing was accepted (safe to retry); after it, the relay may have queued the message.
            code, resp = conn.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, sender)
            refused = {}
            for rcpt in rcpts:
                code, resp = conn.rcpt(rcpt)
                if code not in (250, 251):
                    refused[rcpt] = (code, resp)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            data_sent = True
            conn.data(data)  # raises SMTPDataError unless the relay answers 250
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        reason = f"recipient refused: {exc.recipients}"
        raise (PermanentError(reason) if all(c >= 500 for c in codes) else TransientError(reason)) from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        reason = f"SMTP {exc.smtp_code}: {text}"
        raise (PermanentError(reason) if exc.smtp_code >= 500 else TransientError(reason)) from exc
    except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        if data_sent:
            raise DeliveryUncertain(f"connection lost during the SMTP transaction: {exc}") from exc
        raise TransientError(f"SMTP connection failed: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientError(f"SMTP error: {exc}") from exc


def mark_sent(session: Session, delivery_id: int, *, now: dt.datetime, note: str | None = None) -> None:
    """sending -> sent (a row already sent stays as it is)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.SENT, sent_at=now, next_attempt_at=None, error=note)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()


def backoff(attempts: int) -> dt.timedelta:
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


def mark_failed(session: Session, delivery_id: int, error: str, *, now: dt.datetime, permanent: bool = False) -> str:
    """sending -> pending with next_attempt_at (exponential backoff), or -> failed when permanent or out
    of attempts. Returns the new status."""
    delivery = session.get_one(Delivery, delivery_id)
    if delivery.status != DeliveryStatus.SENDING:
        return delivery.status
    delivery.error = error[:2000]
    if permanent or delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    session.flush()
    return delivery.status


def _reached_sink(message_id: str) -> bool | None:
    """True/False when the relay is the embedded sink (its mail_dir is the evidence); None when unknowable."""
    settings = get_settings()
    if not settings.smtp_sink:
        return None
    return bool(message_files(settings.mail_dir, message_id))


def reconcile(session: Session, now: dt.datetime) -> list[int]:
    """Deal with rows stuck in "sending" (see the module docstring for the rule) and return the ids that
    are pending and due now, i.e. the deliveries the caller should (re)enqueue."""
    stuck = session.scalars(
        select(Delivery).where(
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.sending_started_at < now - sending_timeout(),
        )
    ).all()
    for delivery in stuck:
        reached = _reached_sink(delivery.message_id)
        if reached:
            delivery.status = DeliveryStatus.SENT
            delivery.sent_at = now
            delivery.error = f"reconciled at {now.isoformat()}: found at relay (sink) by Message-ID"
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = DeliveryStatus.FAILED
            delivery.error = f"reconciled at {now.isoformat()}: stuck in sending, no attempts left"
        else:
            why = "not found at relay (sink)" if reached is False else "relay can't be checked"
            delivery.status = DeliveryStatus.PENDING
            delivery.next_attempt_at = now
            delivery.error = f"reconciled at {now.isoformat()}: stuck in sending, {why}; resend with same Message-ID"
    session.flush()
    due = session.scalars(
        select(Delivery.id).where(
            Delivery.status == DeliveryStatus.PENDING,
            or_(
                Delivery.next_attempt_at <= now,
                and_(Delivery.next_attempt_at.is_(None), Delivery.created_at < now - pending_grace()),
            ),
        )
    ).all()
    return list(due)


# ------------------------------------------------------------------------------------------------
# account mail (transactional: no List-Id / List-Unsubscribe, they aren't list mail)


def confirmation_message(session: Session, user_id: int) -> EmailMessage:
    """Double opt-in mail. For an address that is already confirmed (someone signed up with it again) it
    carries a preferences link instead, so the sign-up page can answer the same either way."""
    user = session.get_one(User, user_id)
    if user.confirmed:
        return magic_link_message(session, user_id, reason="signup")
    text, html = _render("confirm", user=user, confirm_url=confirm_url(user), ttl_days=tokens.CONFIRM_TTL // 86400)
    return _message(to=user.email, subject="Confirm your podcast brief", text=text, html=html)


def magic_link_message(session: Session, user_id: int, *, reason: str = "request") -> EmailMessage:
    """A sign-in link to the preferences page (no passwords)."""
    user = session.get_one(User, user_id)
    text, html = _render(
        "manage", user=user, manage_url=manage_url(user), reason=reason, ttl_days=tokens.MANAGE_TTL // 86400
    )
    return _message(to=user.email, subject="Your podbrief preferences link", text=text, html=html)
