"""One thin task per stage. Ids in; one stage inside `session_scope()`; the next task is enqueued only after
the commit. Only this module knows the order of the stages (see docs/architecture.md).

Error policy: TransientError -> retry with exponential backoff; PermanentError -> record the reason on the row
and stop. Anything a killed worker or a lost message leaves half-done is picked up by `reconcile`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

from celery import Task

from app.db import session_scope
from app.delivery import Outcome
from app.delivery import send_delivery as deliver
from app.errors import PermanentError, TransientError
from app.models import Episode, EpisodeStatus, utcnow
from app.pipeline import audio, briefs, embeddings, feeds, insights, lease, mail, schedule, transcripts
from workers.celery_app import celery_app

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 30
MAX_RETRIES = 5


def _backoff(task: Task) -> int:
    return int(RETRY_BASE_SECONDS * 2 ** min(task.request.retries, 8))


def _retry_or_fail(task: Task, episode_id: int, exc: Exception) -> None:
    """Transient: retry later. Permanent (or out of retries): mark the episode failed with the reason."""
    if isinstance(exc, TransientError) and task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=_backoff(task))
    reason = exc.reason if isinstance(exc, TransientError | PermanentError) else f"{type(exc).__name__}: {exc}"
    with session_scope() as session:
        schedule.mark_failed(session, episode_id, reason)
    log.error("episode %s failed: %s", episode_id, reason)


def dispatch_episode(episode_id: int) -> str | None:
    """Enqueue whatever moves this episode on from its current status (used after polls and by reconcile)."""
    with session_scope() as session:
        episode = session.get(Episode, episode_id)
        if episode is None:
            return None
        step = schedule.next_step(episode)
        has_transcript = bool(episode.transcript_url)
    if step == "fetch":
        # A publisher transcript makes the audio download unnecessary.
        (transcribe if has_transcript else download_audio).delay(episode_id)
    elif step == "transcribe":
        transcribe.delay(episode_id)
    elif step == "extract":
        extract_insights.delay(episode_id)
    elif step == "embed":
        embed.delay(episode_id)
    return step


# --- feeds ------------------------------------------------------------------------------------------------
@celery_app.task(name="podbrief.poll_feed", bind=True, acks_late=True)
def poll_feed(self: Task, podcast_id: int) -> list[int]:
    with session_scope() as session:
        result = feeds.poll(session, podcast_id)
    for episode_id in result.new_episode_ids:
        dispatch_episode(episode_id)
    return list(result.new_episode_ids)


@celery_app.task(name="podbrief.download_audio", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def download_audio(self: Task, episode_id: int) -> None:
    try:
        with session_scope() as session:
            audio.download(session, episode_id)
    except (TransientError, PermanentError) as exc:
        _retry_or_fail(self, episode_id, exc)
        return
    # From the row's status, not blindly: a skipped or already-advanced episode is not transcribed again.
    dispatch_episode(episode_id)


# --- transcription (asr queue: the GPU worker in production) ----------------------------------------------
@celery_app.task(name="podbrief.transcribe", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def transcribe(self: Task, episode_id: int) -> None:
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    with session_scope() as session:
        job = transcripts.claim(session, episode_id, owner=owner)
        status = session.get(Episode, episode_id)
        already_done = status is not None and status.status not in (EpisodeStatus.NEW, EpisodeStatus.DOWNLOADED)
    if job is None:
        # Done already (a duplicate message) or leased by a live worker: nothing to do here.
        if already_done:
            dispatch_episode(episode_id)
        return
    try:
        # The run may outlast the lease (settings.asr_lease_seconds): keep renewing it while it works.
        with lease.Heartbeat(episode_id, owner):
            result = transcripts.run(job)
        with session_scope() as session:
            transcripts.store(session, job, result, owner=owner)
    except transcripts.LeaseLost as exc:
        # Our lease expired and another worker took the episode over: its result wins, ours is dropped.
        log.warning("episode %s: %s", episode_id, exc.reason)
        return
    except transcripts.PublisherUnusable as exc:
        # The feed's transcript is broken (404, garbage) and no audio was fetched: use the enclosure instead.
        _fall_back_to_audio(self, job, owner, exc)
        return
    except (TransientError, PermanentError) as exc:
        with session_scope() as session:
            transcripts.release(session, episode_id, owner=owner)
        _retry_or_fail(self, episode_id, exc)
        return
    extract_insights.delay(episode_id)


def _fall_back_to_audio(task: Task, job: transcripts.TranscriptJob, owner: str, exc: PermanentError) -> None:
    try:
        with session_scope() as session:
            to_audio = transcripts.fall_back_to_audio(session, job, exc.reason, owner=owner)
    except transcripts.LeaseLost as lost:
        log.warning("episode %s: %s", job.episode_id, lost.reason)
        return
    except PermanentError as gone:
        _retry_or_fail(task, job.episode_id, gone)
        return
    if to_audio:
        download_audio.delay(job.episode_id)
    else:
        _retry_or_fail(task, job.episode_id, PermanentError(f"{exc.reason}; and no audio enclosure to fall back on"))


# --- insights and embeddings (ml queue) ------------------------------------------------------------------
@celery_app.task(name="podbrief.extract_insights", bind=True, acks_late=True)
def extract_insights(self: Task, episode_id: int) -> None:
    with session_scope() as session:
        insights.extract(session, episode_id)
    embed.delay(episode_id)


@celery_app.task(name="podbrief.embed", bind=True, acks_late=True)
def embed(self: Task, episode_id: int) -> None:
    with session_scope() as session:
        embeddings.embed_episode(session, episode_id)


# --- briefs and mail --------------------------------------------------------------------------------------
@celery_app.task(name="podbrief.build_brief", bind=True, acks_late=True)
def build_brief(self: Task, user_id: int, local_date: str) -> int | None:
    day = dt.date.fromisoformat(local_date)
    with session_scope() as session:
        brief_id = briefs.build(session, user_id, day, now=utcnow())
        if brief_id is None:
            schedule.record_skip(session, user_id)
            return None
        delivery_id = mail.ensure_delivery(session, brief_id)
    send_delivery.delay(delivery_id)
    return brief_id


@celery_app.task(name="podbrief.send_delivery", bind=True, acks_late=True)
def send_delivery(self: Task, delivery_id: int) -> str:
    outcome = deliver(delivery_id)
    if outcome == Outcome.RETRY:
        # mark_failed stored next_attempt_at; reconcile re-enqueues it when due (survives worker restarts).
        log.info("delivery %s will be retried by reconcile", delivery_id)
    return str(outcome)


@celery_app.task(name="podbrief.send_confirmation", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def send_confirmation(self: Task, user_id: int) -> None:
    with session_scope() as session:
        message = mail.confirmation_message(session, user_id)
    try:
        mail.smtp_send(message)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self)) from exc


# --- beat: the database is the schedule -------------------------------------------------------------------
@celery_app.task(name="podbrief.beat.poll_due_feeds")
def poll_due_feeds() -> int:
    now = utcnow()
    hold = dt.timedelta(minutes=10)
    with session_scope() as session:
        ids = feeds.due(session, now, limit=200)
        # Push the due time forward while the poll is queued, so the next beat tick doesn't enqueue it again;
        # poll() sets the real next_check_at.
        schedule.hold_podcasts(session, ids, now + hold)
    for podcast_id in ids:
        poll_feed.delay(podcast_id)
    return len(ids)


@celery_app.task(name="podbrief.beat.send_due_briefs")
def send_due_briefs() -> int:
    with session_scope() as session:
        due = schedule.due_briefs(session, utcnow())
    for user_id, local_date in due:
        build_brief.delay(user_id, local_date.isoformat())
    return len(due)


@celery_app.task(name="podbrief.beat.reconcile")
def reconcile() -> dict[str, int]:
    now = utcnow()
    with session_scope() as session:
        stalled = schedule.stalled_episodes(session, now)
        deliveries = mail.reconcile(session, now)
    for episode_id in stalled:
        dispatch_episode(episode_id)
    for delivery_id in deliveries:
        send_delivery.delay(delivery_id)
    return {"episodes": len(stalled), "deliveries": len(deliveries)}
