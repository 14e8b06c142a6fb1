"""``sentinel check-rules [DIR]``: validate a rules directory, name every problem."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sentinel.rules import load_rules
from sentinel.yamlfile import RulesFileError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check-rules", help="validate a rules directory",
        description="Validate every file of a rules directory. Prints one line per problem "
        "(file:line: field: message) and exits 1 if there is any.",
    )
    p.add_argument("directory", nargs="?", default="rules", help="rules directory (default: ./rules)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(args.directory)
    except RulesFileError as err:
        for e in err.errors:
            print(e.render(), file=sys.stderr)
        print(f"{len(err.errors)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    enabled = [d.detector for d in rules.enabled_detectors()]
    print(
        f"{args.directory}: OK ({len(rules.tenants.tenants)} tenants, {len(rules.budgets.budgets)} budgets, "
        f"{len(rules.prices.models)} priced models, {len(rules.routes.routes)} routes, "
        f"detectors: {', '.join(enabled) or 'none'}; digest {rules.digest})"
    )
    return 0
