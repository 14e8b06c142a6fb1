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

from sentinel.formats.mapping import FieldMapping


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


class RetrySettings(BaseModel):
    """Per-sink delivery retry: exponential backoff with jitter, dead letter after ``max_attempts``."""

    model_config = ConfigDict(frozen=True)

    initial_s: float = Field(1.0, gt=0)
    max_s: float = Field(300.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1, description="+/- this fraction of each delay")
    max_attempts: int = Field(12, ge=1, description="then the entry is dead-lettered")
    seed: int | None = Field(None, description="fixed jitter seed (tests); unset = random")


class SinksSettings(BaseModel):
    """Where alerts are delivered (see sentinel/alerting/delivery.py); a sink with no URL is off."""

    model_config = ConfigDict(frozen=True)

    jsonl_path: Path | None = Field(None, description="append every delivered alert version here")
    outbox_path: Path = Field(Path("sentinel-outbox.sqlite"), description="SQLite outbox when there is no Redis")
    retry: RetrySettings = RetrySettings()
    realert_s: float = Field(3600.0, ge=0, description="no new incident notice for the same entity this soon")
    group_thread_s: float = Field(86400.0, gt=0, description="a tenant's Slack thread is reused this long")
    # Splunk HTTP Event Collector
    hec_url: str | None = Field(None, description="https://splunk:8088 (the /services/collector/event path is added)")
    hec_token: SecretStr | None = None
    hec_verify_tls: bool = True
    hec_ca_file: Path | None = None
    hec_index: str | None = None
    hec_sourcetype: str = "sentinel:alert"
    hec_batch: int = Field(100, ge=1)
    hec_ocsf: bool = Field(False, description="send OCSF Detection Findings instead of sentinel alerts")
    # syslog CEF (RFC 5424, octet counting) over TCP, optional TLS
    syslog_host: str | None = None
    syslog_port: int = 6514
    syslog_tls: bool = False
    syslog_ca_file: Path | None = None
    syslog_verify_tls: bool = True
    # OCSF Detection Finding JSON lines
    ocsf_path: Path | None = None
    # Slack
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_signing_secret: SecretStr | None = None
    slack_base_url: str = "https://slack.com/api/"
    slack_actions_port: int = 9109
    # revoke webhook (guarded)
    revoke_url: str | None = None
    revoke_hmac_secret: SecretStr | None = None
    revoke_dry_run: bool = True
    revoke_max_per_hour: int = Field(5, ge=0)
    revoke_min_score: float = Field(0.9, ge=0, le=1)
    revoke_min_signals: int = Field(2, ge=1)
    revoke_allow: tuple[str, ...] = Field((), description="api keys or tenants that may be revoked; empty = any")
    revoke_deny: tuple[str, ...] = Field((), description="api keys or tenants never revoked")
    revoke_audit_path: Path = Path("sentinel-revoke-audit.jsonl")
    # Paging (sentinel/sinks/pagerduty.py, opsgenie.py, alertmanager.py). Links back to sentinel's explain view:
    alert_url_template: str | None = Field(None, description="e.g. https://sentinel.example.com/alerts/{alert_id}; "
                                           "unset = no links")
    # PagerDuty Events API v2; a route may name its own key with `pagerduty_routing_key_env` (rules/routes.yaml)
    pagerduty_routing_key: SecretStr | None = Field(None, description="default integration (routing) key")
    pagerduty_url: str = Field("https://events.pagerduty.com", description="base URL; /v2/enqueue is added")
    pagerduty_enabled: bool = Field(False, description="on even without a default key (routes carry the keys)")
    # Opsgenie Alert API
    opsgenie_api_key: SecretStr | None = Field(None, description="API integration key (Authorization: GenieKey)")
    opsgenie_url: str = Field("https://api.opsgenie.com", description="EU accounts: https://api.eu.opsgenie.com")
    opsgenie_responders: tuple[str, ...] = Field((), description="team:NAME, user:USERNAME, escalation:NAME or "
                                                 "schedule:NAME")
    opsgenie_tags: tuple[str, ...] = ("sentinel",)
    # Prometheus Alertmanager API v2 (every URL of an HA cluster; one accepting is enough, as in Prometheus)
    alertmanager_urls: tuple[str, ...] = Field((), description="e.g. [\"http://alertmanager:9093\"]")
    alertmanager_bearer_token: SecretStr | None = None
    alertmanager_verify_tls: bool = True
    alertmanager_ca_file: Path | None = None
    alertmanager_resend_s: float = Field(60.0, gt=0, description="re-post firing alerts this often (Prometheus "
                                         "--rules.alert.resend-delay default); endsAt = now + 4x this")
    alertmanager_resolved_retention_s: float = Field(900.0, ge=0, description="keep re-posting a resolved alert "
                                                     "this long (Prometheus resolvedRetention)")
    alertmanager_max_firing_s: float = Field(7 * 86400.0, gt=0, description="stop re-posting an alert with no new "
                                             "version for this long (Alertmanager then expires it)")


class IngestSettings(BaseModel):
    """``sentinel ingest``: the HTTP receiver for OTLP traces and LiteLLM callback posts."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(4318, description="4318 is the OTLP/HTTP default port")
    token: SecretStr | None = Field(None, description="bearer token clients must send; required to start")
    max_body_bytes: int = Field(16 << 20, gt=0, description="larger requests get 413 (also after gunzip); "
                                "LiteLLM posts up to 512 payloads of ~10 KiB (more with logged messages) at once")
    topic: str | None = Field(None, description="topic to produce usage events to; unset = kafka.topic")
    produce_timeout_s: float = Field(10.0, gt=0, description="flush deadline before answering 503")


class DaemonSettings(BaseModel):
    """``sentinel run``: the live daemon's idle handling, stop condition and retries."""

    model_config = ConfigDict(frozen=True)

    idle_after_s: float = Field(10.0, gt=0, description="a caught-up partition quiet this long (wall time) is "
                                "advanced as below")
    idle_advance: Literal["wall", "drain", "off"] = Field(
        "wall", description="wall: move event time to the wall clock (releases buffered events, ticks, resolves "
        "quiet incidents); drain: release buffered events only (output identical to replay); off: nothing")
    exit_when_idle_s: float | None = Field(None, description="stop once every assigned partition is caught up and "
                                           "quiet this long (demo, batch runs); unset = run until SIGTERM")
    retry_initial_s: float = Field(0.5, gt=0, description="first backoff after a broker/Redis/sink failure")
    retry_max_s: float = Field(30.0, gt=0, description="backoff ceiling")
    client_id: str = "sentinel"


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
    mapping: FieldMapping = FieldMapping()
    ingest: IngestSettings = IngestSettings()
    sinks: SinksSettings = SinksSettings()
    alerts_file: Path | None = Field(None, description="sentinel run: also append every alert version here (JSONL)")
    daemon: DaemonSettings = DaemonSettings()

    def resolved_rules_dir(self) -> Path | None:
        if self.rules_dir is not None:
            return self.rules_dir
        default = Path("rules")
        return default if default.is_dir() else None
