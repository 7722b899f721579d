"""The seam the web app and the CLI use to start background work. Call these only after your commit."""

from __future__ import annotations


def send_confirmation(user_id: int) -> None:
    from workers import tasks

    tasks.send_confirmation.delay(user_id)


def build_and_send_brief(user_id: int, local_date_iso: str) -> None:
    from workers import tasks

    tasks.build_brief.delay(user_id, local_date_iso)


def subscribe_feed(podcast_id: int) -> None:
    """Poll a newly added feed now, instead of waiting for beat."""
    from workers import tasks

    tasks.poll_feed.delay(podcast_id)


def after_poll(episode_ids: list[int]) -> None:
    """Move newly found episodes into the pipeline (after `podbrief ingest`)."""
    from workers import tasks

    for episode_id in episode_ids:
        tasks.dispatch_episode(episode_id)
