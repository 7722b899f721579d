"""Real processes for integration tests: a feed server, Celery worker and beat, all on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.demo import audio_file
from app.web.demo import feed_xml
from tests.test_net_localserver import QuietOnHangUp

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def demo_feed_server() -> Iterator[str]:
    """Serve the bundled demo feed and its audio over real HTTP; yields the base URL."""
    state: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/demo/feed.xml":
                body = feed_xml(state["base"]).encode()
                ctype = "application/rss+xml"
            elif self.path.startswith("/demo/audio/episode-") and self.path.endswith(".mp3"):
                n = int(self.path.rsplit("-", 1)[1].split(".")[0])
                body = audio_file(n).read_bytes()
                ctype = "audio/mpeg"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietOnHangUp(("127.0.0.1", 0), Handler)
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["base"]
    finally:
        server.shutdown()
        server.server_close()


class Proc:
    """A child process with its output in a log file, stoppable gently (SIGTERM) or brutally (SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        # Own process group, so SIGKILL reaches the prefork children too (a real crash of the whole worker).
        self.popen = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, grace: float = 20.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODBRIEF_") or k.startswith("PODBRIEF_TEST_")}
    for k in ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_HOST", "SMTP_PORT"):
        env.pop(k, None)
    # Share the test session's derived-model cache (ONNX export, converted Whisper weights) with children.
    if "PODBRIEF_MODEL_CACHE_DIR" in os.environ:
        env["PODBRIEF_MODEL_CACHE_DIR"] = os.environ["PODBRIEF_MODEL_CACHE_DIR"]
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker(env: dict[str, str], log_dir: Path, name: str = "worker", concurrency: int = 2) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "io,asr,ml,mail",
            "-c", str(concurrency), "--loglevel", "INFO", "-n", f"{name}-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return Proc(name, argv, env, log_dir)


def beat(env: dict[str, str], log_dir: Path) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
            "-s", str(log_dir / "celerybeat-schedule")]
    return Proc("beat", argv, env, log_dir)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, procs: list[Proc] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs or []:
            if p.popen.poll() is not None:
                raise AssertionError(f"{p.name} exited ({p.popen.returncode}) while waiting for {what}:\n{p.tail()}")
        time.sleep(0.5)
    logs = "\n\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs or [])
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
