"""Send one delivery exactly once: the sequence of short transactions around the SMTP conversation.

Used by the `send_delivery` task and by `podbrief brief --now`. The order is the point:
1. compose the message (read-only);
2. claim: pending -> sending, COMMITTED before SMTP is touched, so a second worker (retry, duplicate beat,
   redelivered message) finds "sending" and stops;
3. talk to SMTP;
4. mark sent (or failed, with a retry time) in a new transaction.
A crash between 2 and 4 leaves the row in "sending"; `mail.reconcile` decides what happened, explicitly.
"""

from __future__ import annotations

import enum
import logging

from app.db import session_scope
from app.errors import PermanentError, TransientError
from app.models import Delivery, DeliveryStatus, utcnow
from app.pipeline import mail

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"
    IN_PROGRESS = "in_progress"  # another worker holds it (status "sending")
    RETRY = "retry"  # transient SMTP failure, scheduled again
    FAILED = "failed"


def send_delivery(delivery_id: int) -> Outcome:
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise PermanentError(f"delivery {delivery_id} does not exist")
        if delivery.status == DeliveryStatus.SENT:
            return Outcome.ALREADY_SENT
        if delivery.status == DeliveryStatus.SENDING:
            return Outcome.IN_PROGRESS
        if delivery.status == DeliveryStatus.FAILED:
            return Outcome.FAILED
        message = mail.compose(session, delivery_id)

    with session_scope() as session:
        if not mail.claim(session, delivery_id, now=utcnow()):
            status = session.get(Delivery, delivery_id)
            return Outcome.ALREADY_SENT if status and status.status == DeliveryStatus.SENT else Outcome.IN_PROGRESS

    try:
        mail.smtp_send(message)
    except TransientError as exc:
        with session_scope() as session:
            mail.mark_failed(session, delivery_id, exc.reason, permanent=False, now=utcnow())
        log.warning("delivery %s: transient SMTP failure: %s", delivery_id, exc.reason)
        return Outcome.RETRY
    except PermanentError as exc:
        with session_scope() as session:
            mail.mark_failed(session, delivery_id, exc.reason, permanent=True, now=utcnow())
        log.error("delivery %s: permanent SMTP failure: %s", delivery_id, exc.reason)
        return Outcome.FAILED

    with session_scope() as session:
        mail.mark_sent(session, delivery_id, now=utcnow())
    return Outcome.SENT
