"""Keeping secrets out of everything sentinel writes.

API keys must appear only as ids. Gateways sometimes get this wrong and put
the secret itself in ``api_key_id``; such an event is rejected, and this module
makes sure the value is never written in clear: dead-letter records, logs and
alert evidence carry a short fingerprint (``sha256:1a2b3c4d``) instead, which is
enough to correlate without being usable.

The patterns are the published prefixes of common credential formats:
OpenAI (``sk-``, ``sk-proj-``), Anthropic (``sk-ant-``), AWS access key ids
(``AKIA``/``ASIA`` + 16 upper-case alphanumerics), Google API keys (``AIza`` +
35 characters), Slack tokens (``xox[abprs]-``), GitHub tokens (``ghp_``,
``github_pat_``), Stripe-style live keys, and JSON Web Tokens (``eyJ...``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

_SECRET_PATTERNS: Final = (
    r"sk-[A-Za-z0-9_\-]{8,}",
    r"sk_(?:live|test)_[A-Za-z0-9]{8,}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"AIza[A-Za-z0-9_\-]{35}",
    r"xox[abprs]-[A-Za-z0-9\-]{8,}",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"(?:pk|rk)_live_[A-Za-z0-9]{8,}",
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
)
SECRET_RE: Final = re.compile("|".join(f"(?:{p})" for p in _SECRET_PATTERNS))
_KEY_PREFIX_RE: Final = re.compile(r"^(?:sk-|sk_|AKIA|ASIA|AIza|xox[abprs]-|gh[pousr]_|github_pat_|eyJ|Bearer\s)")


def looks_like_secret(value: str) -> bool:
    """True when an identifier field holds what looks like a credential.

    >>> looks_like_secret("key_acme_1")
    False
    >>> looks_like_secret("sk-proj-abcdefgh12345678")
    True
    >>> looks_like_secret("AKIAIOSFODNN7EXAMPLE")
    True
    """
    return _KEY_PREFIX_RE.match(value) is not None or SECRET_RE.search(value) is not None


def fingerprint(value: str | bytes) -> str:
    """A short, stable, non-reversible id for a secret: ``sha256:<8 hex>``."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(data).hexdigest()[:8]


def _replace(match: re.Match[str]) -> str:
    return f"[REDACTED {fingerprint(match.group(0))}]"


def redact_text(text: str) -> str:
    """Replace every credential-looking token in free text by its fingerprint.

    >>> redact_text('{"api_key_id": "sk-live1234567890abc"}')
    '{"api_key_id": "[REDACTED sha256:c4f3e32e]"}'
    """
    return SECRET_RE.sub(_replace, text)


def excerpt(value: object, limit: int = 40) -> str:
    """A short, redacted rendering of a rejected value for a reason message."""
    text = value if isinstance(value, str) else repr(value)
    if looks_like_secret(text):
        return f"[REDACTED {fingerprint(text)}]"
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
