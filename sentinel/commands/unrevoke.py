"""``sentinel unrevoke KEY``: ask the revoke webhook to restore a key, signed and audited like a revoke."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sentinel.alerting.notify import DeliveryError
from sentinel.sinks.revoke import AuditLog, RevokeWebhook, unrevoke


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "unrevoke", help="restore an API key through the revoke webhook",
        description="POST a signed {action: unrevoke} to SENTINEL_SINKS__REVOKE_URL and append an audit record "
        "to SENTINEL_SINKS__REVOKE_AUDIT_PATH. Exit 0 when the webhook accepted it, 1 when it refused, "
        "2 when the webhook is not configured.")
    p.add_argument("api_key_id", metavar="KEY", help="the key id (never the secret itself)")
    p.add_argument("--reason", default="", help="why (kept in the audit record)")
    p.add_argument("--actor", default=None, help="who (default: cli:<login name>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.config import Settings
    from sentinel.redact import looks_like_secret

    s = Settings().sinks
    if not s.revoke_url or s.revoke_hmac_secret is None:
        print("sentinel unrevoke: set SENTINEL_SINKS__REVOKE_URL and SENTINEL_SINKS__REVOKE_HMAC_SECRET",
              file=sys.stderr)
        return 2
    if looks_like_secret(args.api_key_id):
        print("sentinel unrevoke: that looks like a key secret; pass the key id", file=sys.stderr)
        return 2
    actor = args.actor or f"cli:{getpass.getuser()}"
    webhook = RevokeWebhook(s.revoke_url, s.revoke_hmac_secret.get_secret_value())
    try:
        unrevoke(webhook, AuditLog(s.revoke_audit_path), args.api_key_id, actor, args.reason)
    except DeliveryError as err:
        print(f"sentinel unrevoke: {err}", file=sys.stderr)
        return 1
    print(f"unrevoke of {args.api_key_id} accepted")
    return 0
