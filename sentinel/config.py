"""Settings: one frozen pydantic-settings object, from the environment (``SENTINEL_`` prefix).

Nested groups use ``__``: ``SENTINEL_KAFKA__BOOTSTRAP_SERVERS=broker:9092``.
Secrets are ``SecretStr``: they print as ``**********`` and are read with
``.get_secret_value()`` only where they are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "llm-usage"
    group_id: str = "sentinel"
    dead_letter_topic: str | None = "llm-usage-dead-letter"
    alerts_topic: str | None = "sentinel-alerts"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_records: int = 5_000
    poll_timeout_ms: int = 500
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    input_format: str = "usage-v1"


class StateSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    redis_url: SecretStr | None = Field(None, description="redis://... ; unset = in-memory state")
    key_prefix: str = "sentinel"
    checkpoint_every_events: int = 50_000
    checkpoint_every_s: float = 10.0
    notify_record_ttl_s: int = 30 * 86400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", env_nested_delimiter="__", frozen=True)

    rules_dir: Path | None = Field(None, description="rules directory; unset = ./rules if present, else defaults")
    lateness_s: float = 30.0
    tick_s: float = 60.0
    dedup_horizon_s: float = 900.0
    batch_size: int = 4096
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    kafka: KafkaSettings = KafkaSettings()
    state: StateSettings = StateSettings()

    def resolved_rules_dir(self) -> Path | None:
        if self.rules_dir is not None:
            return self.rules_dir
        default = Path("rules")
        return default if default.is_dir() else None
