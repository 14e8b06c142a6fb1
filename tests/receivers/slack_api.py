"""A strict Slack Web API stand-in: ``chat.postMessage`` and ``chat.update``.

Like Slack: bearer token required (``not_authed`` / ``invalid_auth``, HTTP
200 with ``ok: false``), JSON or form bodies, ``channel_not_found``,
``no_text``, ``invalid_blocks`` (Block Kit limits: header text <= 150,
section text <= 3000, <= 10 fields, <= 25 action elements, <= 50 blocks),
``thread_not_found`` for an unknown ``thread_ts``, ``message_not_found`` on
update, and HTTP 429 ``ratelimited`` with ``Retry-After`` when asked to.
``ts`` values are unique ``"<seconds>.<6 digits>"`` strings.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from tests.receivers.base import Receiver, Reply

_BLOCK_TYPES = {"header", "section", "context", "actions", "divider"}


def _blocks_ok(blocks: Any) -> bool:
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return False
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for b in blocks:
        if not isinstance(b, dict) or b.get("type") not in _BLOCK_TYPES:
            return False
        t = b["type"]
        if t == "header" and (b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > 150):
            return False
        if t == "section":
            if "text" not in b and "fields" not in b:
                return False
            if "text" in b and len(b["text"]["text"]) > 3000:
                return False
            if len(b.get("fields", [])) > 10:
                return False
        if t == "actions":
            els = b.get("elements", [])
            if not els or len(els) > 25:
                return False
            for e in els:
                if e.get("type") != "button" or not e.get("action_id") or len(e.get("value", "")) > 2000:
                    return False
    return True


class SlackApiReceiver(Receiver):
    def __init__(self, token: str, channels: dict[str, str]) -> None:
        super().__init__()
        self.token = token
        self.channels = channels  # name or id -> id
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.ratelimit = 0  # answer this many calls with 429
        self._n = 0

    @property
    def base_url(self) -> str:
        return self.url + "/api/"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        h = {k.lower(): v for k, v in headers.items()}
        api = path.split("?")[0]
        if api not in ("/api/chat.postMessage", "/api/chat.update"):
            return Reply(404, {"ok": False, "error": "unknown_method"})
        if self.ratelimit > 0:
            self.ratelimit -= 1
            return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        auth = h.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(200, {"ok": False, "error": "not_authed"})
        if auth[7:] != self.token:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        ctype = h.get("content-type", "")
        try:
            if ctype.startswith("application/json"):
                args = json.loads(body or b"{}")
            elif ctype.startswith("application/x-www-form-urlencoded"):
                args = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            else:
                return Reply(200, {"ok": False, "error": "invalid_post_type"})
        except ValueError:
            return Reply(200, {"ok": False, "error": "invalid_json"})
        channel = self.channels.get(str(args.get("channel", "")))
        if channel is None:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if not args.get("text") and not args.get("blocks"):
            return Reply(200, {"ok": False, "error": "no_text"})
        if "blocks" in args and not _blocks_ok(args["blocks"]):
            return Reply(200, {"ok": False, "error": "invalid_blocks"})
        if api == "/api/chat.postMessage":
            thread = args.get("thread_ts")
            if thread and (channel, thread) not in self.messages:
                return Reply(200, {"ok": False, "error": "thread_not_found"})
            self._n += 1
            ts = f"{1700000000 + self._n}.{self._n:06d}"
            msg = {"channel": channel, "ts": ts, "thread_ts": thread, "text": args.get("text"),
                   "blocks": args.get("blocks"), "reply_broadcast": bool(args.get("reply_broadcast"))}
            self.messages[(channel, ts)] = msg
            self.posts.append(msg)
            return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts}})
        ts = str(args.get("ts", ""))
        if (channel, ts) not in self.messages:
            return Reply(200, {"ok": False, "error": "message_not_found"})
        self.messages[(channel, ts)].update({"text": args.get("text"), "blocks": args.get("blocks")})
        self.updates.append({"channel": channel, "ts": ts, "text": args.get("text"), "blocks": args.get("blocks")})
        return Reply(200, {"ok": True, "channel": channel, "ts": ts})
