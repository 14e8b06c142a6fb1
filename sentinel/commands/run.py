"""``sentinel run``: the production daemon (Kafka consumer group -> detectors -> alerts).

Configuration comes from the environment (``SENTINEL_*``, see
:mod:`sentinel.config`); the flags below override the most common settings.
Exit status: 0 after a clean stop (SIGTERM, or ``--exit-when-idle``), 2 when
the rules or settings are invalid. Broker and Redis outages are not exits:
the daemon waits, retries and reports not-ready.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from sentinel import logs
from sentinel.config import Settings
from sentinel.rules import RuleSet, load_rules
from sentinel.yamlfile import RulesFileError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the live daemon (Kafka consumer group)",
        description="Consume usage events from Kafka in a consumer group, run the detectors per partition, "
        "deliver alerts, checkpoint state to Redis. Settings come from SENTINEL_* environment variables; "
        "flags override them.",
    )
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: SENTINEL_RULES_DIR, ./rules, built-ins)")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="Kafka bootstrap servers (SENTINEL_KAFKA__BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", help="usage-event topic (SENTINEL_KAFKA__TOPIC)")
    p.add_argument("--group", help="consumer group id (SENTINEL_KAFKA__GROUP_ID)")
    p.add_argument("--redis", metavar="URL",
                   help="Redis URL for checkpoints and the ledger; unset = in-memory. Prefer "
                   "SENTINEL_STATE__REDIS_URL when it holds a password (argv is visible to other users)")
    p.add_argument("--alerts-file", metavar="FILE", help="also append alerts to this JSONL file (SENTINEL_ALERTS_FILE)")
    p.add_argument("--http-port", type=int, help="port of /healthz, /readyz, /metrics (0 = any free port)")
    p.add_argument("--idle-advance", choices=("wall", "drain", "off"),
                   help="what to do with a caught-up quiet partition (SENTINEL_DAEMON__IDLE_ADVANCE)")
    p.add_argument("--idle-after", type=float, metavar="SECONDS", help="quiet time before that (default 10)")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                   help="stop once every assigned partition is caught up and quiet this long")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings()
    kafka: dict[str, Any] = {}
    if args.bootstrap:
        kafka["bootstrap_servers"] = args.bootstrap
    if args.topic:
        kafka["topic"] = args.topic
    if args.group:
        kafka["group_id"] = args.group
    daemon: dict[str, Any] = {}
    if args.idle_advance:
        daemon["idle_advance"] = args.idle_advance
    if args.idle_after is not None:
        daemon["idle_after_s"] = args.idle_after
    if args.exit_when_idle is not None:
        daemon["exit_when_idle_s"] = args.exit_when_idle
    top: dict[str, Any] = {}
    if args.rules:
        top["rules_dir"] = Path(args.rules)
    if args.alerts_file:
        top["alerts_file"] = Path(args.alerts_file)
    if args.http_port is not None:
        top["http_port"] = args.http_port
    if args.redis:
        top["state"] = settings.state.model_copy(update={"redis_url": SecretStr(args.redis)})
    if kafka:
        top["kafka"] = settings.kafka.model_copy(update=kafka)
    if daemon:
        top["daemon"] = settings.daemon.model_copy(update=daemon)
    return settings.model_copy(update=top) if top else settings


def run(args: argparse.Namespace) -> int:
    from sentinel.daemon import Daemon, build_shape_registry, build_stores

    try:
        settings = settings_from_args(args)
    except ValidationError as err:
        print(f"sentinel run: invalid settings:\n{err}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    # kafka-python logs every connection at INFO; our own events say what matters. Never DEBUG: at DEBUG it
    # dumps raw request/response bytes (every record's value, SASL handshakes) into the log.
    logging.getLogger("kafka").setLevel(logging.WARNING if settings.log_level != "debug" else logging.INFO)
    rules_dir = settings.resolved_rules_dir()
    try:
        rules = load_rules(rules_dir)
    except RulesFileError as err:
        print(f"sentinel run: cannot load rules:\n{err}", file=sys.stderr)
        return 2
    store, ledger = build_stores(settings)
    delivery = build_configured_delivery(settings, rules)
    daemon = Daemon(settings, rules, store, ledger, rules_dir=rules_dir, shapes=build_shape_registry(settings),
                    sinks=[delivery] if delivery is not None else (),
                    on_reload=reload_delivery(delivery) if delivery is not None else None)
    daemon.install_signals()
    actions = start_slack_actions(settings, delivery)
    try:
        return daemon.run()
    finally:
        if actions is not None:
            actions.shutdown()
        if delivery is not None:
            delivery.close()


def reload_delivery(delivery: Any) -> Callable[[RuleSet], None]:
    """SIGHUP: the delivery pipeline routes by the reloaded ``routes.yaml`` (validated with the other rules)."""
    log = logs.get_logger("sentinel.run")

    def apply(rules: RuleSet) -> None:
        delivery.set_routes(rules.routes)
        log.info("delivery_routes_reloaded", routes=[r.name for r in delivery.router.routes],
                 default_sinks=list(delivery.router.default_sinks))

    return apply


def start_slack_actions(settings: Settings, delivery: Any) -> Any:
    """Serve Slack's interactivity endpoint (Acknowledge / Silence 1h / Revoke key) when a signing
    secret is configured: requests are verified (v0 HMAC, 5-minute replay window) before anything
    happens; Acknowledge is forwarded to PagerDuty/Opsgenie through the outbox."""
    secret = settings.sinks.slack_signing_secret
    if delivery is None or secret is None:
        return None
    from sentinel.sinks.factory import acknowledge_hook
    from sentinel.sinks.slack_actions import SlackActions, serve

    actions = SlackActions(secret.get_secret_value(), delivery.silence_store, delivery.outbox,
                           delivery.notifiers.get("revoke"),
                           on_ack=acknowledge_hook(delivery.outbox, delivery.notifiers.values()))
    server = serve(actions, settings.http_host, settings.sinks.slack_actions_port)
    log = logs.get_logger("sentinel.run")
    log.info("slack_actions_listening", host=settings.http_host, port=server.server_address[1],
             path="/slack/actions")
    return server


def delivery_configured(settings: Settings) -> bool:
    """True when SENTINEL_SINKS__* name a delivery sink (HEC, syslog, OCSF, JSONL, Slack, revoke URL, paging)."""
    s = settings.sinks
    return bool(s.jsonl_path or (s.hec_url and s.hec_token is not None) or s.syslog_host or s.ocsf_path
                or (s.slack_bot_token is not None and s.slack_channel) or s.revoke_url
                or s.pagerduty_routing_key is not None or s.pagerduty_enabled or s.opsgenie_api_key is not None
                or s.alertmanager_urls)


def build_configured_delivery(settings: Settings, rules: Any) -> Any:
    """The delivery pipeline (:mod:`sentinel.alerting.delivery`) as one more daemon sink, or None when no
    delivery sink is configured (then ``sentinel run`` writes only the alerts topic and the alerts file).
    Its outbox, silences and revoke rate limits live in Redis when ``state.redis_url`` is set."""
    if not delivery_configured(settings):
        return None
    from sentinel.alerting.delivery import build_delivery

    client = None
    if settings.state.redis_url is not None:
        import redis

        client = redis.Redis.from_url(settings.state.redis_url.get_secret_value(), socket_timeout=5.0,
                                      socket_connect_timeout=2.0)
    return build_delivery(settings, rules.routes, client)
