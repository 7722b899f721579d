"""Request and response models of /api/v1 (they are also the OpenAPI document's schemas)."""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import available_timezones

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

T = TypeVar("T")

# Scheme and host syntax only: whether the host may be fetched (SSRF rules) is decided by the worker's guarded
# fetcher, so the request never reveals anything about internal addresses (reliability.md A7).
FEED_URL_PATTERN = (
    r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"(?:[/?][!#-~]*)?$"
)


@lru_cache(maxsize=1)
def timezones() -> list[str]:
    # Only canonical IANA names: ZoneInfo() would also accept odd file names under the tz database.
    return sorted(tz for tz in available_timezones() if tz != "localtime")


_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_day(value: object) -> object:
    """Only YYYY-MM-DD: pydantic would also read 0 or 1700000000 as a date (Unix time), which no client means."""
    if isinstance(value, str) and not _ISO_DAY.match(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    if not isinstance(value, str | dt.date):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_day)]


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    detail: Any | None = None


class ErrorResponse(BaseModel):
    """The one error shape of the whole app."""

    error: ErrorBody


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Opaque; pass as ?cursor= for the next page. null: last page.")


class InsightOut(BaseModel):
    id: int
    episode_id: int
    podcast_id: int
    text: str
    start: float = Field(description="Seconds from the start of the episode")
    end: float
    substance: float
    episode_title: str
    podcast_title: str
    published_at: dt.datetime | None
    created_at: dt.datetime
    score: float | None = Field(None, description="Cosine similarity to the query or insight (search, related)")


class InsightDetail(InsightOut):
    related: list[InsightOut]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: false is not an hour, 1 is not a name
    kind: Literal["more", "less", "less_show"]


class FeedbackOut(BaseModel):
    id: int
    insight_id: int
    kind: str
    created_at: dt.datetime


class BriefItemOut(BaseModel):
    position: int
    score: float
    why: str
    shows_count: int
    insight: InsightOut


class BriefOut(BaseModel):
    id: int
    local_date: dt.date
    created_at: dt.datetime
    items: list[BriefItemOut]


class PodcastOut(BaseModel):
    id: int
    feed_url: str
    title: str
    description: str
    site_url: str | None
    image_url: str | None
    status: str
    last_checked_at: dt.datetime | None
    created_at: dt.datetime
    subscribed: bool


class SubscribeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: false is not an hour, 1 is not a name
    feed_url: str = Field(max_length=2048, pattern=FEED_URL_PATTERN, examples=["https://example.com/feed.xml"])


class OpmlRejected(BaseModel):
    url: str
    reason: str


class OpmlImportResult(BaseModel):
    subscribed: list[PodcastOut]
    rejected: list[OpmlRejected]


class EpisodeOut(BaseModel):
    id: int
    podcast_id: int
    title: str
    link: str | None
    published_at: dt.datetime | None
    duration_seconds: float | None
    status: str
    transcript_source: str | None = Field(
        description='"publisher:<type>" or "whisper:<engine>"; null until transcribed'
    )
    created_at: dt.datetime


class SegmentOut(BaseModel):
    idx: int
    start: float
    end: float
    text: str
    speaker: str | None


class EpisodeDetail(EpisodeOut):
    description: str
    segments: list[SegmentOut]
    insight_ids: list[int]


class MeOut(BaseModel):
    id: int
    email: str
    interests: str
    timezone: str
    delivery_hour: int
    confirmed: bool
    paused: bool
    created_at: dt.datetime


def _whole_number(value: object) -> object:
    """JSON Schema's "integer" includes 1.0 but not true/"1": accept exactly that in a strict model."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: false is not an hour, 1 is not a name
    interests: str | None = Field(None, max_length=2000)
    # The enum sits on the string branch so that null (= leave unchanged) stays valid in the schema.
    timezone: Annotated[str, WithJsonSchema({"type": "string", "enum": timezones()})] | None = Field(
        None, description="IANA time zone name"
    )
    delivery_hour: Annotated[int, Field(ge=0, le=23), BeforeValidator(_whole_number)] | None = Field(
        None, description="Local hour (0-23) the brief is mailed"
    )

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str | None) -> str | None:
        if value is not None and value not in set(timezones()):
            raise ValueError("not an IANA time zone name")
        return value


class ApiKeyOut(BaseModel):
    id: int
    prefix: str = Field(description="Shown to identify the key: the key starts with pb_<prefix>_")
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: false is not an hour, 1 is not a name
    name: str = Field("", max_length=200)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown only in this response; store it now.")
