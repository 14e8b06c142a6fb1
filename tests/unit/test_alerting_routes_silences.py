"""Routes (rules/routes.yaml), silences (matchers, expiry, Redis store) and the silence / unrevoke commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sentinel.alerting.routes import DEFAULT_ROUTES, Router
from sentinel.alerting.silences import LabelMatcher, MemorySilenceStore, RedisSilenceStore, Silence, Silencer
from sentinel.cli import main
from sentinel.rules import RoutesFile, load_rules
from sentinel.yamlfile import RulesFileError
from tests.receivers.alerts import make_alert

REPO = Path(__file__).resolve().parents[2]


def test_shipped_routes_file_is_the_builtin_default() -> None:
    rules = load_rules(REPO / "rules")
    assert rules.routes == DEFAULT_ROUTES
    r = Router(rules.routes)
    assert r.sinks_for("spend_spike", "critical", "t") == ("jsonl", "splunk_hec", "syslog_cef", "ocsf", "slack",
                                                           "revoke")
    assert r.sinks_for("spend_spike", "medium", "t") == ("jsonl",)
    assert r.sinks_for("quota_burn", "medium", "t") == ("jsonl", "slack")
    assert r.sinks_for("cache_collapse", "critical", "t") == ("jsonl",)


def test_first_match_wins_unless_continue_and_regex_matchers() -> None:
    routes = RoutesFile.model_validate({"routes": [
        {"name": "vip", "match": {"tenant_regex": "vip_.*"}, "sinks": ["slack"], "continue": True},
        {"name": "sec", "match": {"detector_regex": "(spend|cross)_.*", "min_severity": "high"}, "sinks": ["siem"]},
        {"name": "never", "match": {"detector": "spend_spike"}, "sinks": ["x"]},
    ], "default_sinks": ["jsonl"]})
    r = Router(routes)
    assert r.sinks_for("spend_spike", "high", "vip_1") == ("slack", "siem")
    assert r.sinks_for("spend_spike", "high", "acme") == ("siem",)
    assert r.sinks_for("runaway_loop", "high", "vip_1") == ("slack",)
    assert r.sinks_for("runaway_loop", "high", "acme") == ("jsonl",)


def test_bad_regex_in_routes_yaml_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: x\n    match:\n      tenant_regex: '('\n"
                                          "    sinks: [jsonl]\n")
    with pytest.raises(RulesFileError) as exc:
        load_rules(tmp_path)
    assert "routes.yaml:4" in str(exc.value) and "tenant_regex" in str(exc.value)


def test_matchers_and_expiry() -> None:
    a = make_alert(1, tenant="t1")
    assert LabelMatcher.parse("api_key!=other").matches({"api_key": a.api_key_id})
    assert not LabelMatcher.parse("severity!~hi.*").matches({"severity": "high"})
    s = Silence.create(["tenant=t1", "severity=~high|critical"], 100, 200, "ops")
    store = MemorySilenceStore()
    store.add(s)
    sil = Silencer(store, refresh_s=0)
    assert sil.silenced_by(a, 150) == s.id
    assert sil.silenced_by(a, 99) is None and sil.silenced_by(a, 200) is None
    assert store.expire(s.id, 150) and not store.expire(s.id, 160)
    assert sil.silenced_by(a, 155) is None


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[tuple[str, str]]:
    prefix = f"test-silence-{uuid.uuid4().hex[:8]}"
    yield redis_url, prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_silence_command_add_list_expire_shared_through_redis(redis_prefix: tuple[str, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, prefix = redis_prefix
    base = ["silence", "--redis-url", url, "--prefix", prefix]
    assert main([*base, "add", "-m", "tenant=t1", "-m", "detector=~spend_.*", "-d", "2h", "-c", "maint",
                 "--author", "alice"]) == 0
    sid = capsys.readouterr().out.strip()
    client = redis.Redis.from_url(url)
    store = RedisSilenceStore(client, prefix)  # what every replica reads
    [s] = store.list()
    client.close()
    assert s.id == sid and s.ends_at - s.starts_at == 7200 and s.created_by == "alice"
    assert Silencer(store, 0).silenced_by(make_alert(1, tenant="t1"), s.starts_at + 1) == sid
    assert main([*base, "list"]) == 0
    assert sid in capsys.readouterr().out
    assert main([*base, "expire", sid]) == 0
    assert main([*base, "expire", sid]) == 1
    capsys.readouterr()
    assert main([*base, "list"]) == 0
    assert sid not in capsys.readouterr().out
    assert main([*base, "add", "-m", "nosuchlabel=1"]) == 2


def test_unrevoke_command_needs_a_configured_webhook(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.receivers.revoke import RevokeReceiver

    monkeypatch.delenv("SENTINEL_SINKS__REVOKE_URL", raising=False)
    assert main(["unrevoke", "key_1"]) == 2
    rec = RevokeReceiver("cli-hmac-secret-1").start()
    try:
        monkeypatch.setenv("SENTINEL_SINKS__REVOKE_URL", rec.url + "/revoke")
        monkeypatch.setenv("SENTINEL_SINKS__REVOKE_HMAC_SECRET", "cli-hmac-secret-1")
        monkeypatch.setenv("SENTINEL_SINKS__REVOKE_AUDIT_PATH", str(tmp_path / "audit.jsonl"))
        assert main(["unrevoke", "key_1", "--reason", "false positive", "--actor", "cli:bob"]) == 0
        assert main(["unrevoke", "sk-proj-abcdefgh12345678"]) == 2
        monkeypatch.setenv("SENTINEL_SINKS__REVOKE_HMAC_SECRET", "wrong")
        assert main(["unrevoke", "key_2"]) == 1
    finally:
        rec.stop()
    assert [d["api_key_id"] for d in rec.unrevoked] == ["key_1"]
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"decision":"unrevoke_sent"' in audit and '"decision":"unrevoke_failed"' in audit
    assert "cli-hmac-secret-1" not in audit and "cli-hmac-secret-1" not in capsys.readouterr().err
