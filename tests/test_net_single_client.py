"""Architecture guard (research S6/X1): every outbound connection goes through app.net.

Scans the source of app/ and workers/ (not tests): only app/net may import an HTTP client or open sockets to
remote hosts, and feedparser.parse is called in exactly one place, with bytes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_MODULES = {"httpx", "httpcore", "requests", "urllib3", "aiohttp", "pycurl", "urllib.request", "http.client"}


def sources() -> list[Path]:
    return sorted(p for folder in ("app", "workers") for p in (ROOT / folder).rglob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_app_net_imports_http_clients() -> None:
    offenders = []
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("app/net/"):
            continue
        for name in imported(ast.parse(path.read_text(encoding="utf-8"))):
            if name in CLIENT_MODULES or name.split(".")[0] in CLIENT_MODULES - {"urllib.request", "http.client"}:
                offenders.append(f"{rel}: {name}")
    assert offenders == [], "outbound HTTP must go through app.net (the guarded client)"


def test_feedparser_parse_only_in_feeds_stage() -> None:
    calls = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "parse"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "feedparser"
            ):
                calls.append(path.relative_to(ROOT).as_posix())
    assert calls == ["app/pipeline/feeds.py"]
