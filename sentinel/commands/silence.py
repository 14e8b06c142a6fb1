"""``sentinel silence add|list|expire``: operator silences, shared by every replica through Redis.

A silence mutes the page sinks (Slack, revoke webhook) for matching alerts
until it expires; record sinks keep every version. Matchers use amtool's
syntax (``tenant=t_acme``, ``detector=~spend_.*``, ``api_key!=key_1``). The
Redis URL comes from ``--redis-url`` or ``SENTINEL_STATE__REDIS_URL``: without
Redis, silences would live only inside one daemon process, so the command
refuses rather than pretend.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from typing import Any

from sentinel.alerting.silences import RedisSilenceStore, Silence, SilenceError
from sentinel.alerts import rfc3339

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1w`` to seconds.

    >>> parse_duration("2h"), parse_duration("1.5m")
    (7200.0, 90.0)
    """
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 30m, 2h, 1d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "silence", help="add, list or expire silences (mute Slack and revoke for matching alerts)",
        description="Manage silences stored in Redis (shared by all replicas).")
    p.add_argument("--redis-url", help="default: $SENTINEL_STATE__REDIS_URL")
    p.add_argument("--prefix", help="Redis key prefix (default: settings state.key_prefix)")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = act.add_parser("add", help="add a silence")
    add.add_argument("-m", "--match", action="append", required=True, metavar="MATCHER",
                     help="label matcher, repeatable: name=value, name!=value, name=~regex, name!~regex")
    add.add_argument("-d", "--duration", type=parse_duration, default=3600.0, help="how long (default 1h)")
    add.add_argument("--author", default=None, help="who (default: the login name)")
    add.add_argument("-c", "--comment", default="", help="why")
    ls = act.add_parser("list", help="list active silences")
    ls.add_argument("--all", action="store_true", help="also the expired ones")
    exp = act.add_parser("expire", help="end a silence now")
    exp.add_argument("silence_id")
    p.set_defaults(func=run)


def _store(args: argparse.Namespace) -> RedisSilenceStore | None:
    from sentinel.config import Settings

    settings = Settings()
    url = args.redis_url or (settings.state.redis_url.get_secret_value() if settings.state.redis_url else None)
    if not url:
        return None
    import redis

    return RedisSilenceStore(redis.Redis.from_url(url), args.prefix or settings.state.key_prefix)


def run(args: argparse.Namespace, now: float | None = None) -> int:
    store = _store(args)
    if store is None:
        print("sentinel silence: needs Redis (--redis-url or SENTINEL_STATE__REDIS_URL); without it silences "
              "live only inside one daemon process", file=sys.stderr)
        return 2
    t = time.time() if now is None else now
    if args.action == "add":
        try:
            s = Silence.create(args.match, t, t + args.duration, args.author or getpass.getuser(), args.comment)
        except SilenceError as err:
            print(f"sentinel silence: {err}", file=sys.stderr)
            return 2
        store.add(s)
        print(s.id)
        return 0
    if args.action == "list":
        rows = [s for s in store.list() if args.all or s.ends_at > t]
        for s in rows:
            state = "active" if s.active(t) else ("expired" if s.ends_at <= t else "pending")
            print(f"{s.id}  {state:<7}  until {rfc3339(s.ends_at)}  {' '.join(str(m) for m in s.matchers)}"
                  f"  by {s.created_by or '-'}{'  # ' + s.comment if s.comment else ''}")
        if not rows:
            print("no silences", file=sys.stderr)
        return 0
    if not store.expire(args.silence_id, t):
        print(f"sentinel silence: no active silence {args.silence_id!r}", file=sys.stderr)
        return 1
    print(f"expired {args.silence_id}")
    return 0
