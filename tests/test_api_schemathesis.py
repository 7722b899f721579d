"""Schemathesis (all checks, every /api/v1 operation) against the app served by a real uvicorn on 127.0.0.1.

Two users (alice, bob) with their own data are given to schemathesis as WFC identities so its
object_level_authorization check can replay one user's reads as the other. The budget is fixed (seed,
examples per operation) so the run is reproducible and takes about a minute on 2 cores. The case count is
printed (run pytest with -s to see it) and recorded in docs/api.md.

The query encoder in the served process is the test stand-in (tests/test_api_support.fake_encode): what is
fuzzed is the HTTP contract, not the model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_api_support import REPO, add_brief, add_episode, seed_user

MAX_EXAMPLES = int(os.environ.get("PODBRIEF_ST_MAX_EXAMPLES", "12"))
SEED = 20261126

# Cursors are opaque: "a cursor this API issued" can't be said in JSON Schema, so on the paginated reads a
# schema-valid random cursor is answered with a documented 400. That is the one status added to the
# default expectations of positive_data_acceptance, and only for those operations.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429"]

[[operations]]
include-path-regex = "^/api/v1/(insights|briefs|podcasts|episodes|me/feedback)$"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = """
import sys, uvicorn
sys.path.insert(0, {repo!r})
from app.ml import encoder
from tests.test_api_support import fake_encode
encoder.encode = fake_encode
uvicorn.run("app.web.main:app", host="127.0.0.1", port={port}, log_level="warning")
"""


def test_schemathesis_all_checks_pass(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = seed_user(db_url, "alice")
    bob = seed_user(db_url, "bob")
    _, _, ids = add_episode(db_url, ["sleep helps memory", "rates move house prices", "memory and sleep"])
    add_episode(db_url, ["a second show about markets"], title="Other")
    add_brief(db_url, alice[0], dt.datetime.now(dt.UTC).date(), ids[:2])
    add_brief(db_url, bob[0], dt.datetime.now(dt.UTC).date(), ids[2:])

    port = _free_port()
    env = {**os.environ, "PODBRIEF_API_RATE_PER_SECOND": "100000", "PODBRIEF_API_BURST": "100000"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE.format(repo=str(REPO), port=port)], env=env, cwd=REPO, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.3)

        (tmp_path / "schemathesis.toml").write_text(CONFIG)
        auth = {
            "auth": [
                {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
                for name, (_, key) in (("alice", alice), ("bob", bob))
            ]
        }
        (tmp_path / "auth.json").write_text(json.dumps(auth))
        st = Path(sys.executable).with_name("st")
        cmd = [
            str(st),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--auth-wfc",
            str(tmp_path / "auth.json"),
            "--include-path-regex",
            "^/api/v1/",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated", out)
    print(f"\nschemathesis: {summary.group(0) if summary else '?'} (seed {SEED}, max-examples {MAX_EXAMPLES})")
    assert run.returncode == 0, out[-8000:]
    assert summary is not None and int(summary.group(1)) > 100, out[-3000:]
    assert "Authentication failed" not in out, out[-3000:]
