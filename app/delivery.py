"""Send one delivery exactly once: the short transactions around the SMTP conversation.

Used by the `send_delivery` task and by `podbrief brief --now`; it lives outside app/pipeline because it owns
transactions (stages never commit). The order is the point:
1. claim (pending -> sending) and compose, COMMITTED before SMTP is touched, so a second worker (a retry, a
   duplicate beat, a redelivered message) finds "sending" or "sent" and stops;
2. talk to SMTP;
3. mark sent, or failed with a retry time, in a new transaction.
A crash between 1 and 3 leaves the row in "sending"; `mail.reconcile` decides what happened, with evidence.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging

from sqlalchemy import update

from app.db import session_scope
from app.errors import PermanentError, TransientError
from app.models import Delivery, DeliveryStatus, utcnow
from app.pipeline import mail

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"
    IN_PROGRESS = "in_progress"  # another worker holds it, or the relay may have it (reconcile decides)
    NOT_DUE = "not_due"  # pending with a retry time in the future
    RETRY = "retry"  # transient SMTP failure, scheduled again (reconcile re-enqueues it when due)
    FAILED = "failed"


def send_delivery(delivery_id: int, *, now: dt.datetime | None = None) -> Outcome:
    now = now or utcnow()
    with session_scope() as session:
        if not mail.claim(session, delivery_id, now=now):
            return _why_not_claimed(session.get(Delivery, delivery_id))
        try:
            message = mail.compose(session, delivery_id)
        except PermanentError as exc:
            mail.mark_failed(session, delivery_id, exc.reason, now=now, permanent=True)
            return Outcome.FAILED

    try:
        mail.smtp_send(message)
    except mail.DeliveryUncertain as exc:
        # The data went out before the connection broke: the relay may have accepted it. Left in "sending" on
        # purpose; reconcile() decides with evidence instead of resending blindly.
        with session_scope() as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(error=exc.reason))
        log.warning("delivery %s: outcome unknown, left for reconcile: %s", delivery_id, exc.reason)
        return Outcome.IN_PROGRESS
    except (TransientError, PermanentError) as exc:
        with session_scope() as session:
            status = mail.mark_failed(session, delivery_id, exc.reason, now=utcnow(), permanent=exc.permanent)
        log.warning("delivery %s: SMTP failure (%s): %s", delivery_id, status, exc.reason)
        return Outcome.FAILED if status == DeliveryStatus.FAILED else Outcome.RETRY

    with session_scope() as session:
        mail.mark_sent(session, delivery_id, now=utcnow())
    return Outcome.SENT


def _why_not_claimed(delivery: Delivery | None) -> Outcome:
    if delivery is None:
        raise PermanentError("delivery does not exist")
    return {
        DeliveryStatus.SENT: Outcome.ALREADY_SENT,
        DeliveryStatus.SENDING: Outcome.IN_PROGRESS,
        DeliveryStatus.FAILED: Outcome.FAILED,
    }.get(DeliveryStatus(delivery.status), Outcome.NOT_DUE)
