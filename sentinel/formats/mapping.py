"""Where the usage-v1 fields that an upstream format lacks come from.

LiteLLM payloads, OpenTelemetry GenAI spans and Bedrock invocation logs all
carry the basics (model, tokens, time, an identity), but none of them has a
standard place for the tenant, the product feature, the prompt template
identity (``prompt_shape``), the cacheable-prefix hash (``prefix_hash``) or the
tenant whose data a call read (``resource_tenant_id``). Gateways that know them
put them in free-form metadata: LiteLLM request or key metadata, span or
resource attributes, Bedrock ``requestMetadata``. :class:`FieldMapping` names
the metadata key each field is read from; the same key names serve every
format (a span attribute name is a key like any other).

Defaults are the usage-v1 field names themselves (``tenant_id``, ``user_id``,
``feature``, ``prompt_shape``, ``prefix_hash``, ``resource_tenant_id``,
``session_id``, ``api_key_id``), so a gateway that tags calls with our names
needs no configuration. Settings: ``SENTINEL_MAPPING__TENANT_KEY=org`` etc.

A field that is found nowhere stays empty (``null``), and **the detectors that
need it stay quiet without it**: ``runaway_loop`` needs ``session_id`` and
``prompt_shape``; ``cache_collapse`` uses ``prefix_hash``; ``cross_tenant``
needs ``resource_tenant_id`` (and ``prompt_shape`` for shared-shape checks);
per-feature cost attribution needs ``feature``. ``tenant_id`` and
``api_key_id`` are required by the contract, so each format has a documented
fallback (LiteLLM team, AWS account, OTel ``service.name``), then
``default_tenant`` / ``default_api_key``; when even that is unset the record
is rejected with a reason rather than guessed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID: Final = 128


class FieldMapping(BaseModel):
    """Metadata key per usage-v1 field that upstream formats do not carry natively."""

    model_config = ConfigDict(frozen=True)

    tenant_key: str = Field("tenant_id", description="metadata key holding the tenant (cost owner)")
    user_key: str = Field("user_id", description="metadata key holding the end user")
    session_key: str = Field("session_id", description="metadata key holding the conversation / agent run")
    feature_key: str = Field("feature", description="metadata key holding the product feature")
    prompt_shape_key: str = Field("prompt_shape", description="metadata key holding the prompt template id")
    prefix_hash_key: str = Field("prefix_hash", description="metadata key holding the cacheable-prefix hash")
    resource_tenant_key: str = Field("resource_tenant_id",
                                     description="metadata key holding the tenant whose data the call read")
    api_key_key: str = Field("api_key_id", description="metadata/attribute key holding the API key id (OTel)")
    default_tenant: str | None = Field(
        "default", description="tenant when neither the mapping nor the format's fallback gives one; "
        "unset = reject such records")
    default_api_key: str | None = Field(
        None, description="api key id when the format gives none; unset = reject such records")

    @field_validator("default_tenant", "default_api_key")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # SENTINEL_MAPPING__DEFAULT_TENANT= (empty) switches the fallback off.
        return value or None


def pick(key: str, *sources: Mapping[str, object] | None) -> str | None:
    """The first non-empty scalar under ``key`` in ``sources``, as text.

    >>> pick("tenant_id", None, {"tenant_id": ""}, {"tenant_id": 42})
    '42'
    >>> pick("tenant_id", {"tenant_id": {"nested": 1}}) is None
    True
    """
    for src in sources:
        if not src:
            continue
        value = src.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            if value:
                return value
        elif isinstance(value, int | float):
            return str(value)
    return None


def bounded_id(value: str, limit: int = MAX_ID) -> str:
    """An identifier cut to the contract's length limit, kept unique by a hash suffix.

    Long ARNs (assumed-role sessions) can exceed 128 characters; cutting them
    plainly could merge two principals.

    >>> bounded_id("k1")
    'k1'
    >>> len(bounded_id("x" * 300))
    128
    """
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return value[: limit - 17] + "#" + digest
