"""The ``sentinel`` command line. Each subcommand lives in ``sentinel/commands/<name>.py``.

A command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (taking the parsed args, returning the exit code). Adding a
command is one module and one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sentinel import __version__

COMMANDS: tuple[str, ...] = (
    "sentinel.commands.replay",
    "sentinel.commands.check_rules",
    "sentinel.commands.run",
    "sentinel.commands.ingest",
    "sentinel.commands.alerts",
    "sentinel.commands.silence",
    "sentinel.commands.unrevoke",
    "sentinel.commands.tune",
    "sentinel.commands.explain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Streaming security and FinOps alerting on LLM API usage events.",
    )
    parser.add_argument("--version", action="version", version=f"sentinel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
