"""The Celery application: broker, queues, routes and the beat schedule.

The database is the schedule (Miniflux's rule): beat only asks "what is due?" every minute and enqueues ids.
Anything a lost message or a killed worker leaves half-done is found again by `reconcile`, so correctness never
depends on the broker redelivering (kombu's filesystem transport, the embedded default, does not).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from app.config import get_settings

QUEUES = ("io", "asr", "ml", "mail")


def _broker_options(broker_url: str) -> dict[str, Any]:
    settings = get_settings()
    if broker_url.startswith("filesystem"):
        queue_dir = settings.broker_dir / "queue"
        control_dir = settings.broker_dir / "control"
        for d in (queue_dir, control_dir):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
        }
    # Redis: a message unacked for this long is redelivered; every task time limit stays below it.
    return {"visibility_timeout": 2 * 3600}


def make_celery() -> Celery:
    settings = get_settings()
    broker_url = settings.celery_broker_url
    app = Celery("podbrief", broker=broker_url, include=["workers.tasks"])
    if broker_url.startswith("filesystem"):
        # Our atomic-write subclass of kombu's filesystem transport (see workers/fs_transport.py).
        app.conf.broker_transport = "workers.fs_transport:Transport"
    app.conf.update(
        broker_transport_options=_broker_options(broker_url),
        broker_connection_retry_on_startup=True,
        task_default_queue="io",
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_routes={
            "podbrief.poll_feed": {"queue": "io"},
            "podbrief.download_audio": {"queue": "io"},
            "podbrief.transcribe": {"queue": "asr"},
            "podbrief.extract_insights": {"queue": "ml"},
            "podbrief.embed": {"queue": "ml"},
            "podbrief.build_brief": {"queue": "ml"},
            "podbrief.send_delivery": {"queue": "mail"},
            "podbrief.send_confirmation": {"queue": "mail"},
            "podbrief.beat.*": {"queue": "io"},
        },
        # Ack after the work is done and hand a task back if its worker dies: every task is idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # Below the Redis visibility timeout (2 h) so a live task is never handed to a second worker.
        task_time_limit=90 * 60,
        task_soft_time_limit=85 * 60,
        worker_hijack_root_logger=False,
        beat_schedule_filename=str(settings.var_dir / "celerybeat-schedule"),
        beat_schedule={
            "poll-due-feeds": {"task": "podbrief.beat.poll_due_feeds", "schedule": settings.beat_feeds_seconds},
            "send-due-briefs": {"task": "podbrief.beat.send_due_briefs", "schedule": settings.beat_briefs_seconds},
            "reconcile": {"task": "podbrief.beat.reconcile", "schedule": settings.beat_reconcile_seconds},
        },
    )
    return app


celery_app = make_celery()
app = celery_app  # `celery -A workers.celery_app` finds `app`
