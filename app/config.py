"""One Settings object, read from the environment.

The defaults are the *embedded* setup that `make run` uses (SQLite, a server-less Celery broker, the local
SMTP sink); production sets DATABASE_URL, REDIS_URL and SMTP_* (see README "Configuration").
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str) -> AliasChoices:
    """Accept both the bare name (DATABASE_URL) and the prefixed one (PODBRIEF_DATABASE_URL)."""
    return AliasChoices(name, f"PODBRIEF_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODBRIEF_", extra="ignore", populate_by_name=True)

    # --- where things live -------------------------------------------------------------------------
    var_dir: Path = Field(default=ROOT / "var", validation_alias=_env("VAR_DIR"))
    database_url: str = Field(default="", validation_alias=_env("DATABASE_URL"))
    redis_url: str = Field(default="", validation_alias=_env("REDIS_URL"))
    broker_url: str = Field(default="", validation_alias=_env("BROKER_URL"))

    # Where derived model files are cached (default var/models); tests share one across the session.
    model_cache_dir: Path | None = None

    # --- web -----------------------------------------------------------------------------------------
    base_url: str = Field(default="http://127.0.0.1:8000", validation_alias=_env("BASE_URL"))
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = Field(default="", validation_alias=_env("SECRET_KEY"))

    # --- mail ----------------------------------------------------------------------------------------
    smtp_host: str = Field(default="127.0.0.1", validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(default=8025, validation_alias=_env("SMTP_PORT"))
    smtp_user: str = Field(default="", validation_alias=_env("SMTP_USER"))
    smtp_password: str = Field(default="", validation_alias=_env("SMTP_PASSWORD"))
    smtp_starttls: bool = Field(default=False, validation_alias=_env("SMTP_STARTTLS"))
    smtp_ssl: bool = Field(default=False, validation_alias=_env("SMTP_SSL"))
    smtp_timeout: float = Field(default=30.0, validation_alias=_env("SMTP_TIMEOUT"))
    mail_from: str = Field(default="podbrief <brief@podbrief.localhost>", validation_alias=_env("MAIL_FROM"))
    # A delivery left in "sending" this long (a worker died mid-send) is reconciled; far above one SMTP talk.
    mail_sending_timeout_seconds: int = 900
    # A pending delivery never claimed this long lost its task message: reconcile enqueues it again.
    mail_pending_grace_seconds: int = 300
    # DKIM signing (covers List-Unsubscribe headers, as RFC 8058 asks); off unless a key file is given.
    dkim_key_file: Path | None = Field(default=None, validation_alias=_env("DKIM_KEY_FILE"))
    dkim_selector: str = "podbrief"
    dkim_domain: str = ""  # default: the From address's domain
    # The embedded sink `make run` starts; off when a real relay is configured.
    smtp_sink: bool = Field(default=True, validation_alias=_env("SMTP_SINK"))

    # --- outbound fetches (feeds, audio, transcripts) ------------------------------------------------
    # host[:port] entries that may resolve to loopback/private addresses (the demo feed in `make run`).
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("FETCH_ALLOW_HOSTS")
    )
    fetch_connect_timeout: float = 10.0
    fetch_total_timeout: float = 60.0
    fetch_max_feed_bytes: int = 20 * 1024 * 1024
    fetch_max_audio_bytes: int = 1024 * 1024 * 1024
    fetch_max_redirects: int = 5
    fetch_user_agent: str = "podbrief/0.1 (+https://podbrief.example/bot)"

    # --- schedule ------------------------------------------------------------------------------------
    poll_interval_minutes: int = 60
    beat_feeds_seconds: float = 60.0
    beat_briefs_seconds: float = 60.0
    beat_reconcile_seconds: float = 120.0

    # --- transcription -------------------------------------------------------------------------------
    asr_engine: str = "auto"  # auto | faster-whisper | openai-whisper
    asr_model: str = "tiny.en"
    asr_device: str = "auto"  # auto | cpu | cuda
    asr_compute_type: str = "int8"
    # Windows decoded together; 0 = by device: 8 on a CPU, 128 on a GPU (H100 sweep, docs/benchmarks.md: 64 rows
    # ran at 2,750x, 105-256 at 4,600-4,770x; per-step cost there is almost independent of the row count).
    asr_batch_size: int = 0
    # faster-whisper's encoder on CPU: auto (the int8 ONNX export when it can be made, else CTranslate2's),
    # onnx (fail if it can't), ctranslate2.
    asr_cpu_encoder: str = "auto"
    # faster-whisper's decoder on CPU: auto (the native decoder on x86-64 CPUs with AVX2 when g++ is installed,
    # else CTranslate2's), native (fail if it can't run), ctranslate2.
    asr_cpu_decoder: str = "auto"
    asr_max_audio_seconds: float = 4 * 3600.0
    asr_lease_seconds: int = 3600

    # --- pipeline hygiene ----------------------------------------------------------------------------
    # Only episodes published this recently are processed: subscribing to a show with a 500-episode back
    # catalogue must not queue 500 transcriptions.
    ingest_max_age_days: int = 14
    # An episode whose stage has not moved for this long (and holds no live lease) is dispatched again.
    stall_after_seconds: int = 900
    max_attempts: int = 5
    # A due brief that was skipped (nothing new qualified) is retried no sooner than this.
    skip_retry_minutes: int = 30

    # --- insights & ranking --------------------------------------------------------------------------
    embedding_model: str = "all-MiniLM-L6-v2"
    brief_size: int = 5
    first_brief_lookback_days: int = 7

    # --- demo ----------------------------------------------------------------------------------------
    demo: bool = Field(default=False, validation_alias=_env("DEMO"))
    demo_email: str = "demo@podbrief.localhost"

    @field_validator("fetch_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    # --- derived -------------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'podbrief.db'}"

    @property
    def celery_broker_url(self) -> str:
        """Redis in production; kombu's filesystem transport (no server) in the embedded default."""
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        return "filesystem://localhost/"

    @property
    def models_dir(self) -> Path:
        """Derived model files (ONNX export, converted Whisper checkpoint): made once, reused by every process."""
        return self.model_cache_dir or self.var_dir / "models"

    @property
    def broker_dir(self) -> Path:
        return self.var_dir / "broker"

    @property
    def mail_dir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def audio_dir(self) -> Path:
        return self.var_dir / "audio"

    @property
    def secret(self) -> str:
        """The signing secret: SECRET_KEY, else one generated once and kept under var/."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
