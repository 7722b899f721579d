"""`podbrief run` (what `make run` calls): the whole embedded service in one process tree. Within minutes the
demo brief lands in var/mail/ as an .eml; /healthz answers; Ctrl-C (SIGINT) stops everything cleanly."""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import procs
from tests.test_integration_pipeline import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def test_podbrief_run_delivers_the_demo_brief(env: Path, tmp_path: Path) -> None:
    port, smtp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    child_env = procs.child_env({
        "PODBRIEF_VAR_DIR": str(env),
        "PODBRIEF_PORT": str(port),
        "PODBRIEF_BASE_URL": base,
        "SMTP_PORT": str(smtp_port),
        "PODBRIEF_DEMO": "1",
        "PODBRIEF_FETCH_ALLOW_HOSTS": f"127.0.0.1:{port}",
        "PODBRIEF_BEAT_FEEDS_SECONDS": "2",
        "PODBRIEF_BEAT_BRIEFS_SECONDS": "3",
    })
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=child_env, cwd=procs.REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    mail_dir = env / "mail"

    def tail() -> str:
        return (tmp_path / "run.log").read_text(errors="replace")[-6000:]

    try:
        deadline = time.monotonic() + 120
        while _get(f"{base}/healthz")[0] != 200:
            assert proc.poll() is None, tail()
            assert time.monotonic() < deadline, "healthz never answered 200\n" + tail()
            time.sleep(0.5)
        _, body = _get(f"{base}/healthz")
        assert json.loads(body)["database"] is True

        deadline = time.monotonic() + 600
        while not list(mail_dir.glob("*.eml")):
            assert proc.poll() is None, tail()
            assert time.monotonic() < deadline, "no demo brief in var/mail\n" + tail()
            time.sleep(1)
        eml = sorted(mail_dir.glob("*.eml"))[0]
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert "demo@podbrief.localhost" in str(msg["To"])
        assert {p.get_content_type() for p in msg.iter_parts()} == {"text/plain", "text/html"}  # type: ignore[attr-defined]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, tail()
    finally:
        if proc.poll() is None:
            import os

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    # Nothing left listening: the web port is free again.
    assert _get(f"{base}/healthz")[0] == 0
