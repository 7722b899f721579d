"""Keep an episode's lease (Episode.lease_owner/lease_until) alive while a long stage runs without a session.

transcripts.claim() leases an episode for settings.asr_lease_seconds and transcripts.run() then works for
minutes with no database session. A run longer than the lease would let another worker take the episode over
and do the same work again (store() refuses the loser, so nothing is stored twice, but the GPU time is wasted).
`Heartbeat` renews the lease from a daemon thread every lease/3 seconds while the run works:

    with lease.Heartbeat(job.episode_id, owner):
        result = transcripts.run(job)

Each renewal is one conditional UPDATE in its own short transaction (its own session from app.db), so it only
extends a lease that is still ours: once another owner holds the row, or store()/mark_failed() released it,
the UPDATE matches nothing and the heartbeat stops for good. A worker that dies takes the thread with it, so a
crashed run's lease still expires as before. No rows are written other than Episode.lease_until (and
updated_at, touched by every UPDATE of an episode).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from types import TracebackType

from sqlalchemy import update

from app.config import get_settings
from app.db import session_scope
from app.models import Episode, utcnow

log = logging.getLogger(__name__)


def renew(episode_id: int, owner: str, *, seconds: float, now: dt.datetime | None = None) -> bool:
    """Extend the lease to now + seconds if `owner` still holds it; commits at once. False if not ours."""
    now = now or utcnow()
    with session_scope() as session:
        result = session.execute(
            update(Episode)
            .where(Episode.id == episode_id, Episode.lease_owner == owner)
            .values(lease_until=now + dt.timedelta(seconds=seconds))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class Heartbeat:
    """Renews an episode lease in the background until stopped, or until the lease turns out not to be ours."""

    def __init__(
        self,
        episode_id: int,
        owner: str,
        *,
        lease_seconds: float | None = None,
        interval: float | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.episode_id = episode_id
        self.owner = owner
        self.lease_seconds = float(lease_seconds or get_settings().asr_lease_seconds)
        self.interval = interval if interval is not None else self.lease_seconds / 3
        if self.interval <= 0 or self.interval >= self.lease_seconds:
            raise ValueError(f"renewal interval {self.interval}s must be in (0, lease {self.lease_seconds}s)")
        self.stop_timeout = stop_timeout
        self.renewals = 0  # successful renewals
        self.lost = False  # the row was no longer ours: renewing stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-episode-{episode_id}", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing and wait for a renewal in flight; idempotent, safe if never started."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                # A renewal stuck on the database: the thread is a daemon and exits after that call; a late
                # renewal can only extend a lease we still hold (release clears lease_owner first).
                log.warning("episode %s: lease heartbeat still busy after %.0fs", self.episode_id, self.stop_timeout)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ours = renew(self.episode_id, self.owner, seconds=self.lease_seconds)
            except Exception as exc:  # a database hiccup: the lease still has 2/3 of its time, try again
                log.warning("episode %s: lease renewal failed (%s: %s)", self.episode_id, type(exc).__name__, exc)
                continue
            if not ours:
                self.lost = True
                log.warning(
                    "episode %s: lease no longer held by %s; stopped renewing (store() will refuse this run)",
                    self.episode_id,
                    self.owner,
                )
                return
            self.renewals += 1
