"""Service commands: migrate, run (everything, embedded), worker, beat, seed-demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from app.config import get_settings

log = logging.getLogger("podbrief.run")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("migrate", help="apply database migrations (Alembic upgrade head)")
    p.set_defaults(handler=cmd_migrate)

    p = subparsers.add_parser("run", help="run web app, worker, beat and (embedded) SMTP sink together")
    p.add_argument("--no-worker", action="store_true", help="don't start a Celery worker")
    p.add_argument("--no-beat", action="store_true", help="don't start Celery beat")
    p.add_argument("--concurrency", type=int, default=2)
    p.set_defaults(handler=cmd_run)

    p = subparsers.add_parser("worker", help="run a Celery worker (default: all queues)")
    p.add_argument("-Q", "--queues", default="io,asr,ml,mail")
    p.add_argument("-c", "--concurrency", type=int, default=2)
    p.set_defaults(handler=cmd_worker)

    p = subparsers.add_parser("beat", help="run Celery beat (polls due feeds, sends due briefs, reconciles)")
    p.set_defaults(handler=cmd_beat)

    p = subparsers.add_parser("seed-demo", help="add the bundled demo podcast and a confirmed demo user")
    p.add_argument("--email", default=None)
    p.set_defaults(handler=cmd_seed_demo)


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.migrate import upgrade

    upgrade()
    print(f"database at head: {_redact(get_settings().db_url)}")
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from app.demo_seed import seed_demo

    podcast_id, user_id = seed_demo(email=args.email)
    print(f"demo podcast {podcast_id}, demo user {user_id}")
    return 0


def worker_argv(queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
        "-n", f"podbrief-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def beat_argv() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO"]


def cmd_worker(args: argparse.Namespace) -> int:
    os.execv(sys.executable, worker_argv(args.queues, args.concurrency))


def cmd_beat(args: argparse.Namespace) -> int:
    os.execv(sys.executable, beat_argv())


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on the embedded default, in one terminal. Ctrl-C stops all of it."""
    from app.migrate import upgrade

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    log.info("database ready: %s", _redact(settings.db_url))

    sink = None
    if settings.smtp_sink and settings.smtp_host in ("127.0.0.1", "localhost", "::1"):
        from app import smtp_sink

        sink = smtp_sink.start(settings.smtp_host, settings.smtp_port, settings.mail_dir)
        log.info("SMTP sink on %s:%s writing .eml files to %s", settings.smtp_host, settings.smtp_port,
                 settings.mail_dir)

    if settings.demo:
        from app.demo_seed import seed_demo_podcast, seed_user_when_ready

        seed_user_when_ready(seed_demo_podcast())
        log.info("demo podcast seeded; the demo user %s is added once its episodes are processed",
                 settings.demo_email)

    children: dict[str, subprocess.Popen[bytes]] = {}
    web = [sys.executable, "-m", "uvicorn", "app.web.main:app", "--host", settings.host, "--port", str(settings.port)]
    children["web"] = subprocess.Popen(web)
    if not args.no_worker:
        children["worker"] = subprocess.Popen(worker_argv("io,asr,ml,mail", args.concurrency))
    if not args.no_beat:
        children["beat"] = subprocess.Popen(beat_argv())
    log.info("podbrief is up at %s (Ctrl-C to stop)", settings.base_url)

    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    log.error("%s exited with code %s; stopping everything", name, proc.returncode)
                    code = proc.returncode or 1
                    stopping = True
            time.sleep(0.5)
    finally:
        _terminate(children)
        if sink is not None:
            sink.stop()
    log.info("stopped")
    return code


def _terminate(children: dict[str, subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # Celery: warm shutdown, finishes the current task
    deadline = time.monotonic() + grace
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
