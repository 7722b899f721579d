"""Transcript stage: a publisher transcript when the feed links one, else Whisper on the downloaded audio.

Input rows:  Episode (transcript_url/transcript_type from podcast:transcript, or audio_path with
             status=downloaded).
Output rows: TranscriptSegment rows (idx, start, end, text, speaker); Episode.transcript_source
             ("publisher:vtt", "whisper:faster-whisper:tiny.en" ...), status=transcribed, lease released.
Idempotency: store() is a no-op when the episode already has segments; claim() returns None for an episode
             that is transcribed (or past it).

Three steps so the long one holds no database transaction:
  claim(session, ...)  takes a lease (Episode.lease_owner/lease_until); the task commits right after.
  run(job)             fetches/parses or transcribes, with no session at all (minutes of CPU/GPU).
  store(session, ...)  writes the rows, refusing if another worker took the lease over meanwhile.
A worker that dies mid-run leaves a lease that expires after settings.asr_lease_seconds; then another may claim.
While run() works the task keeps the lease alive with app.pipeline.lease.Heartbeat (renewed every lease/3).

A publisher transcript that turns out unusable (404, garbage) with no audio on disk yet raises PublisherUnusable;
the task then calls fall_back_to_audio(), which records why on the episode (Episode.error, kept once transcribed),
forgets the transcript link and leaves the episode `new`, for the audio download stage and Whisper.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app import asr
from app.asr import publisher
from app.asr.types import Segment
from app.config import get_settings
from app.errors import PermanentError, PipelineError
from app.models import Episode, EpisodeStatus, TranscriptSegment, utcnow

log = logging.getLogger(__name__)

_CLAIMABLE = (EpisodeStatus.NEW, EpisodeStatus.DOWNLOADED)


class LeaseLost(PipelineError):
    """Another worker took this episode's lease over (ours expired): drop our result, it will store its own."""


class PublisherUnusable(PermanentError):
    """The publisher transcript can't be used (404, unparsable) and there is no audio yet: try the enclosure."""


# Episode.error while (and after) the episode is transcribed from audio instead of its publisher transcript.
FALLBACK_NOTE = "publisher transcript unusable"


@dataclass(frozen=True)
class TranscriptJob:
    episode_id: int
    owner: str
    lease_until: dt.datetime
    audio_path: str | None
    transcript_url: str | None
    transcript_type: str | None


@dataclass
class TranscriptResult:
    segments: list[Segment]
    source: str  # Episode.transcript_source
    duration: float | None = None


def claim(session: Session, episode_id: int, *, owner: str, now: dt.datetime | None = None) -> TranscriptJob | None:
    """Lease the episode for transcription; None if it's done, not ready, or leased by a live other owner."""
    now = now or utcnow()
    until = now + dt.timedelta(seconds=get_settings().asr_lease_seconds)
    # One conditional UPDATE: atomic on SQLite and PostgreSQL, so two workers can't both win.
    taken = session.execute(
        update(Episode)
        .where(
            Episode.id == episode_id,
            Episode.status.in_([s.value for s in _CLAIMABLE]),
            or_(Episode.transcript_url.is_not(None), Episode.audio_path.is_not(None)),
            or_(Episode.lease_owner.is_(None), Episode.lease_owner == owner, Episode.lease_until < now),
        )
        .values(lease_owner=owner, lease_until=until)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    episode = session.get(Episode, episode_id, populate_existing=True)
    assert episode is not None
    has_segments = session.scalar(
        select(func.count()).select_from(TranscriptSegment).where(TranscriptSegment.episode_id == episode_id)
    )
    if has_segments:
        # Segments stored but the status never moved (a crash between the two is impossible in one
        # transaction, but an operator may have reset it): finish the bookkeeping, nothing to run.
        episode.status = EpisodeStatus.TRANSCRIBED
        episode.lease_owner = episode.lease_until = None
        return None
    return TranscriptJob(
        episode_id=episode_id,
        owner=owner,
        lease_until=until,
        audio_path=episode.audio_path,
        transcript_url=episode.transcript_url,
        transcript_type=episode.transcript_type,
    )


def run(job: TranscriptJob) -> TranscriptResult:
    """Publisher transcript if there is one (falling back to Whisper if it's unusable and audio exists)."""
    if job.transcript_url:
        try:
            return _publisher(job.transcript_url, job.transcript_type)
        except PermanentError as exc:
            if not job.audio_path:
                # No audio downloaded (the task routed straight here): the task falls back to the enclosure.
                raise PublisherUnusable(exc.reason) from exc
            log.warning("episode %s: publisher transcript unusable (%s); using Whisper", job.episode_id, exc.reason)
    if not job.audio_path:
        raise PermanentError("no audio and no publisher transcript")
    if not Path(job.audio_path).is_file():
        raise PermanentError(f"audio file missing: {Path(job.audio_path).name}")
    transcript = asr.transcribe_file(job.audio_path)
    return TranscriptResult(segments=transcript.segments, source=transcript.source, duration=transcript.duration)


def _publisher(url: str, declared_type: str | None) -> TranscriptResult:
    from app.net.fetch import fetch  # lazy: app.net pulls in httpx, which ASR-only workers don't need

    settings = get_settings()
    response = fetch(url, max_bytes=settings.fetch_max_feed_bytes)
    mime = declared_type or response.headers.get("content-type")
    kind, segments = publisher.parse(response.content, mime)
    return TranscriptResult(segments=segments, source=f"publisher:{kind}")


def release(session: Session, episode_id: int, *, owner: str) -> bool:
    """Give the lease up (before a retry): the retry may run in another worker process, under another owner,
    and must not wait for our lease to expire. Only a lease that is still ours is cleared."""
    done = session.execute(
        update(Episode)
        .where(Episode.id == episode_id, Episode.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def fall_back_to_audio(session: Session, job: TranscriptJob, reason: str, *, owner: str) -> bool:
    """After PublisherUnusable: record why, forget the transcript link, release the lease, leave the episode `new`.

    True when the episode should go to the audio download stage; False when there is no enclosure to fall back
    on (the caller fails the episode). Raises LeaseLost if another worker holds the lease now.
    """
    episode = session.get(Episode, job.episode_id, populate_existing=True, with_for_update=True)
    if episode is None:
        raise PermanentError(f"episode {job.episode_id} is gone")
    if episode.lease_owner != owner:
        raise LeaseLost(f"episode {job.episode_id}: lease now held by {episode.lease_owner or 'nobody'}")
    if not episode.enclosure_url:
        return False
    note = f"{FALLBACK_NOTE} ({reason}): {episode.transcript_url}; transcribing the audio instead"
    log.warning("episode %s: %s", episode.id, note)
    episode.error = note[:2000]
    # Forgotten for processing: claim(), run() and the task's routing all go by transcript_url. feeds.poll never
    # rewrites a known episode, so the link does not come back; the URL is kept in the note above.
    episode.transcript_url = None
    episode.transcript_type = None
    episode.lease_owner = None
    episode.lease_until = None
    session.flush()
    return True


def store(session: Session, job: TranscriptJob, result: TranscriptResult, *, owner: str) -> int:
    """Write the segments and mark the episode transcribed; returns the number of segments."""
    existing = session.scalar(
        select(func.count()).select_from(TranscriptSegment).where(TranscriptSegment.episode_id == job.episode_id)
    )
    if existing:
        return int(existing)
    episode = session.get(Episode, job.episode_id, populate_existing=True, with_for_update=True)
    if episode is None:
        raise PermanentError(f"episode {job.episode_id} is gone")
    if episode.lease_owner != owner:
        raise LeaseLost(f"episode {job.episode_id}: lease now held by {episode.lease_owner or 'nobody'}")
    for idx, seg in enumerate(result.segments):
        session.add(
            TranscriptSegment(
                episode_id=episode.id,
                idx=idx,
                start=round(float(seg.start), 3),
                end=round(float(max(seg.end, seg.start)), 3),
                text=seg.text,
                speaker=seg.speaker,
            )
        )
    episode.transcript_source = result.source[:50]
    if episode.duration_seconds is None and result.duration is not None:
        episode.duration_seconds = result.duration
    episode.status = EpisodeStatus.TRANSCRIBED
    if not (episode.error or "").startswith(FALLBACK_NOTE):  # keep why the publisher transcript was not used
        episode.error = None
    episode.lease_owner = None
    episode.lease_until = None
    session.flush()
    return len(result.segments)
