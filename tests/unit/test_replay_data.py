"""The committed replay data (replay_data/) is valid, sorted, labelled consistently and reproducible."""

from __future__ import annotations

import bisect
import gzip
import importlib.util
import itertools
import json
import random
import re
import sys
from datetime import datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
REPLAY = REPO / "replay_data"
SCHEMA_PATH = REPO.parent / "shared" / "contracts" / "usage-event.v1.schema.json"
DATA_DIR = REPO.parent / "shared" / "data"

DETECTORS = ("spend_spike", "quota_burn", "runaway_loop", "cache_collapse", "cross_tenant", "retry_storm",
             "cancellation_tax")
STREAMS = ["sample", *(f"scenarios/{d}" for d in DETECTORS)]
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# event fields a label entity may name (other entity keys, such as budget or model_before, are context)
EVENT_FIELDS = {"tenant_id", "api_key_id", "user_id", "session_id", "request_id", "feature", "provider", "model",
                "source_ip", "user_agent", "prompt_shape", "prefix_hash", "resource_tenant_id"}
SECRET_LIKE = re.compile(r"(^sk-|^sk_|^pk_|^rk_|AKIA[0-9A-Z]{12}|ASIA[0-9A-Z]{12}|^AIza|^ghp_|^xox[abp]-|"
                         r"^eyJ|[A-Za-z0-9+/]{32,})")

# the JSON Schema of the event, a copy kept here if the shared contracts folder is not checked out
FALLBACK_REQUIRED = ["event_id", "ts", "api_key_id", "tenant_id", "provider", "model", "input_tokens",
                     "output_tokens"]


@cache
def events(stream: str) -> list[dict[str, Any]]:
    with gzip.open(REPLAY / f"{stream}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@cache
def labels(stream: str) -> list[dict[str, Any]]:
    return json.loads((REPLAY / f"{stream}.labels.json").read_text())


@cache
def tenants(stream: str) -> dict[str, Any]:
    return json.loads((REPLAY / f"{stream}.tenants.json").read_text())


@cache
def validator() -> jsonschema.protocols.Validator:
    if SCHEMA_PATH.exists():
        schema = json.loads(SCHEMA_PATH.read_text())
    else:  # pragma: no cover - the contracts live next to the repository
        schema = {"type": "object", "required": FALLBACK_REQUIRED}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_data_generate", REPLAY / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is created
    spec.loader.exec_module(mod)
    return mod


def ms(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# -- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_files_exist_and_sizes(stream: str) -> None:
    gz = REPLAY / f"{stream}.jsonl.gz"
    assert gz.is_file()
    assert (REPLAY / f"{stream}.labels.json").is_file()
    assert (REPLAY / f"{stream}.tenants.json").is_file()
    limit = 8.5e6 if stream == "sample" else 1.2e6
    assert gz.stat().st_size < limit
    assert gz.read_bytes()[4:8] == b"\0\0\0\0", "gzip mtime must be 0 (reproducible files)"


def test_sample_shape() -> None:
    evs = events("sample")
    assert 150_000 <= len(evs) <= 250_000
    assert evs[0]["ts"] >= "2026-11-02T00:00:00.000Z"
    assert evs[-1]["ts"] < "2026-11-09T00:00:00.000Z"
    tids = {e["tenant_id"] for e in evs}
    assert 10 <= len(tids) <= 14
    assert "t_support" in tids
    per_tenant_keys: dict[str, set[str]] = {}
    for e in evs:
        per_tenant_keys.setdefault(e["tenant_id"], set()).add(e["api_key_id"])
    assert all(2 <= len(k) <= 6 for k in per_tenant_keys.values()), per_tenant_keys
    with_cost = sum(1 for e in evs if e.get("cost_usd") is not None) / len(evs)
    assert 0.2 <= with_cost <= 0.4
    retried = sum(1 for e in evs if e.get("attempt", 1) > 1) / len(evs)
    assert 0.005 <= retried <= 0.05
    cancelled = sum(1 for e in evs if e.get("cancelled")) / len(evs)
    assert 0.002 <= cancelled <= 0.02
    assert any("gateway" in e for e in evs), "some events carry unknown extra fields"


# -- events -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_random_events_validate_against_schema(stream: str) -> None:
    evs = events(stream)
    rnd = random.Random(1234)
    v = validator()
    for e in rnd.sample(evs, min(len(evs), 3000 if stream == "sample" else 800)):
        errors = sorted(v.iter_errors(e), key=lambda err: list(err.path))
        assert not errors, f"{stream}: {e['event_id']}: {errors[0].message}"


@pytest.mark.parametrize("stream", STREAMS)
def test_events_invariants(stream: str) -> None:
    evs = events(stream)
    ids = set()
    prev = ""
    for e in evs:
        assert TS_RE.match(e["ts"]), e["ts"]
        assert e["ts"] >= prev, f"{stream}: not sorted at {e['event_id']}"
        prev = e["ts"]
        assert e["event_id"] not in ids
        ids.add(e["event_id"])
        assert 0 <= e.get("cached_input_tokens", 0) <= e["input_tokens"]
        assert e.get("cached_input_tokens", 0) + e.get("cache_write_tokens", 0) <= e["input_tokens"]
        assert e["output_tokens"] >= 0 and e.get("cache_write_tokens", 0) >= 0
        assert 100 <= e.get("status", 200) <= 599
        assert e.get("attempt", 1) >= 1
        if e.get("cache_write_tokens"):
            assert e["provider"] == "anthropic"
    # retries of one request share request_id and count attempt up
    by_req: dict[str, list[int]] = {}
    for e in evs:
        by_req.setdefault(e["request_id"], []).append(e["attempt"])
    for att in by_req.values():
        assert sorted(att) == list(range(1, len(att) + 1))


def test_cost_usd_matches_price_table() -> None:
    gen = generator()
    n = 0
    for e in events("sample"):
        if e.get("cost_usd") is None:
            continue
        want = gen.cost_usd(e["model"], e["input_tokens"], e.get("cached_input_tokens", 0),
                            e.get("cache_write_tokens", 0), e["output_tokens"])
        assert e["cost_usd"] == pytest.approx(want, abs=1e-7), e
        n += 1
    assert n > 1000


@pytest.mark.parametrize("stream", STREAMS)
def test_no_secret_like_identifiers(stream: str) -> None:
    keys = {e["api_key_id"] for e in events(stream)}
    for k in keys:
        assert re.fullmatch(r"key_[a-z]+_\d+", k), k
        assert not SECRET_LIKE.search(k), k
    for e in events(stream)[::97]:
        for field in ("event_id", "request_id", "session_id", "user_id"):
            v = e.get(field)
            assert v is None or not SECRET_LIKE.search(v), (field, v)


@pytest.mark.parametrize("stream", STREAMS)
def test_source_ips_are_private_or_documentation(stream: str) -> None:
    ok = re.compile(r"^(10\.\d+\.\d+\.\d+|192\.0\.2\.\d+|198\.51\.100\.\d+|203\.0\.113\.\d+)$")
    for ip in {e.get("source_ip") for e in events(stream)}:
        assert ip is None or ok.match(ip), ip


# -- labels -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_label_structure(stream: str) -> None:
    labs = labels(stream)
    assert isinstance(labs, list) and labs
    for lab in labs:
        assert {"detector", "kind", "start", "end", "entities", "description"} <= set(lab)
        assert lab["detector"] in DETECTORS
        assert isinstance(lab["kind"], str) and lab["kind"]
        assert TS_RE.match(lab["start"]) and TS_RE.match(lab["end"])
        assert lab["start"] <= lab["end"]
        assert isinstance(lab["entities"], dict) and lab["entities"]
        assert isinstance(lab["description"], str) and lab["description"]
        for d in lab.get("also_expected", []):
            assert d in DETECTORS
    positives = [lab for lab in labs if not lab["kind"].startswith("negative:")]
    negatives = [lab for lab in labs if lab["kind"].startswith("negative:")]
    assert positives and negatives
    if stream.startswith("scenarios/"):
        det = stream.split("/")[1]
        assert all(lab["detector"] == det for lab in labs)
        assert 2 <= len(positives) <= 4
        assert len({lab["kind"] for lab in negatives}) >= 2


def test_sample_has_every_incident_and_negative() -> None:
    kinds = {(lab["detector"], lab["kind"]) for lab in labels("sample")}
    for want in [("spend_spike", "llmjacking"), ("spend_spike", "low_and_slow"),
                 ("runaway_loop", "weekend_runaway_loop"), ("cache_collapse", "prefix_churn"),
                 ("cross_tenant", "cross_tenant_read"), ("retry_storm", "stacked_retries"),
                 ("cancellation_tax", "full_bill_after_cancel"), ("quota_burn", "budget_burn"),
                 ("spend_spike", "negative:monday_morning_ramp"), ("spend_spike", "negative:new_tenant_onboarding"),
                 ("spend_spike", "negative:key_rotation"), ("spend_spike", "negative:nightly_batch"),
                 ("runaway_loop", "negative:long_human_conversation"),
                 ("runaway_loop", "negative:scheduled_agent_run"), ("cache_collapse", "negative:brief_cache_dip"),
                 ("cross_tenant", "negative:support_tenant_reads")]:
        assert want in kinds, want


def _matches(e: dict[str, Any], ent: dict[str, Any]) -> bool:
    for k, v in ent.items():
        if k not in EVENT_FIELDS:
            continue
        if isinstance(v, list):
            if e.get(k) not in v:
                return False
        elif e.get(k) != v:
            return False
    return True


@pytest.mark.parametrize("stream", STREAMS)
def test_label_windows_contain_events_of_their_entities(stream: str) -> None:
    evs = events(stream)
    ts = [e["ts"] for e in evs]
    for lab in labels(stream):
        lo = bisect.bisect_left(ts, lab["start"])
        hi = bisect.bisect_right(ts, lab["end"])
        inside = [e for e in evs[lo:hi] if _matches(e, lab["entities"])]
        assert inside, f"{stream}: no event of {lab['entities']} in {lab['kind']} {lab['start']}..{lab['end']}"
        # budget labels name a budget that the tenants table defines
        if "budget" in lab["entities"]:
            names = {b["name"] for b in tenants(stream)["budgets"]}
            assert lab["entities"]["budget"]["name"] in names


def test_incident_mechanics_in_sample() -> None:
    labs = {lab["kind"]: lab for lab in labels("sample") if not lab["kind"].startswith("negative:")}
    evs = events("sample")
    ts = [e["ts"] for e in evs]

    def window(lab: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for e in evs[bisect.bisect_left(ts, lab["start"]):bisect.bisect_right(ts, lab["end"])]
                if _matches(e, lab["entities"])]

    jack = window(labs["llmjacking"])
    assert sum(1 for e in jack if e["status"] in (403, 404)) >= 10
    assert sum(1 for e in jack if e["status"] == 200 and e["model"].startswith("claude-opus")) > 100
    loop = [e for e in window(labs["weekend_runaway_loop"]) if e["status"] == 200]
    gaps = [ms(b["ts"]) - ms(a["ts"]) for a, b in itertools.pairwise(loop)]
    assert len(loop) > 1000 and 20 <= sum(gaps) / len(gaps) <= 40
    assert len({e["prompt_shape"] for e in loop}) == 1
    storm = window(labs["stacked_retries"])
    assert max(e["attempt"] for e in storm) == 9
    churn = [e for e in window(labs["prefix_churn"]) if e["status"] == 200]
    assert sum(e.get("cached_input_tokens", 0) for e in churn) == 0
    assert len({e["prefix_hash"] for e in churn}) > 0.9 * len(churn)
    tax = [e for e in window(labs["full_bill_after_cancel"]) if e["status"] == 200]
    assert sum(1 for e in tax if e["cancelled"]) / len(tax) > 0.1
    xread = window(labs["cross_tenant_read"])
    assert all(e["resource_tenant_id"] != e["tenant_id"] for e in xread)


def test_tenants_file() -> None:
    table = tenants("sample")
    rows = {t["tenant_id"]: t for t in table["tenants"]}
    assert rows["t_support"]["cross_tenant_allowed"] is True
    assert sum(1 for t in rows.values() if t["cross_tenant_allowed"]) == 1
    seen_keys = {e["api_key_id"] for e in events("sample")}
    listed = {k["api_key_id"] for t in rows.values() for k in t["keys"]}
    assert seen_keys <= listed
    zones = {t["timezone"] for t in rows.values()}
    assert {"America/New_York", "Europe/Berlin", "Asia/Tokyo", "UTC"} <= zones
    for t in rows.values():
        ZoneInfo(t["timezone"])
        assert t["monthly_budget_usd"] > 0
    for b in table["budgets"]:
        assert b["scope"] in ("tenant", "api_key") and b["period"] in ("day", "week", "month")
        assert (b.get("limit_usd") or b.get("limit_tokens") or 0) > 0


# -- determinism ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not (DATA_DIR / "servegen").is_dir(), reason="public traces (../shared/data) not available")
def test_generator_is_deterministic_on_a_scenario() -> None:
    gen = generator()
    data = gen.PublicData(DATA_DIR)
    a = gen.render(gen.build_scenario("cancellation_tax", data, 7, scale=0.3))
    b = gen.render(gen.build_scenario("cancellation_tax", data, 7, scale=0.3))
    assert a == b  # events (gzip bytes), labels and tenants, byte for byte
    assert a[0][4:8] == b"\0\0\0\0"  # gzip mtime 0
    c = gen.render(gen.build_scenario("cancellation_tax", data, 8, scale=0.3))
    assert c[0] != a[0]
