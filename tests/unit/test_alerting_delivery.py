"""The delivery stages, the outbox and the per-sink workers, with in-process notifiers.

Real sinks against real receivers are in tests/integration/test_sink_*.py;
here the notifier only records what it got, so each stage can be checked
on its own: route, silence, inhibit, group, dedup/cooldown, outbox, retry.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from sentinel.alerting.delivery import DEAD_LETTERS, Delivery, RetryPolicy
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.alerting.silences import MemorySilenceStore, Silence
from sentinel.rules import RoutesFile
from tests.receivers.alerts import RecordingNotifier, make_alert

ROUTES = RoutesFile.model_validate({"routes": [
    {"name": "page", "match": {"detector": ["spend_spike", "quota_burn"], "min_severity": "medium"},
     "sinks": ["siem", "slack"]},
], "default_sinks": ["siem"]})
FAST = RetryPolicy(initial_s=0.01, max_s=0.05, jitter=0.5, max_attempts=4, seed=7)


def make(tmp_path: Path | None = None, **kw: object) -> tuple[Delivery, RecordingNotifier, RecordingNotifier]:
    siem = RecordingNotifier("siem", record=True)
    slack = RecordingNotifier("slack", record=False, max_batch=1)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite" if tmp_path else ":memory:")
    d = Delivery([siem, slack], outbox, Router(ROUTES), MemorySilenceStore(), retry=FAST,
                 idle_poll_s=0.02, **kw)  # type: ignore[arg-type]
    return d, siem, slack


def test_page_sink_hears_once_then_only_on_severity_rise_and_resolve() -> None:
    d, siem, slack = make()
    v1 = make_alert(1, severity="medium", score=0.6)
    v2 = make_alert(1, version=2, severity="medium", score=0.7)       # same severity: page sink not told
    v3 = make_alert(1, version=3, severity="critical", score=0.97)    # escalation
    v4 = make_alert(1, version=4, severity="high", score=0.8)         # lower again: not told
    v5 = make_alert(1, version=5, status="resolved", severity="high")
    d.enqueue([v1, v2])
    d.enqueue([v3, v4, v5])
    d.enqueue([v3])                                                    # duplicate: nobody told twice
    d.start()
    assert d.wait_idle(5)
    d.close()
    assert [(n.alert.version, n.reason) for n in slack.sent] == [(1, "new"), (3, "escalated"), (5, "resolved")]
    assert slack.sent[1].previous_severity == "medium"
    assert [n.alert.version for n in siem.sent] == [1, 2, 3, 4, 5]
    assert d.stats.suppressed["slack/no_severity_rise"] == 2
    assert d.stats.suppressed["slack/duplicate"] == 1 and d.stats.suppressed["siem/duplicate"] == 1


def test_routing_sends_low_severity_only_to_default_sinks() -> None:
    d, _siem, _slack = make()
    d.enqueue([make_alert(1, severity="low", score=0.35), make_alert(2, detector="runaway_loop")])
    assert d.pending() == {"siem": 2, "slack": 0}


def test_silence_mutes_pages_not_records_and_expires() -> None:
    now = [1000.0]
    d, _siem, _slack = make(clock=lambda: now[0])
    d.silence_store.add(Silence.create(["tenant=t_alpha", "detector=~spend_.*"], 900.0, 1100.0, "ops"))
    d.silencer.invalidate()
    d.enqueue([make_alert(1), make_alert(2, tenant="t_beta")])
    assert d.pending() == {"siem": 2, "slack": 1}
    assert d.stats.suppressed["slack/silenced"] == 1
    now[0] = 1200.0  # silence over: the next new incident pages
    d.enqueue([make_alert(3)])
    assert d.pending()["slack"] == 2


def test_spend_spike_inhibits_quota_burn_page_and_links_it() -> None:
    d, siem, slack = make()
    spike = make_alert(1, detector="spend_spike")
    burn = make_alert(2, detector="quota_burn", severity="high")
    other_tenant_burn = make_alert(3, detector="quota_burn", tenant="t_beta", severity="high")
    d.enqueue([spike, burn, other_tenant_burn])
    d.start()
    assert d.wait_idle(5)
    d.close()
    assert [n.alert.detector for n in slack.sent] == ["spend_spike", "quota_burn"]
    assert slack.sent[1].alert.tenant_id == "t_beta"
    linked = [n for n in siem.sent if n.alert.alert_id == burn.alert_id]
    assert linked and linked[0].inhibited_by == spike.alert_id
    assert d.stats.suppressed["slack/inhibited"] == 1
    # the spike resolves: a new quota_burn incident pages again
    d2, _, _slack2 = make()
    d2.enqueue([spike, make_alert(1, version=2, status="resolved"), burn])
    assert d2.pending()["slack"] == 3  # spike, its resolve, burn


def test_group_key_is_the_tenant() -> None:
    d, siem, _ = make()
    d.enqueue([make_alert(1, tenant="t_a"), make_alert(2, tenant="t_b")])
    d.start()
    assert d.wait_idle(5)
    d.close()
    assert sorted(n.group_key for n in siem.sent) == ["tenant:t_a", "tenant:t_b"]


def test_realert_cooldown_on_same_entity_uses_event_time() -> None:
    d, _, _slack = make(realert_s=3600.0)
    a = make_alert(1, key="k1", t=10_000.0)
    again_soon = make_alert(1, key="k1", alert_id="al_second", t=10_000.0 + 1800)
    later = make_alert(1, key="k1", alert_id="al_third", t=10_000.0 + 7200)
    d.enqueue([a])
    d.enqueue([again_soon])
    d.enqueue([later])
    assert d.pending()["slack"] == 2
    assert d.stats.suppressed["slack/cooldown"] == 1


def test_resolved_goes_only_to_sinks_that_heard_and_support_it() -> None:
    siem = RecordingNotifier("siem", record=True)
    slack = RecordingNotifier("slack", supports_resolve=False)
    d = Delivery([siem, slack], SqliteOutbox(":memory:"), Router(ROUTES), retry=FAST)
    d.enqueue([make_alert(1), make_alert(1, version=2, status="resolved")])
    d.enqueue([make_alert(9, version=3, status="resolved")])  # never notified as firing
    assert d.pending() == {"siem": 3, "slack": 1}
    assert d.stats.suppressed["slack/no_resolve_support"] == 1
    assert d.stats.suppressed["slack/not_notified"] == 1


def test_failing_sink_retries_with_backoff_and_does_not_block_others() -> None:
    d, siem, slack = make()
    slack.fail_times = 3
    d.start()
    d.enqueue([make_alert(i) for i in range(5)])
    assert d.wait_idle(10)
    d.close()
    assert len(siem.sent) == 5 and siem.calls == 1  # siem delivered in one batch, never waited for slack
    assert sorted(slack.keys()) == sorted((make_alert(i).alert_id, 1) for i in range(5))
    assert len(slack.keys()) == len(set(slack.keys()))
    assert d.stats.failures["slack"] == 3


def test_dead_letter_after_max_attempts_with_metric() -> None:
    d, siem, slack = make()
    slack.fail_forever = True
    before = DEAD_LETTERS.labels("slack")._value.get()
    d.start()
    d.enqueue([make_alert(1)])
    assert d.wait_idle(10)
    d.close()
    dead = d.outbox.dead("slack")
    assert len(dead) == 1 and dead[0].attempts == FAST.max_attempts
    assert "gave up after 4 attempts" in dead[0].reason
    assert DEAD_LETTERS.labels("slack")._value.get() == before + 1
    assert len(siem.sent) == 1


def test_non_retryable_entry_is_isolated_from_its_batch() -> None:
    d, siem, _ = make()
    bad = make_alert(3)
    siem.reject_alert_ids = {bad.alert_id}
    d.enqueue([make_alert(i) for i in range(6)])
    d.start()
    assert d.wait_idle(10)
    d.close()
    assert len(siem.sent) == 5 and bad.alert_id not in {n.alert.alert_id for n in siem.sent}
    assert [e.reason.split(":")[0] for e in d.outbox.dead("siem")] == ["rejected"]


def test_backoff_is_exponential_capped_and_jitter_deterministic() -> None:
    p = RetryPolicy(initial_s=1, max_s=30, multiplier=2, jitter=0.2, seed=1)
    a = [p.delay(i, random.Random(5)) for i in range(1, 8)]
    b = [p.delay(i, random.Random(5)) for i in range(1, 8)]
    assert a == b
    for i, x in enumerate(a, 1):
        base = min(30, 2 ** (i - 1))
        assert 0.8 * base <= x <= 1.2 * base


def test_restart_resumes_pending_sqlite_entries(tmp_path: Path) -> None:
    d, _, _slack = make(tmp_path)
    alerts = [make_alert(i) for i in range(20)]
    assert d.enqueue(alerts) == 40  # durable now; no worker ever ran (a crash right after enqueue)
    d.outbox.close()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        assert db.execute("select count(*) from outbox").fetchone()[0] == 40
    d2, siem2, slack2 = make(tmp_path)
    d2.enqueue(alerts)  # the same alerts again (replayed input): claimed already, nothing added
    assert d2.pending() == {"siem": 20, "slack": 20}
    d2.start()
    assert d2.wait_idle(10)
    d2.close()
    assert sorted(slack2.keys()) == sorted((a.alert_id, 1) for a in alerts)
    assert len(siem2.sent) == 20


def test_enqueue_cost_is_small(tmp_path: Path) -> None:
    d, _, _ = make(tmp_path)
    alerts = [make_alert(i) for i in range(500)]
    t = time.perf_counter()
    for i in range(0, 500, 50):
        d.enqueue(alerts[i:i + 50])
    per_alert = (time.perf_counter() - t) / 500
    assert d.pending() == {"siem": 500, "slack": 500}
    assert per_alert < 0.01, per_alert


def test_delivery_is_an_alert_sink() -> None:
    d, _siem, _ = make()
    d.write([make_alert(1)])
    d.flush()
    assert d.pending()["siem"] == 1


@pytest.mark.parametrize("text", ["nolabel", "bogus=1", "tenant=~("])
def test_bad_silence_matchers_are_rejected(text: str) -> None:
    from sentinel.alerting.silences import SilenceError

    with pytest.raises(SilenceError):
        Silence.create([text], 0, 10)


def test_set_routes_swaps_the_router_for_new_versions_and_keeps_incident_state() -> None:
    d, siem, slack = make()
    d.enqueue([make_alert(1, severity="high")])                       # old routes: siem + slack
    only_siem = RoutesFile.model_validate({"routes": [
        {"name": "all", "match": {}, "sinks": ["siem"]}], "default_sinks": ["siem"]})
    d.set_routes(only_siem)
    assert d.router.routes[0].name == "all"
    d.enqueue([make_alert(2, severity="high")])                       # new routes: siem only
    d.enqueue([make_alert(1, version=2, status="resolved")])          # slack heard of it, not routed any more
    d.set_routes(ROUTES)                                              # back: slack remembers incident 1
    d.enqueue([make_alert(1, version=3, status="resolved")])
    d.start()
    assert d.wait_idle(5)
    d.close()
    assert [(n.alert.api_key_id, n.alert.version) for n in slack.sent] == [("key_t_alpha_1", 1), ("key_t_alpha_1", 3)]
    assert sorted((n.alert.api_key_id, n.alert.version) for n in siem.sent) == [
        ("key_t_alpha_1", 1), ("key_t_alpha_1", 2), ("key_t_alpha_1", 3), ("key_t_alpha_2", 1)]


def test_set_routes_reroutes_pagerduty_keys_and_keeps_the_key_of_a_removed_route() -> None:
    from sentinel.alerting.outbox import SqliteOutbox as Box
    from sentinel.sinks.pagerduty import PagerDutyRouting, PagerDutySink

    env = {"PD_SOC": "soc-key-0000000000000000000000000", "PD_FIN": "fin-key-0000000000000000000000000"}
    before = RoutesFile.model_validate({"routes": [
        {"name": "soc", "match": {"detector": "spend_spike"}, "sinks": ["pagerduty"],
         "pagerduty_routing_key_env": "PD_SOC"}]})
    after = RoutesFile.model_validate({"routes": [
        {"name": "finops", "match": {"detector": ["spend_spike", "quota_burn"]}, "sinks": ["pagerduty"],
         "pagerduty_routing_key_env": "PD_FIN"}]})
    pd = PagerDutySink(PagerDutyRouting(before, "default-key-000000000000000000000", environ=env),
                       base_url="http://127.0.0.1:9", kv=Box(":memory:"))
    d = Delivery([pd], Box(":memory:"), Router(before), retry=FAST)
    alert = make_alert(1)
    assert pd.routing.route_for(alert) == "soc" and pd.routing.key("soc") == env["PD_SOC"]
    d.set_routes(after)
    assert d.router.route(alert) == ("pagerduty",)
    assert pd.routing.route_for(alert) == "finops" and pd.routing.key("finops") == env["PD_FIN"]
    assert pd.routing.route_for(make_alert(2, detector="quota_burn")) == "finops"
    # An incident triggered on "soc" (remembered by route name) still resolves on soc's service.
    assert pd.routing.key("soc") == env["PD_SOC"]
    assert pd.routing.key("gone") == "default-key-000000000000000000000"
