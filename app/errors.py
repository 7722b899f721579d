"""Errors the stages raise so the task layer can decide: retry later, or record and stop."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class. `reason` is one readable line, stored on the row (Podcast.last_error, Episode.error)."""

    permanent: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(PipelineError):
    """Worth retrying with backoff: timeouts, 5xx, connection resets, SMTP 4xx."""

    permanent = False


class PermanentError(PipelineError):
    """Retrying won't help: refused address, malformed document, oversize file, 404/410."""

    permanent = True
