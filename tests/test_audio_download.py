"""The audio stage (app.pipeline.audio) against a local HTTP server and real audio containers."""

from __future__ import annotations

import math
import os
import struct
import wave
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app import config
from app.errors import PermanentError, TransientError
from app.models import Episode, EpisodeStatus
from app.net import BlockedAddressError, OversizeError
from app.pipeline.audio import audio_extension, download, probe_duration
from app.pipeline.feeds import subscribe
from tests.test_net_localserver import LocalServer, server  # noqa: F401


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """A real PCM WAV written by the stdlib: a 440 Hz tone."""
    path = Path(os.environ["PODBRIEF_VAR_DIR"]) / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = int(seconds * rate)
        out.writeframes(
            b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames))
        )
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def site(db_url: str, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:  # noqa: F811
    monkeypatch.setenv("PODBRIEF_FETCH_ALLOW_HOSTS", server.host)
    config.reset_settings()
    return server


def make_episode(session: Session, url: str | None, kind: str | None = "audio/wav") -> Episode:
    podcast = subscribe(session, "https://feeds.example.com/show.rss")
    episode = Episode(podcast_id=podcast.id, guid=url or "no-enclosure", enclosure_url=url, enclosure_type=kind)
    session.add(episode)
    session.flush()
    return episode


def audio_files() -> list[Path]:
    folder = config.get_settings().audio_dir
    return sorted(folder.iterdir()) if folder.exists() else []


def test_download_sets_path_duration_and_status(session: Session, site: LocalServer) -> None:
    site.reply("/ep.wav", 200, wav_bytes(2.0), {"Content-Type": "audio/wav"})
    episode = make_episode(session, site.url("/ep.wav"))
    assert download(session, episode.id) is True
    assert episode.status == EpisodeStatus.DOWNLOADED
    assert episode.audio_path == str(config.get_settings().audio_dir / f"{episode.id}.wav")
    assert episode.duration_seconds == pytest.approx(2.0, abs=0.01)
    assert audio_files() == [Path(episode.audio_path)]


def test_download_is_idempotent(session: Session, site: LocalServer) -> None:
    site.reply("/ep.wav", 200, wav_bytes(1.0))
    episode = make_episode(session, site.url("/ep.wav"))
    assert download(session, episode.id) is True
    assert download(session, episode.id) is True
    assert site.hits("/ep.wav") == 1


def test_later_stages_never_move_back(session: Session, site: LocalServer) -> None:
    site.reply("/ep.wav", 200, wav_bytes(1.0))
    episode = make_episode(session, site.url("/ep.wav"))
    episode.status, episode.audio_path = EpisodeStatus.TRANSCRIBED, "/gone/after/cleanup.wav"
    assert download(session, episode.id) is True
    assert episode.status == EpisodeStatus.TRANSCRIBED and site.hits("/ep.wav") == 0


def test_downloaded_but_file_missing_is_fetched_again(session: Session, site: LocalServer) -> None:
    site.reply("/ep.wav", 200, wav_bytes(1.0))
    episode = make_episode(session, site.url("/ep.wav"))
    assert download(session, episode.id) is True
    Path(episode.audio_path or "").unlink()
    assert download(session, episode.id) is True and Path(episode.audio_path or "").is_file()
    assert site.hits("/ep.wav") == 2


def test_over_duration_cap_refused_and_deleted(
    session: Session, site: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODBRIEF_ASR_MAX_AUDIO_SECONDS", "1.5")
    config.reset_settings()
    site.reply("/long.wav", 200, wav_bytes(3.0))
    episode = make_episode(session, site.url("/long.wav"))
    with pytest.raises(PermanentError, match="over the"):
        download(session, episode.id)
    assert audio_files() == []
    assert episode.status == EpisodeStatus.FAILED and "limit" in (episode.error or "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<!DOCTYPE html><html><body>Subscribe to listen</body></html>", "HTML"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n", "HTML"),
        (b"ffconcat version 1.0\nfile /etc/passwd\n", "HTML"),
        (bytes(range(256)) * 8, "not a readable audio file|unsupported|no audio"),
    ],
    ids=["html-page", "hls-playlist", "ffconcat", "binary-garbage"],
)
def test_non_audio_refused(session: Session, site: LocalServer, body: bytes, reason: str) -> None:
    site.reply("/ep.mp3", 200, body, {"Content-Type": "audio/mpeg"})
    episode = make_episode(session, site.url("/ep.mp3"), "audio/mpeg")
    with pytest.raises(PermanentError, match=reason):
        download(session, episode.id)
    assert audio_files() == [] and episode.status == EpisodeStatus.FAILED


def test_byte_cap_regardless_of_content_length(
    session: Session, site: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODBRIEF_FETCH_MAX_AUDIO_BYTES", "10000")
    config.reset_settings()
    site.reply("/big.wav", 200, wav_bytes(2.0))
    episode = make_episode(session, site.url("/big.wav"))
    with pytest.raises(OversizeError):
        download(session, episode.id)
    assert audio_files() == []


def test_loopback_enclosure_refused_without_allow_list(session: Session, server: LocalServer) -> None:  # noqa: F811
    episode = make_episode(session, server.url("/ep.wav"))
    with pytest.raises(BlockedAddressError):
        download(session, episode.id)
    assert server.seen == [] and episode.status == EpisodeStatus.FAILED


def test_server_error_is_transient_and_episode_stays_new(session: Session, site: LocalServer) -> None:
    site.reply("/ep.wav", 503)
    episode = make_episode(session, site.url("/ep.wav"))
    with pytest.raises(TransientError):
        download(session, episode.id)
    assert episode.status == EpisodeStatus.NEW and audio_files() == []


def test_nothing_to_download(session: Session) -> None:
    episode = make_episode(session, None)
    assert download(session, episode.id) is False
    episode.status = EpisodeStatus.SKIPPED
    assert download(session, episode.id) is False
    assert download(session, 999_999) is False


def test_real_mp3_duration_read_without_decoding(tmp_path: Path) -> None:
    mp3 = Path(__file__).parent / "data" / "feeds" / "enclosures" / "jfk.mp3"
    assert probe_duration(mp3) == pytest.approx(11.0, abs=0.1)


@pytest.mark.parametrize(
    ("kind", "url", "ext"),
    [
        ("audio/mpeg", "https://x/a", "mp3"),
        ("audio/x-m4a", None, "m4a"),
        (None, "https://x/a.ogg?x=1", "ogg"),
        (None, "https://x/a.exe", "audio"),
        ("audio/mpeg; charset=binary", None, "mp3"),
        (None, None, "audio"),
    ],
)
def test_audio_extension(kind: str | None, url: str | None, ext: str) -> None:
    assert audio_extension(kind, url) == ext
