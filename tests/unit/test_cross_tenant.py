"""cross_tenant on labelled synthetic streams: each signal fires, each negative stays silent."""

from __future__ import annotations

from typing import Any

from detectors.base import DetectorContext, TenantInfo
from detectors.cross_tenant import CrossTenant, CrossTenantParams
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from tests.synth import DAY, HOUR, T0, Factory, background, firing, merge
from tests.synth import run_detector as run


def ctx(**tenants: TenantInfo) -> DetectorContext:
    base = load_rules(None).context()
    return DetectorContext(calendar=base.calendar, prices=base.prices, tenants=tenants)


def make(context: DetectorContext | None = None, tenant_params: dict[str, CrossTenantParams] | None = None,
         **params: Any) -> CrossTenant:
    return CrossTenant(CrossTenantParams(**params), context or ctx(), tenant_params)


def reads(f: Factory, start: float, victims: list[str], *, key: str = "key_beta_9", tenant: str = "t_beta",
          every: float = 30.0) -> list[UsageEvent]:
    return [f.event(start + i * every, tenant_id=tenant, api_key_id=key, user_id=f"u_{tenant}_9",
                    resource_tenant_id=v, prompt_shape=f"shp_{tenant}_1") for i, v in enumerate(victims)]


# -- foreign reads ---------------------------------------------------------------------------------


def test_one_foreign_read_fires_at_once_without_warm_up() -> None:
    f = Factory()
    ev = reads(f, T0 + 5.0, ["t_alpha"])
    det = make()
    out = det.update(ev[0])
    assert out is not None and len(out) == 1
    x = out[0]
    assert (x.entity_type, x.entity_id, x.tenant_id, x.api_key_id) == ("api_key", "key_beta_9", "t_beta", "key_beta_9")
    assert x.score == 0.6 and x.signals == {"foreign_reads": 0.6}
    assert x.evidence["victim_tenants"] == ["t_alpha"]
    assert x.evidence["foreign_reads"] == 1
    assert x.evidence["first_event"] == x.evidence["last_event"] == T0 + 5.0
    assert x.first_seen == x.ts == T0 + 5.0
    assert x.sample_event_ids == [ev[0].event_id]
    assert x.attack == {"framework": "MITRE ATLAS", "id": "AML.T0057", "name": "LLM Data Leakage"}
    assert x.actions == ["notify"]
    assert not det.is_warm("key_beta_9"), "it fired while cold: the evidence is absolute"


def test_escalates_with_victims_and_read_count_not_per_event() -> None:
    f = Factory()
    victims = ["t_alpha"] * 20 + ["t_gamma"] * 3 + ["t_delta"] * 3
    out = firing(run(make(), reads(f, T0 + HOUR, victims)))
    # 1, 2, 4, 8, 16 reads of t_alpha; then t_gamma (new victim); then t_delta (new victim).
    assert [x.evidence["foreign_reads"] for x in out] == [1, 2, 4, 8, 16, 21, 24]
    assert [len(x.evidence["victim_tenants"]) for x in out] == [1, 1, 1, 1, 1, 2, 3]
    assert len({x.first_seen for x in out}) == 1, "one incident keeps one first_seen"
    scores = [x.score for x in out]
    assert scores == sorted(scores) and scores[-1] == 0.95
    last = out[-1]
    assert last.evidence["reads_by_victim"] == {"t_alpha": 20, "t_gamma": 3, "t_delta": 1}
    assert last.signals == {"foreign_reads": 0.75, "victim_fanout": 0.2}
    assert last.actions == ["notify", "page", "revoke"]
    assert last.evidence["first_event"] == T0 + HOUR
    assert last.evidence["last_event"] == T0 + HOUR + 23 * 30.0


def test_resolves_after_quiet_with_the_same_first_seen() -> None:
    f = Factory()
    det = make()
    out = run(det, reads(f, T0 + HOUR, ["t_alpha", "t_alpha"]), until=T0 + 3 * HOUR)
    resolved = [x for x in out if x.status == "resolved"]
    assert len(resolved) == 1
    assert resolved[0].first_seen == out[0].first_seen
    assert resolved[0].ts >= T0 + HOUR + 30.0 + 3600.0
    assert resolved[0].actions == []
    # A new read after resolution is a new incident.
    again = firing(run(det, reads(f, T0 + 5 * HOUR, ["t_alpha"])))
    assert len(again) == 1 and again[0].first_seen == T0 + 5 * HOUR


def test_same_tenant_or_unknown_resource_is_not_a_read_of_another_tenant() -> None:
    f = Factory()
    evs = [*reads(f, T0, ["t_beta"] * 5), f.event(T0 + 500.0, tenant_id="t_beta", api_key_id="key_beta_9")]
    assert not run(make(), evs)


def test_allowed_support_tenant_never_fires() -> None:
    f = Factory()
    evs = reads(f, T0, ["t_alpha", "t_beta", "t_gamma", "t_delta"] * 5, key="key_support_1", tenant="t_support")
    det = make(ctx(t_support=TenantInfo(cross_tenant_allowed=True)))
    assert not run(det, evs)
    assert det.tracked_keys() == 0, "an allowed tenant's events are not even tracked"
    # The same traffic from a tenant that is not allowed fires.
    assert firing(run(make(), evs))


def test_allowed_tenant_resources_are_exempt_unless_configured_otherwise() -> None:
    f = Factory()
    evs = reads(f, T0, ["t_internal_kb"] * 3)
    context = ctx(t_internal_kb=TenantInfo(cross_tenant_allowed=True))
    assert not run(make(context), evs)
    assert firing(run(make(context, exempt_allowed_resource=False), evs))


# -- principal fan-out --------------------------------------------------------------------------------


def test_user_under_three_tenants_is_a_fanning_out_principal() -> None:
    f = Factory()
    evs = [
        f.event(T0 + i * 60.0, tenant_id=tenant, api_key_id=f"key_{tenant}", user_id="u_shared")
        for i, tenant in enumerate(["t_alpha", "t_alpha", "t_beta", "t_beta", "t_gamma", "t_delta"])
    ]
    out = firing(run(make(), evs))
    assert [(x.entity_type, x.entity_id) for x in out] == [("principal", "user:u_shared")] * 2
    first, second = out
    assert first.ts == T0 + 4 * 60.0, "fires at the third tenant"
    assert first.evidence["tenants"] == ["t_alpha", "t_beta", "t_gamma"]
    assert first.signals == {"user_fanout": 0.5}
    assert second.evidence["other_tenants"] == ["t_beta", "t_gamma", "t_delta"]
    assert second.score > first.score and second.first_seen == first.first_seen
    assert first.tenant_id == "t_alpha"


def test_user_under_two_tenants_is_not_enough() -> None:
    f = Factory()
    evs = [f.event(T0 + i * 60.0, tenant_id=t, api_key_id=f"key_{t}", user_id="u_moved")
           for i, t in enumerate(["t_alpha", "t_beta", "t_alpha", "t_beta"])]
    assert not run(make(), evs)


def test_fanout_threshold_is_overridable_per_tenant() -> None:
    f = Factory()
    evs = [f.event(T0 + i * 60.0, tenant_id=t, api_key_id=f"key_{t}", user_id="u_moved")
           for i, t in enumerate(["t_alpha", "t_beta"])]
    strict = CrossTenantParams(fanout_min_tenants=2)
    out = firing(run(make(tenant_params={"t_beta": strict}), evs))
    assert [x.entity_id for x in out] == ["user:u_moved"]


# -- shape leak ----------------------------------------------------------------------------------------


def owner_traffic(f: Factory, shape: str, days: float, every: float = 1800.0) -> list[UsageEvent]:
    n = int(days * DAY / every)
    return [f.event(T0 + i * every, tenant_id="t_alpha", api_key_id="key_alpha_1", prompt_shape=shape)
            for i in range(n)]


def test_private_shape_used_by_another_tenant_fires() -> None:
    f = Factory()
    evs = owner_traffic(f, "shp_alpha_contracts", days=2.0)
    intruder = [f.event(T0 + 2 * DAY + 60.0 * i, tenant_id="t_beta", api_key_id="key_beta_2",
                        prompt_shape="shp_alpha_contracts") for i in range(3)]
    out = firing(run(make(), merge(evs, intruder)))
    assert len(out) == 1, "the first use by another tenant is the leak; later uses add nothing"
    x = out[0]
    assert (x.entity_id, x.tenant_id, x.ts) == ("key_beta_2", "t_beta", T0 + 2 * DAY)
    assert x.signals == {"shape_leak": 0.5}
    assert x.evidence["leaked_shapes"] == [{"shape": "shp_alpha_contracts", "owner_tenant": "t_alpha"}]
    assert x.evidence["foreign_reads"] == 0
    assert x.attack is not None and x.attack["id"] == "AML.T0057"


def test_young_or_rarely_used_shape_is_not_private_yet() -> None:
    f = Factory()
    young = owner_traffic(f, "shp_young", days=0.5, every=300.0)  # 144 uses, but only half a day old
    rare = owner_traffic(f, "shp_rare", days=2.0, every=6 * 3600.0)  # two days, 8 uses
    intruders = [f.event(t, tenant_id="t_beta", api_key_id="key_beta_2", prompt_shape=s)
                 for t, s in [(T0 + 0.5 * DAY, "shp_young"), (T0 + 2 * DAY, "shp_rare")]]
    assert not firing(run(make(), merge(young, rare, intruders)))


def test_shape_already_shared_by_two_tenants_is_not_flagged_for_a_third() -> None:
    f = Factory()
    evs = owner_traffic(f, "shp_common", days=2.0)
    beta_early = [f.event(T0 + 600.0, tenant_id="t_beta", api_key_id="key_beta_2", prompt_shape="shp_common")]
    gamma_late = [f.event(T0 + 2 * DAY, tenant_id="t_gamma", api_key_id="key_gamma_1", prompt_shape="shp_common")]
    assert not firing(run(make(), merge(evs, beta_early, gamma_late)))


# -- probing -------------------------------------------------------------------------------------------


def key_traffic(f: Factory, start: float, end: float, *, key: str = "key_alpha_2", unique: bool = False,
                every: float = 60.0) -> list[UsageEvent]:
    out = []
    t, i = start, 0
    while t < end:
        shape = f"shp_{key}_u{i}" if unique else f"shp_{key}_{i % 3}"
        out.append(f.event(t, tenant_id="t_alpha", api_key_id=key, prompt_shape=shape))
        t += every
        i += 1
    return out


def probe(f: Factory, start: float, *, key: str = "key_alpha_2", n: int = 40) -> list[UsageEvent]:
    return [f.event(start + i * 10.0, tenant_id="t_alpha", api_key_id=key, prompt_shape=f"shp_probe_{key}_{i}")
            for i in range(n)]


def test_warm_key_issuing_many_rare_shapes_is_probing() -> None:
    f = Factory()
    normal = key_traffic(f, T0, T0 + 6 * HOUR)
    start = T0 + 6 * HOUR + 30.0  # window starts at T0 + 6 h
    det = make()
    out = firing(run(det, merge(normal, probe(f, start))))
    assert det.is_warm("key_alpha_2")
    assert len(out) >= 1
    x = out[0]
    assert x.entity_id == "key_alpha_2"
    assert x.ts <= start + 20 * 10.0, "fires on the 20th rare shape of the window"
    assert set(x.signals) == {"probing"} and 0.3 <= x.score <= 0.45
    assert x.evidence["rare_shapes_in_window"] >= 20
    assert x.evidence["rare_share"] >= 0.5 and x.evidence["baseline_rare_share"] < 0.1
    assert x.attack is not None and x.attack["id"] == "AML.T0040"


def test_cold_key_probing_is_not_judged() -> None:
    f = Factory()
    det = make()
    assert not run(det, probe(f, T0 + 30.0, key="key_new"))
    assert not det.is_warm("key_new")


def test_key_that_always_issues_unique_shapes_is_its_own_baseline() -> None:
    f = Factory()
    evs = key_traffic(f, T0, T0 + 6 * HOUR, unique=True, every=20.0)
    assert not firing(run(make(), merge(evs, probe(f, T0 + 6 * HOUR + 30.0))))


# -- mixed signals and benign traffic -----------------------------------------------------------------


def test_reads_plus_leak_score_adds_up_and_asks_to_revoke() -> None:
    f = Factory()
    evs = owner_traffic(f, "shp_alpha_secret", days=2.0)
    attack = [f.event(T0 + 2 * DAY + 60.0 * i, tenant_id="t_beta", api_key_id="key_beta_2",
                      prompt_shape="shp_alpha_secret", resource_tenant_id="t_alpha") for i in range(3)]
    out = firing(run(make(), merge(evs, attack)))
    x = out[-1]
    assert set(x.signals) == {"foreign_reads", "shape_leak"}
    assert x.score >= 0.95 and "revoke" in x.actions


def test_background_with_one_intruder_fires_only_for_the_intruder() -> None:
    f = Factory("intr")
    evs = merge(background(days=1.0, seed=2), reads(f, T0 + 14 * HOUR, ["t_gamma"], key="key_alpha_1",
                                                     tenant="t_alpha"))
    out = firing(run(make(), evs))
    assert {x.entity_id for x in out} == {"key_alpha_1"}
    assert out[0].evidence["victim_tenants"] == ["t_gamma"]


def test_shared_delta_publishes_the_owner_with_the_first_other_tenant() -> None:
    """A shape seen under two tenants on one replica must not reach others as private to one."""
    from detectors.cross_tenant import CrossTenant, CrossTenantParams
    from sentinel.rules import load_rules
    from tests.synth import T0, Factory

    ctx = load_rules(None).context()
    a = CrossTenant(CrossTenantParams(), ctx)
    f = Factory("sd")
    a.update(f.event(T0, tenant_id="t_one", api_key_id="k1", prompt_shape="shp_shared"))
    a.update(f.event(T0 + 60, tenant_id="t_two", api_key_id="k2", prompt_shape="shp_shared"))
    delta = a.shared_delta()
    assert sorted(delta["shp_shared"]) == ["t_one", "t_two"]
    # a second replica that saw the shape under t_three only must not treat it as t_two's private shape
    b = CrossTenant(CrossTenantParams(), ctx)
    b.merge_shared(delta)
    got = b.update(f.event(T0 + 120, tenant_id="t_one", api_key_id="k1", prompt_shape="shp_shared"))
    assert not got
