"""All tables. Stages talk only through these rows (see docs/architecture.md for the flow).

Times are stored as timezone-aware UTC. Embeddings are stored portably as float32 bytes (no pgvector).
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from app.db import Base


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime that always comes back timezone-aware UTC, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC times")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PodcastStatus(enum.StrEnum):
    ACTIVE = "active"
    ERROR = "error"  # last fetch failed; retried with backoff
    RETIRED = "retired"  # 410 Gone or removed by the operator: never polled again


class EpisodeStatus(enum.StrEnum):
    NEW = "new"  # known from the feed, nothing fetched yet
    DOWNLOADED = "downloaded"  # audio on disk
    TRANSCRIBED = "transcribed"  # transcript segments stored
    EXTRACTED = "extracted"  # insight candidates stored
    READY = "ready"  # insights embedded: eligible for briefs
    FAILED = "failed"  # a permanent error; see `error`
    SKIPPED = "skipped"  # back catalogue beyond one poll's cap (app.pipeline.feeds): known for dedupe, never processed


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # created, not yet handed to SMTP
    SENDING = "sending"  # committed before talking to SMTP; a crash leaves it here for the reconciler
    SENT = "sent"
    FAILED = "failed"  # gave up after retries; see `error`


class Podcast(Base):
    __tablename__ = "podcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    site_url: Mapped[str | None] = mapped_column(String(2048))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=PodcastStatus.ACTIVE, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    episodes: Mapped[list[Episode]] = relationship(back_populates="podcast", cascade="all, delete-orphan")


class Episode(Base):
    __tablename__ = "episodes"
    __table_args__ = (UniqueConstraint("podcast_id", "guid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    podcast_id: Mapped[int] = mapped_column(ForeignKey("podcasts.id", ondelete="CASCADE"), index=True)
    guid: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str] = mapped_column(String(1000), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(2048))
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    enclosure_url: Mapped[str | None] = mapped_column(String(2048))
    enclosure_type: Mapped[str | None] = mapped_column(String(200))
    enclosure_length: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    # Publisher transcript (podcast:transcript), preferred over Whisper when present.
    transcript_url: Mapped[str | None] = mapped_column(String(2048))
    transcript_type: Mapped[str | None] = mapped_column(String(100))
    transcript_source: Mapped[str | None] = mapped_column(String(50))  # "publisher:<type>" | "whisper:<engine>"
    audio_path: Mapped[str | None] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(20), default=EpisodeStatus.NEW, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A lease so a long stage (transcription) can't run twice at once; expired leases may be taken over.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    podcast: Mapped[Podcast] = relationship(back_populates="episodes")
    segments: Mapped[list[TranscriptSegment]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="TranscriptSegment.idx"
    )
    insights: Mapped[list[Insight]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="Insight.idx"
    )


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"
    __table_args__ = (UniqueConstraint("episode_id", "idx"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    speaker: Mapped[str | None] = mapped_column(String(100))

    episode: Mapped[Episode] = relationship(back_populates="segments")


class Insight(Base):
    __tablename__ = "insights"
    __table_args__ = (UniqueConstraint("episode_id", "idx"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    # How much a passage says (specific claim, mechanism, number), 0..1, from the extraction stage.
    substance: Mapped[float] = mapped_column(Float, default=0.0)
    # float32 little-endian bytes of the L2-normalised sentence embedding; NULL until embedded.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    episode: Mapped[Episode] = relationship(back_populates="insights")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    interests: Mapped[str] = mapped_column(Text, default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    delivery_hour: Mapped[int] = mapped_column(Integer, default=7)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Opaque random token for links that must work without a login (unsubscribe, personal feed).
    token: Mapped[str] = mapped_column(String(64), unique=True)
    # Why the last due brief was skipped (nothing new qualified, ...), for the operator and the user.
    last_skip_reason: Mapped[str | None] = mapped_column(Text)
    last_skip_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None

    @property
    def active(self) -> bool:
        return self.confirmed_at is not None and not self.paused and self.unsubscribed_at is None


class Subscription(Base):
    """A show the user follows: weighted up in ranking (briefs draw on the whole catalogue)."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "podcast_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    podcast_id: Mapped[int] = mapped_column(ForeignKey("podcasts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Brief(Base):
    __tablename__ = "briefs"
    # One brief per user per local date, enforced by the database (exactly-once starts here).
    __table_args__ = (UniqueConstraint("user_id", "local_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    local_date: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    items: Mapped[list[BriefItem]] = relationship(
        back_populates="brief", cascade="all, delete-orphan", order_by="BriefItem.position"
    )
    delivery: Mapped[Delivery | None] = relationship(back_populates="brief", cascade="all, delete-orphan")


class BriefItem(Base):
    __tablename__ = "brief_items"
    __table_args__ = (UniqueConstraint("brief_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    brief_id: Mapped[int] = mapped_column(ForeignKey("briefs.id", ondelete="CASCADE"), index=True)
    insight_id: Mapped[int] = mapped_column(ForeignKey("insights.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    why: Mapped[str] = mapped_column(Text, default="")
    # How many shows said the same idea (near-duplicate insights collapsed into this item).
    shows_count: Mapped[int] = mapped_column(Integer, default=1)

    brief: Mapped[Brief] = relationship(back_populates="items")
    insight: Mapped[Insight] = relationship()


class Delivery(Base):
    """One email for one brief. The state machine that makes sending exactly-once (see app.pipeline.mail)."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    brief_id: Mapped[int] = mapped_column(ForeignKey("briefs.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING, index=True)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    sending_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    brief: Mapped[Brief] = relationship(back_populates="delivery")


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    insight_id: Mapped[int] = mapped_column(ForeignKey("insights.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # more | less | less_show
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # shown to the user, used for lookup
    key_hash: Mapped[str] = mapped_column(String(128))  # sha256 of the full key; the key itself is never stored
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
