"""A local SMTP server that keeps every message it receives as an .eml file (the embedded mail "relay").

`make run` starts it with the app and the tests start it on an ephemeral port: mail really goes over SMTP,
and what arrived can be read back from var/mail/. Files are written to a temporary name and renamed, so a
reader never sees half a message. The file name holds the arrival time and the sanitised Message-ID, which
is how app.pipeline.mail.reconcile proves that a delivery stuck in "sending" did reach the relay.

Run alone: python -m app.smtp_sink [--host 127.0.0.1] [--port 8025] [--dir var/mail]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import email.parser
import email.policy
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def sanitize_message_id(message_id: str) -> str:
    """The part of a file name that stands for a Message-ID: no brackets, slashes or odd characters."""
    return _UNSAFE.sub("_", message_id.strip().strip("<>"))[:150] or "no-id"


def message_files(mail_dir: Path, message_id: str) -> list[Path]:
    """The .eml files in mail_dir whose name carries this Message-ID (oldest first)."""
    if not mail_dir.is_dir():
        return []
    suffix = f"-{sanitize_message_id(message_id)}.eml"
    return sorted(p for p in mail_dir.iterdir() if p.name.endswith(suffix))


class EmlWriter:
    """aiosmtpd handler: one .eml file per accepted message."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = Path(mail_dir)
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            self.write(raw)
        except OSError as exc:
            # A full disk is the relay's problem to report as temporary: the sender will retry.
            return f"451 4.3.0 could not store message: {exc.strerror}"
        return "250 2.0.0 OK: queued as .eml"

    def write(self, raw: bytes) -> Path:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        message_id = str(headers.get("Message-ID", "") or "")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        with self._lock:
            self.count += 1
            name = f"{stamp}-{self.count:04d}-{sanitize_message_id(message_id)}.eml"
        tmp = self.mail_dir / f".{name}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.mail_dir / name
        os.replace(tmp, final)  # atomic on POSIX: readers see the whole file or none
        return final


class _Controller(Controller):
    """Controller that learns the real port when asked for port 0 (ephemeral)."""

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        create = super()._create_server()

        async def bind() -> asyncio.AbstractServer:
            server = await create
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
            return server

        return bind()


class SinkHandle:
    """A running sink: host, port, mail_dir; stop() shuts it down."""

    def __init__(self, controller: _Controller, writer: EmlWriter) -> None:
        self._controller = controller
        self.writer = writer
        self.host: str = controller.hostname
        self.port: int = controller.port
        self.mail_dir = writer.mail_dir

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SinkHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(host: str = "127.0.0.1", port: int = 8025, mail_dir: Path | None = None) -> SinkHandle:
    """Start the sink in a background thread; port=0 picks a free port (see handle.port)."""
    if mail_dir is None:
        from app.config import get_settings

        mail_dir = get_settings().mail_dir
    writer = EmlWriter(Path(mail_dir))
    # 10 MiB is far above any brief (< 100 KB) yet stops a runaway client filling the disk.
    controller = _Controller(writer, hostname=host, port=port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    return SinkHandle(controller, writer)


def main(argv: list[str] | None = None) -> int:
    from app.config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description="Local SMTP sink writing .eml files")
    parser.add_argument("--host", default=settings.smtp_host)
    parser.add_argument("--port", type=int, default=settings.smtp_port)
    parser.add_argument("--dir", type=Path, default=settings.mail_dir)
    args = parser.parse_args(argv)
    handle = start(args.host, args.port, args.dir)
    print(f"SMTP sink on {handle.host}:{handle.port}, writing to {handle.mail_dir}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        handle.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
