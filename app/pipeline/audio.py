"""Audio stage: download an episode's enclosure to disk and check it is audio Whisper may spend time on.

Input rows:  Episode (enclosure_url, enclosure_type, status=new).
Output rows: Episode (audio_path, duration_seconds from the container, status=downloaded); on a permanent
             failure status=failed and `error`, and the PermanentError is re-raised for the task layer.
Idempotency: returns at once when the episode is `downloaded` with its file on disk, or already past that stage
             (a `downloaded` episode whose file vanished is fetched again).

Safety: the enclosure URL goes through app.net (SSRF guard, redirects re-checked, byte cap
settings.fetch_max_audio_bytes whatever Content-Length says, an HTML page served as audio refused by its first
bytes). The duration is read from the container headers with PyAV before anything is decoded, and a file over
settings.asr_max_audio_seconds is refused: a few KB of Opus can claim ten hours of silence, and decoding that
costs ~345 MB of RAM per hour in Whisper. PyAV opens the file with protocol_whitelist=file and only demuxers
of real audio/video containers are accepted (no HLS/concat playlists that point at other files or URLs).
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import av
from sqlalchemy.orm import Session

from app import net
from app.config import get_settings
from app.errors import PermanentError
from app.models import Episode, EpisodeStatus

log = logging.getLogger(__name__)

_EXT_BY_TYPE = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/x-mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "aac",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "video/webm": "webm",
}
_KNOWN_EXTS = frozenset(_EXT_BY_TYPE.values()) | {"mp4", "m4b", "oga", "aiff", "wma"}

# ffmpeg demuxer names (PyAV `container.format.name` may list several, comma-separated) we accept.
ALLOWED_DEMUXERS = frozenset(
    {"mp3", "aac", "ogg", "flac", "wav", "aiff", "asf", "amr", "matroska", "webm", "mov", "mp4", "m4a", "3gp"}
)


def audio_extension(enclosure_type: str | None, url: str | None) -> str:
    """File extension for the local copy: from the declared type, else the URL's suffix, else 'audio'."""
    kind = (enclosure_type or "").split(";")[0].strip().lower()
    if kind in _EXT_BY_TYPE:
        return _EXT_BY_TYPE[kind]
    suffix = PurePosixPath(urlsplit(url or "").path).suffix.lower().lstrip(".")
    return suffix if suffix in _KNOWN_EXTS else "audio"


def probe_duration(path: Path) -> float:
    """Seconds of audio the container declares, read from headers only (nothing is decoded)."""
    try:
        with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
            names = set((container.format.name or "").split(","))
            if not names & ALLOWED_DEMUXERS:
                raise PermanentError(f"unsupported media container: {container.format.name}")
            audio = [s for s in container.streams if s.type == "audio"]
            if not audio:
                raise PermanentError("file has no audio stream")
            seconds: float | None = None
            if container.duration is not None and container.duration > 0:
                seconds = container.duration / av.time_base
            for stream in audio:
                if stream.duration and stream.time_base:
                    seconds = max(seconds or 0.0, float(stream.duration * stream.time_base))
    except av.error.FFmpegError as exc:
        raise PermanentError(f"not a readable audio file: {exc.strerror or type(exc).__name__}") from exc
    if seconds is None:
        raise PermanentError("audio duration unknown: refused (cannot bound transcription cost)")
    return seconds


def download(session: Session, episode_id: int) -> bool:
    """Download and vet the episode's audio. True when the audio is on disk (now or before) or no longer needed.

    False when there is nothing to download (no enclosure, or the episode was skipped/failed).
    Raises TransientError (retry later) or PermanentError (episode marked failed first).
    """
    episode = session.get(Episode, episode_id)
    if episode is None or episode.status in (EpisodeStatus.SKIPPED, EpisodeStatus.FAILED):
        return False
    if episode.status not in (EpisodeStatus.NEW, EpisodeStatus.DOWNLOADED):
        return True  # transcribed or later: the audio is no longer needed, never move the status back
    if episode.status == EpisodeStatus.DOWNLOADED and episode.audio_path and Path(episode.audio_path).is_file():
        return True
    if not episode.enclosure_url:
        return False
    settings = get_settings()
    dest = settings.audio_dir / f"{episode.id}.{audio_extension(episode.enclosure_type, episode.enclosure_url)}"
    try:
        result = net.download(episode.enclosure_url, dest, max_bytes=settings.fetch_max_audio_bytes)
        duration = probe_duration(result.path)
        if duration > settings.asr_max_audio_seconds:
            raise PermanentError(
                f"audio is {duration / 3600:.1f} h, over the {settings.asr_max_audio_seconds / 3600:.1f} h limit"
            )
    except PermanentError as exc:
        dest.unlink(missing_ok=True)
        episode.status = EpisodeStatus.FAILED
        episode.error = exc.reason
        raise
    episode.audio_path = str(result.path)
    episode.duration_seconds = duration
    episode.status = EpisodeStatus.DOWNLOADED
    # `error` is left alone: a note from before (why the publisher transcript was not used) stays for the
    # operator, and the transcript stage clears any stale reason when it stores.
    log.info("episode %s: %d bytes of %s, %.0f s", episode.id, result.size, result.sniffed, duration)
    return True
