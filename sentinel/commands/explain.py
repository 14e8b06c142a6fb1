"""``sentinel explain ALERT_ID --input ...``: why did this alert fire?

Replays the input through the same pipeline as ``sentinel replay`` (or reads
the alert from ``--alerts``, the output of an earlier replay), finds every
version of the alert, and prints:

* what it is: detector, rule, entity, tenant, severity, score, its versions;
* the **signal contributions** (``alert.signals``: each signal's share of
  the score), largest first;
* the **evidence**, the numbers behind the score;
* the **events behind it**: the alert's ``sample_event_ids`` looked up in the
  input, and the entity's own events around the detection time (with what
  they cost after price-table enrichment).

The second pass over the input runs the pipeline with no detector at all, so
the events come out deduplicated, in event-time order and with ``cost_usd``
filled in exactly as the detectors saw them. Exit status: 0 when found, 1
when the alert is not in the replay, 2 on unusable input or rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from sentinel.alerts import Alert, decode_alert, rfc3339
from sentinel.commands.replay import resolve_rules
from sentinel.events import UsageEvent
from sentinel.pipeline import Pipeline, PipelineOptions
from sentinel.progress import Progress
from sentinel.rules import RuleSet
from sentinel.sources.files import InputError, batches
from sentinel.tuning.labels import LabelError, apply_tenants, load_tenants_table, parse_time
from sentinel.yamlfile import RulesFileError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain", help="show the evidence, signal contributions and events behind one alert",
        description="Replay the input, find the alert by id, and print its evidence, its signal contributions "
        "and the events behind it (its sample events and the entity's events around the detection).",
    )
    p.add_argument("alert_id", metavar="ALERT_ID")
    p.add_argument("--input", "-i", dest="inputs", action="append", required=True, metavar="INPUT",
                   help=".jsonl or .jsonl.gz usage events (repeatable; read in order as one stream)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: ./rules if present, else built-ins)")
    p.add_argument("--tenants", metavar="TENANTS", help="generator tenants table laid over the rules")
    p.add_argument("--alerts", metavar="ALERTS.jsonl",
                   help="take the alert from this replay output instead of replaying the detectors")
    p.add_argument("--before", type=float, default=3600.0, metavar="SECONDS",
                   help="entity events from this long before detection (default 3600)")
    p.add_argument("--after", type=float, default=900.0, metavar="SECONDS",
                   help="... until this long after it (default 900)")
    p.add_argument("--limit", type=int, default=25, metavar="N", help="entity events to list (default 25)")
    p.add_argument("--lateness", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run)


class _ParamsNone(DetectorParams):
    pass


class _StateNone(msgspec.Struct):
    pass


class _EventTap(Detector[_ParamsNone, _StateNone]):
    """A silent pseudo-detector that hands every released event (enriched, in order) to a callback."""

    name: ClassVar[str] = "_explain_tap"
    Params = _ParamsNone
    State = _StateNone

    def __init__(self, context: DetectorContext, sink: Callable[[UsageEvent], None]) -> None:
        super().__init__(_ParamsNone(), context)
        self.sink = sink

    def update(self, event: UsageEvent) -> list[Finding] | None:
        self.sink(event)
        return None

    def is_warm(self, key: str) -> bool:
        return True

    def tracked_keys(self) -> int:
        return 0


def find_alert(alert_id: str, rules: RuleSet, inputs: Sequence[str], lateness_s: float,
               progress: Progress | None = None) -> list[Alert]:
    """Every version of ``alert_id`` in a replay of ``inputs`` (stops after its resolved version)."""
    pipeline = Pipeline(rules, PipelineOptions(lateness_s=lateness_s))
    found: list[Alert] = []
    for batch in batches(list(inputs)):
        alerts = pipeline.feed(batch.lines, batch.source, batch.positions).alerts
        found.extend(a for a in alerts if a.alert_id == alert_id)
        if progress is not None:
            progress.update(len(batch.lines))
        if found and found[-1].status == "resolved":
            return found
    found.extend(a for a in pipeline.drain() if a.alert_id == alert_id)
    return found


def alerts_from_file(alert_id: str, path: str) -> list[Alert]:
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if alert_id.encode() in line:
                a = decode_alert(line)
                if a.alert_id == alert_id:
                    out.append(a)
    return out


def entity_matcher(alert: Alert, rules: RuleSet) -> Callable[[UsageEvent], bool]:
    """Which events are the alert entity's own (by entity type; the tenant's when unsure)."""
    etype, eid, tenant = alert.entity.type, alert.entity.id, alert.tenant_id
    if etype == "api_key":
        return lambda e: e.api_key_id == eid
    if etype == "session":
        return lambda e: e.session_id == eid
    if etype == "principal":
        uid = eid.split(":", 1)[1] if ":" in eid else eid
        return lambda e: e.user_id == uid
    if etype == "prefix":
        return lambda e: e.prefix_hash == eid and e.tenant_id == tenant
    if etype == "feature" and "|" in eid:
        owner, feature = eid.split("|", 1)
        feat = feature or None
        if owner == tenant:
            return lambda e: e.tenant_id == owner and e.feature == feat
        return lambda e: e.api_key_id == owner and e.feature == feat
    if etype == "budget":
        for b in rules.budgets.budgets:
            if b.name == eid:
                bid = b.id
                if b.scope == "api_key":
                    return lambda e: e.api_key_id == bid
                return lambda e: e.tenant_id == bid
    if alert.api_key_id:
        key = alert.api_key_id
        return lambda e: e.api_key_id == key
    return lambda e: e.tenant_id == tenant


def event_row(e: UsageEvent) -> dict[str, Any]:
    t: float = e.ts  # type: ignore[assignment]
    return {
        "ts": rfc3339(t), "event_id": e.event_id, "tenant_id": e.tenant_id, "api_key_id": e.api_key_id,
        "session_id": e.session_id, "user_id": e.user_id, "feature": e.feature, "model": e.model,
        "status": e.status, "attempt": e.attempt, "cancelled": e.cancelled, "input_tokens": e.input_tokens,
        "cached_input_tokens": e.cached_input_tokens, "output_tokens": e.output_tokens,
        "cost_usd": round(e.cost_usd or 0.0, 6), "source_ip": e.source_ip, "user_agent": e.user_agent,
        "prompt_shape": e.prompt_shape, "resource_tenant_id": e.resource_tenant_id,
    }


def collect_events(alert: Alert, samples: set[str], rules: RuleSet, inputs: Sequence[str], before_s: float,
                   after_s: float, lateness_s: float, progress: Progress | None = None,
                   last_seen: float | None = None) -> dict[str, Any]:
    """Second pass: the sample events by id, and the entity's events in [detected - before, detected + after].

    Stops reading once event time is past the window and ``last_seen`` (the last version's detection:
    no sample event comes after it).
    """
    detected = parse_time(alert.detected_at)
    lo, hi = detected - before_s, detected + after_s
    stop_at = max(hi, last_seen or hi) + lateness_s
    past = [False]
    mine = entity_matcher(alert, rules)
    sample_rows: dict[str, dict[str, Any]] = {}
    around: list[dict[str, Any]] = []
    totals = {"events": 0, "cost_usd": 0.0, "events_before": 0, "cost_usd_before": 0.0}

    def sink(e: UsageEvent) -> None:
        if e.event_id in samples and e.event_id not in sample_rows:
            sample_rows[e.event_id] = event_row(e)
        t: float = e.ts  # type: ignore[assignment]
        if t > stop_at:
            past[0] = True
        if lo <= t <= hi and mine(e):
            totals["events"] += 1
            totals["cost_usd"] += e.cost_usd or 0.0
            if t <= detected:
                totals["events_before"] += 1
                totals["cost_usd_before"] += e.cost_usd or 0.0
            around.append(event_row(e))

    ctx = rules.context()
    pipeline = Pipeline(rules, PipelineOptions(lateness_s=lateness_s), detectors=[_EventTap(ctx, sink)])
    for batch in batches(list(inputs)):
        pipeline.feed(batch.lines, batch.source, batch.positions)
        if progress is not None:
            progress.update(len(batch.lines))
        if past[0]:
            break
    else:
        pipeline.drain()
    return {"samples": [sample_rows[i] for i in sorted(sample_rows, key=lambda i: sample_rows[i]["ts"])],
            "missing_samples": sorted(samples - set(sample_rows)), "around": around,
            "window": {"from": rfc3339(lo), "to": rfc3339(hi)}, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                                    for k, v in totals.items()}}


# -- printing -------------------------------------------------------------------------------------


def _bar(x: float, width: int = 20) -> str:
    n = max(0, min(width, round(x * width)))
    return "#" * n + "." * (width - n)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


_EVENT_COLS = ("ts", "event_id", "api_key_id", "session_id", "feature", "model", "status", "input_tokens",
               "cached_input_tokens", "output_tokens", "cost_usd", "source_ip")


def _events_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    cols = [c for c in _EVENT_COLS if any(r.get(c) is not None for r in rows)]
    cells = [[_fmt(r.get(c)) if r.get(c) is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    out += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return out


def render(versions: Sequence[Alert], events: dict[str, Any], limit: int) -> str:
    first, last = versions[0], versions[-1]
    a = last
    w: list[str] = []
    w.append(f"alert {a.alert_id}  ({a.detector} / rule {a.rule})")
    w.append(f"  {a.title}")
    if a.summary:
        w.append(f"  {a.summary}")
    w.append(f"  entity      {a.entity.type} {a.entity.id}   tenant {a.tenant_id}"
             + (f"   api key {a.api_key_id}" if a.api_key_id else "")
             + (f"   session {a.session_id}" if a.session_id else ""))
    w.append(f"  first seen  {first.first_seen or '-'}   detected {first.detected_at}")
    w.append(f"  now         {a.status}, severity {a.severity}, score {a.score:.2f}, "
             f"risk ${a.risk_usd_per_hour:,.2f}/h, actions {', '.join(a.actions) or '-'}")
    if a.attack:
        w.append(f"  ATT&CK/ATLAS {a.attack.get('id', '')} {a.attack.get('name', '')}")
    w.append("")
    w.append(f"versions ({len(versions)})")
    for v in versions:
        w.append(f"  v{v.version:<3} {v.detected_at}  {v.status:<8} {v.severity:<8} score {v.score:.2f}")
    w.append("")
    w.append("signal contributions (share of the score)")
    if a.signals:
        for name, x in sorted(a.signals.items(), key=lambda kv: (-kv[1], kv[0])):
            w.append(f"  {name:<24} {x:6.3f}  {_bar(x)}")
    else:
        w.append("  (the detector reported no per-signal breakdown)")
    w.append("")
    w.append("evidence")
    for k in sorted(a.evidence):
        w.append(f"  {k:<28} {_fmt(a.evidence[k])}")
    w.append("")
    samples = events["samples"]
    w.append(f"sample events ({len(samples)} of {len(samples) + len(events['missing_samples'])} found in the input)")
    w.extend(_events_table(samples))
    w.append("")
    around = events["around"]
    before = [r for r in around if r["ts"] <= first.detected_at]
    after = [r for r in around if r["ts"] > first.detected_at]
    w.append(f"entity events {events['window']['from']} .. {events['window']['to']}: {events['events']} events, "
             f"${events['cost_usd']:.4f} ({events['events_before']} events, ${events['cost_usd_before']:.4f} "
             f"up to detection)")
    shown_before = before[-limit:]
    shown_after = after[: max(3, limit // 5)]
    if len(before) > len(shown_before):
        w.append(f"  ... {len(before) - len(shown_before)} earlier event(s) not shown")
    w.extend(_events_table(shown_before))
    w.append(f"  ---- detected {first.detected_at} ----")
    if shown_after:
        w.extend(_events_table(shown_after)[1:])
    if len(after) > len(shown_after):
        w.append(f"  ... {len(after) - len(shown_after)} later event(s) not shown")
    return "\n".join(w) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        rules = resolve_rules(args.rules)
        if args.tenants:
            rules = apply_tenants(rules, load_tenants_table(args.tenants))
    except RulesFileError as err:
        print(f"sentinel explain: cannot load rules:\n{err}", file=sys.stderr)
        return 2
    except LabelError as err:
        print(f"sentinel explain: {err}", file=sys.stderr)
        return 2
    for path in args.inputs:
        if not Path(path).is_file():
            print(f"sentinel explain: {path}: no such file", file=sys.stderr)
            return 2
    try:
        if args.alerts:
            versions = alerts_from_file(args.alert_id, args.alerts)
        else:
            progress = Progress("replay", enabled=not args.no_progress)
            try:
                # The id (a hash) does not say which detector made the alert: replay them all.
                versions = find_alert(args.alert_id, rules, args.inputs, args.lateness, progress)
            finally:
                progress.close()
        if not versions:
            print(f"sentinel explain: alert {args.alert_id} is not raised by a replay of "
                  f"{', '.join(args.inputs)} with rules {rules.source}", file=sys.stderr)
            return 1
        samples = {i for v in versions for i in v.sample_event_ids}
        progress = Progress("events", enabled=not args.no_progress)
        try:
            events = collect_events(versions[0], samples, rules, args.inputs, args.before, args.after,
                                    args.lateness, progress, parse_time(versions[-1].detected_at))
        finally:
            progress.close()
    except InputError as err:
        print(f"sentinel explain: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"sentinel explain: {err}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"alert": msgspec.to_builtins(versions[-1]), "versions": [msgspec.to_builtins(v) for v in versions],
               "signals": dict(sorted(versions[-1].signals.items(), key=lambda kv: -kv[1])), "events": events}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render(versions, events, args.limit))
    return 0
