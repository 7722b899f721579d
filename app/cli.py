"""The `podbrief` console script: dispatches to the command modules in app/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each area owns one module with a `register(subparsers)` function; order here is the order in --help.
COMMAND_MODULES = (
    "app.commands.service",  # run, migrate, worker, beat, seed-demo
    "app.commands.feeds",  # ingest, feeds parse, feeds list
    "app.commands.transcribe",  # transcribe, bench transcribe
    "app.commands.delivery",  # brief --email --now
    "app.commands.briefs",  # eval briefs, bench briefs, bench embed
    "app.commands.accounts",  # apikey create/revoke, user add
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podbrief", description="podbrief: the top 5 podcast insights, daily.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area has not been written yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
